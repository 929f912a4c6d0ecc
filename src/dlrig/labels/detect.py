"""Find mislabelled training rows with confident learning (Northcutt, Jiang & Chuang 2021, JAIR).

Input: the given (possibly noisy) labels and *out-of-fold* predicted probabilities -- each row predicted by
a model that did not train on it. :func:`out_of_fold_proba` computes them by cross-validation, and the
caller runs it on the training rows of the fold being cleaned only: a noise filter is fitted on data, so
it lives inside the fold like any other fitted step.

The method, per class j with given label count n_j:

1. threshold ``t_j`` = mean of ``p_j`` over the rows labelled j (the model's self-confidence in j);
2. confident joint ``C[i, j]``: rows labelled i whose most probable class *among those at or above their
   threshold* is j (rows with no class above threshold are not counted);
3. calibrated joint ``Q``: each row of C rescaled to sum to n_i, then the whole matrix to sum to 1 -- an
   estimate of P(given = i, true = j); the estimated noise rate is ``1 - trace(Q)``;
4. the issue mask (``filter_by``):
   - ``"prune_by_noise_rate"`` (default, cleanlab's default): for each off-diagonal cell, flag the
     ``round(n * Q[i, j])`` rows labelled i with the largest margin ``p_j - p_i``; a row whose given label
     is its argmax prediction is never flagged. The number flagged follows the estimated noise, and the
     margin ranks rows by how strongly they are contradicted.
   - ``"confident_joint"``: flag exactly the rows counted off the diagonal of C -- the simplest rule.

Noise or stochasticity? A row is **confidently contradicted** when another class reaches its threshold
while the given label's probability is below its own: evidence of a wrong label. A row is **ambiguous**
when its predicted distribution is spread out -- normalised entropy ``H(p) / log K`` at or above
``ambiguity_threshold``: the input itself is uncertain (class overlap), and flagging it says more about
the data than about the label. The summary counts both, and how they overlap with the issue mask:
``n_issues_likely_noise`` (flagged, contradicted, not ambiguous) and ``n_issues_ambiguous`` (flagged and
ambiguous). Entropy cannot tell the two apart perfectly: a model trained on noisy labels spreads its
predictions too (with 20% symmetric noise it predicts ~0.8 for the true class -- normalised entropy ~0.5
for 4 classes, ~0.4 for 10), and a two-way tie has normalised entropy log 2 / log K (0.63 for 3 classes,
0.30 for 10). Read the counts as evidence, and set the threshold with K in mind.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from sklearn.model_selection import StratifiedKFold

from dlrig.errors import UserError
from dlrig.labels.noise import check_labels

FilterBy = Literal["prune_by_noise_rate", "confident_joint"]
# Slack on "p >= t_j": a class whose rows all have the same p_j has t_j equal to it, up to rounding.
THRESHOLD_SLACK = 1e-6


def _check_proba(proba: np.ndarray, n: int, n_classes: int, name: str = "oof_proba") -> np.ndarray:
    proba = np.asarray(proba, dtype=np.float64)
    if proba.shape != (n, n_classes):
        raise ValueError(f"{name} must have shape [{n}, {n_classes}] (got {list(proba.shape)})")
    if not np.isfinite(proba).all() or (proba < 0).any():
        raise ValueError(f"{name} must hold finite, non-negative probabilities")
    return proba


def per_class_thresholds(y_given: np.ndarray, proba: np.ndarray, n_classes: int) -> np.ndarray:
    """``t_j`` = mean predicted p_j over rows labelled j; NaN for a class with no row (never confident)."""
    t = np.full(n_classes, np.nan)
    for j in range(n_classes):
        rows = y_given == j
        if rows.any():
            t[j] = proba[rows, j].mean()
    return t


def normalized_entropy(proba: np.ndarray) -> np.ndarray:
    """``H(p) / log K`` per row, in [0, 1]: 0 for a one-hot prediction, 1 for the uniform one."""
    p = np.asarray(proba, dtype=np.float64)
    p = p / p.sum(axis=1, keepdims=True)
    plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return -plogp.sum(axis=1) / np.log(p.shape[1])


def _prune_by_noise_rate(y: np.ndarray, proba: np.ndarray, joint: np.ndarray, n_classes: int) -> np.ndarray:
    n = len(y)
    mask = np.zeros(n, bool)
    for i in range(n_classes):
        rows = np.flatnonzero(y == i)
        for j in range(n_classes):
            n_flag = int(np.floor(n * joint[i, j] + 0.5)) if i != j else 0
            if n_flag == 0 or len(rows) == 0:
                continue
            margin = proba[rows, j] - proba[rows, i]
            # Stable sort on the negated margin: ties keep row order, so the result is deterministic.
            mask[rows[np.argsort(-margin, kind="stable")[:n_flag]]] = True
    mask &= proba.argmax(axis=1) != y
    return mask


def find_label_issues(
    y_given: np.ndarray,
    oof_proba: np.ndarray,
    n_classes: int,
    *,
    filter_by: FilterBy = "prune_by_noise_rate",
    ambiguity_threshold: float = 0.5,
) -> dict[str, Any]:
    """Confident-learning report for the given labels (see the module doc).

    Returns a dict with numpy arrays -- ``thresholds`` [K], ``confident_joint`` [K, K] (int),
    ``calibrated_joint`` [K, K] (sums to 1), ``true_label_guess`` [n] (-1 where no class is confident),
    ``issue_mask``, ``contradicted_mask``, ``ambiguous_mask``, ``normalized_entropy`` [n] -- plus
    ``noise_rate`` (float) and ``summary``, a JSON-ready dict of the counts and matrices.
    """
    y = check_labels(y_given, n_classes, "y_given")
    proba = _check_proba(oof_proba, len(y), n_classes)
    if filter_by not in ("prune_by_noise_rate", "confident_joint"):
        raise ValueError(
            f"filter_by must be one of ['prune_by_noise_rate', 'confident_joint'] (got {filter_by!r})"
        )
    if not 0.0 <= ambiguity_threshold <= 1.0:
        raise ValueError(f"ambiguity_threshold must be in [0, 1] (got {ambiguity_threshold})")
    n = len(y)
    rows = np.arange(n)

    thresholds = per_class_thresholds(y, proba, n_classes)
    confident = proba >= thresholds - THRESHOLD_SLACK  # NaN thresholds compare False
    has_confident = confident.any(axis=1)
    guess = np.where(has_confident, np.where(confident, proba, -np.inf).argmax(axis=1), -1)

    joint_counts = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(joint_counts, (y[has_confident], guess[has_confident]), 1)
    given_counts = np.bincount(y, minlength=n_classes)
    row_sums = joint_counts.sum(axis=1, keepdims=True)
    calibrated = np.divide(
        joint_counts * given_counts[:, None], row_sums, out=np.zeros(joint_counts.shape), where=row_sums > 0
    )
    total = calibrated.sum()
    joint = calibrated / total if total > 0 else calibrated
    noise_rate = float(1.0 - np.trace(joint)) if total > 0 else 0.0

    if filter_by == "confident_joint":
        issue = has_confident & (guess != y)
    else:
        issue = _prune_by_noise_rate(y, proba, joint, n_classes)

    other_confident = confident.copy()
    other_confident[rows, y] = False
    contradicted = other_confident.any(axis=1) & ~confident[rows, y]
    entropy = normalized_entropy(proba)
    ambiguous = entropy >= ambiguity_threshold

    summary = {
        "n": n,
        "filter_by": filter_by,
        "ambiguity_threshold": ambiguity_threshold,
        "noise_rate": round(noise_rate, 6),
        "n_issues": int(issue.sum()),
        "n_contradicted": int(contradicted.sum()),
        "n_ambiguous": int(ambiguous.sum()),
        # Flagged and contradicted but not ambiguous: most likely a wrong label.
        "n_issues_likely_noise": int((issue & contradicted & ~ambiguous).sum()),
        # Flagged but the model is unsure of the input itself: likely class overlap, not a wrong label.
        "n_issues_ambiguous": int((issue & ambiguous).sum()),
        "n_without_confident_class": int((~has_confident).sum()),
        "thresholds": [None if np.isnan(t) else round(float(t), 6) for t in thresholds],
        "confident_joint": joint_counts.tolist(),
        "calibrated_joint": np.round(joint, 6).tolist(),
    }
    return {
        "thresholds": thresholds,
        "confident_joint": joint_counts,
        "calibrated_joint": joint,
        "noise_rate": noise_rate,
        "true_label_guess": guess,
        "issue_mask": issue,
        "contradicted_mask": contradicted,
        "ambiguous_mask": ambiguous,
        "normalized_entropy": entropy,
        "summary": summary,
    }


def detection_scores(issue_mask: np.ndarray, true_flip_mask: np.ndarray) -> dict[str, float | int]:
    """Precision, recall and F1 of the flagged rows against the truly flipped ones.

    With nothing flagged (or nothing flipped) the undefined ratio is 0, as sklearn's ``zero_division=0``.
    """
    flagged = np.asarray(issue_mask, dtype=bool)
    truth = np.asarray(true_flip_mask, dtype=bool)
    if flagged.shape != truth.shape or flagged.ndim != 1:
        raise ValueError(f"masks must be 1-d of equal length (got {flagged.shape} and {truth.shape})")
    tp = int((flagged & truth).sum())
    n_flagged, n_true = int(flagged.sum()), int(truth.sum())
    precision = tp / n_flagged if n_flagged else 0.0
    recall = tp / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": round(precision, 6),
        "recall": round(recall, 6),
        "f1": round(f1, 6),
        "n_flagged": n_flagged,
        "n_true": n_true,
    }


FitPredict = Callable[[np.ndarray, np.ndarray], np.ndarray]


def out_of_fold_proba(fit_predict: FitPredict, y: np.ndarray, n_splits: int = 5, seed: int = 0) -> np.ndarray:
    """``[n, K]`` out-of-fold probabilities: each row predicted by a model that never trained on it.

    ``fit_predict(train_idx, pred_idx)`` fits on the rows ``train_idx`` (positions into ``y``, whose
    labels it may use) and returns probabilities ``[len(pred_idx), K]`` for the rows ``pred_idx``, whose
    labels it must not use -- one column per class 0..K-1, also for a class absent from ``train_idx``
    (sklearn's ``predict_proba`` then has fewer columns: place them by ``classes_``). Folds are
    ``StratifiedKFold(n_splits, shuffle=True, random_state=seed)``.
    Pass only the training rows of the fold being cleaned: ``y`` here is ``y_train``, never test labels.
    """
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"y must be 1-d (got shape {list(y.shape)})")
    if n_splits < 2:
        raise ValueError(f"n_splits must be >= 2 (got {n_splits})")
    counts = np.unique(y, return_counts=True)[1]
    if len(y) < n_splits or counts.max() < n_splits:
        raise UserError(
            f"out-of-fold probabilities with {n_splits} folds need a class with at least {n_splits} "
            f"samples (largest class has {counts.max() if len(counts) else 0}); use fewer folds"
        )
    oof: np.ndarray | None = None
    folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    for train_idx, pred_idx in folds.split(np.zeros((len(y), 1)), y):
        proba = np.asarray(fit_predict(train_idx, pred_idx), dtype=np.float64)
        if proba.ndim != 2 or len(proba) != len(pred_idx):
            raise ValueError(
                f"fit_predict must return [{len(pred_idx)}, K] probabilities (got {list(proba.shape)})"
            )
        if oof is None:
            oof = np.full((len(y), proba.shape[1]), np.nan)
        elif proba.shape[1] != oof.shape[1]:
            raise ValueError(f"fit_predict returned {proba.shape[1]} classes, earlier folds {oof.shape[1]}")
        oof[pred_idx] = proba
    assert oof is not None and not np.isnan(oof).any()  # StratifiedKFold predicts every row once
    return oof


__all__ = [
    "detection_scores",
    "find_label_issues",
    "normalized_entropy",
    "out_of_fold_proba",
    "per_class_thresholds",
]
