"""Class imbalance: induce it on purpose, summarise it, and the prior arithmetic of logit adjustment.

*Induce* (the labels stage, on the training split): :func:`induce_imbalance` keeps a seeded subset of the
rows so that the largest class has ``ratio`` times as many samples as the smallest (rho = n_max / n_min).

*Handle* inside the fit of one fold -- class weights, resampling, the training loss -- is
``dlrig.train.infold``: what is learned from a fold's labels is learned by the fit that uses it.

- :func:`logit_adjustment`: ``tau * log(prior)`` (Menon et al. 2021). *Added* to the logits inside the
  training loss (the logit-adjusted loss, see ``dlrig.train.losses``) or *subtracted* from a plain model's
  logits at prediction (post-hoc adjustment). :func:`threshold_moving` is the post-hoc form on
  probabilities (tau = 1): ``p_k / prior_k``, renormalised. :func:`class_prior` estimates the prior from
  the training labels of a fold (``y_train``), never from validation or test rows.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from dlrig.errors import UserError
from dlrig.labels.noise import check_labels

ImbalanceProfile = Literal["step", "linear", "exponential"]


def _round_half_up(x: np.ndarray) -> np.ndarray:
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5).astype(np.int64)


def class_counts(y: np.ndarray, n_classes: int) -> np.ndarray:
    """Samples per class, length ``n_classes`` (absent classes count 0)."""
    return np.bincount(check_labels(y, n_classes), minlength=n_classes)


def class_prior(y_train: np.ndarray, n_classes: int) -> np.ndarray:
    """Empirical class frequencies of the training labels (sum 1; 0 for a class with no sample)."""
    counts = class_counts(y_train, n_classes)
    if counts.sum() == 0:
        raise ValueError("y_train is empty: no class prior to estimate")
    return counts / counts.sum()


# ------------------------------------------------------------------------------------------- induce
def target_counts(
    counts: np.ndarray, profile: ImbalanceProfile, ratio: float, minority: list[int] | None = None
) -> np.ndarray:
    """Samples to keep per class from the available ``counts`` (never more than available, at least 1).

    n_max is the largest available count. ``step``: the minority classes keep n_max / ratio, the others
    keep all they have; the default minority is the second half of the classes in index order (classes
    K//2 .. K-1, as in Cao et al. 2019). ``linear``: class k keeps n_max - (n_max - n_max/ratio) * k/(K-1).
    ``exponential``: class k keeps n_max * ratio^(-k/(K-1)) (the long-tailed CIFAR profile of Cui et al.
    2019). Classes that had no sample keep none.
    """
    counts = np.asarray(counts, dtype=np.int64)
    k = len(counts)
    if ratio < 1:
        raise ValueError(f"ratio (n_max / n_min) must be >= 1 (got {ratio})")
    if minority is not None and profile != "step":
        raise UserError(f"labels.imbalance.minority is only used with profile step (got profile {profile!r})")
    n_max = float(counts.max())
    position = np.arange(k) / max(k - 1, 1)
    if profile == "step":
        if minority is None:
            minority = list(range(k // 2, k))
        bad = [c for c in minority if not 0 <= int(c) < k]
        if bad:
            raise UserError(f"labels.imbalance.minority: classes {bad} are outside 0..{k - 1}")
        wanted = np.full(k, n_max)
        wanted[np.asarray(minority, dtype=np.int64)] = n_max / ratio
    elif profile == "linear":
        wanted = n_max - (n_max - n_max / ratio) * position
    elif profile == "exponential":
        wanted = n_max * ratio ** (-position)
    else:
        raise ValueError(f"profile must be one of ['step', 'linear', 'exponential'] (got {profile!r})")
    keep = np.minimum(np.maximum(_round_half_up(wanted), 1), counts)
    return keep


def induce_imbalance(
    y: np.ndarray,
    n_classes: int,
    profile: ImbalanceProfile,
    ratio: float,
    seed: int,
    minority: list[int] | None = None,
) -> np.ndarray:
    """Sorted indices of the rows to keep so that the class counts follow ``profile`` (see
    :func:`target_counts`). Report the realised counts with :func:`imbalance_summary` on ``y[kept]``.

    Seeded: one permutation of all rows, and each class keeps its first rows in that order -- so the same
    seed with a larger ratio keeps a subset of the rows kept with a smaller one.
    """
    y = check_labels(y, n_classes)
    keep = target_counts(class_counts(y, n_classes), profile, ratio, minority)
    order = np.random.default_rng(seed).permutation(len(y))
    kept = [order[y[order] == c][: keep[c]] for c in range(n_classes)]
    return np.sort(np.concatenate(kept)).astype(np.int64)


def imbalance_summary(y: np.ndarray, n_classes: int) -> dict[str, Any]:
    """JSON-ready class counts and the realised ratio n_max / n_min (over the classes present)."""
    counts = class_counts(y, n_classes)
    present = counts[counts > 0]
    return {
        "n": int(counts.sum()),
        "counts": counts.tolist(),
        "ratio": round(float(present.max() / present.min()), 6) if len(present) else None,
        "n_classes_present": int(len(present)),
    }


# --------------------------------------------------------------------------------- logit adjustment
def _check_prior(class_prior: np.ndarray) -> np.ndarray:
    prior = np.asarray(class_prior, dtype=np.float64)
    if prior.ndim != 1 or len(prior) < 2:
        raise ValueError(f"class_prior must be 1-d with one entry per class (got shape {list(prior.shape)})")
    if not np.isfinite(prior).all() or (prior <= 0).any():
        raise UserError(
            "logit adjustment needs a positive prior for every class (a class without a training sample "
            "would get log 0 = -inf); drop the class or make sure each training fold contains it"
        )
    return prior / prior.sum()


def logit_adjustment(class_prior: np.ndarray, tau: float = 1.0) -> np.ndarray:
    """``tau * log(prior)`` per class (Menon et al. 2021), from a prior or class counts (normalised here).

    Logit-adjusted loss: train on ``logits + adjustment`` and predict with the raw logits.
    Post-hoc adjustment: train plainly and predict ``argmax(logits - adjustment)``. With tau = 1 both
    target the balanced error (the mean of the per-class errors).
    """
    if tau < 0:
        raise ValueError(f"tau must be >= 0 (got {tau})")
    return tau * np.log(_check_prior(class_prior))


def threshold_moving(proba: np.ndarray, class_prior: np.ndarray) -> np.ndarray:
    """Post-hoc rebalanced probabilities ``p_k / prior_k``, renormalised per row (same shape as proba).

    Equal to ``softmax(logits - log prior)`` -- post-hoc logit adjustment with tau = 1 -- and the
    argmax is the Bayes decision for the balanced error.
    """
    proba = np.asarray(proba, dtype=np.float64)
    prior = _check_prior(class_prior)
    if proba.ndim != 2 or proba.shape[1] != len(prior):
        raise ValueError(f"proba must have shape [n, {len(prior)}] (got {list(proba.shape)})")
    scaled = proba / prior
    return scaled / scaled.sum(axis=1, keepdims=True)


__all__ = [
    "class_counts",
    "class_prior",
    "imbalance_summary",
    "induce_imbalance",
    "logit_adjustment",
    "target_counts",
    "threshold_moving",
]
