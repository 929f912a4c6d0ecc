"""In-fold handling: what the fit loop learns from a fold's gradient rows before it takes a step.

Every function here that learns from labels takes the **gradient rows of one fold only** -- ``y_train``,
``y_fit`` -- and returns weights, a loss, or row positions *into those rows*. Early-stopping, validation and
test rows are never passed in, so they cannot leak into a weight, a prior or a filter, nor be duplicated by
oversampling (the imbalanced-learn rule that samplers run only during ``fit``).

- :func:`class_weights`: per-class loss weights ("balanced", "inverse_sqrt", "effective_number").
- :func:`resample_indices`: random over- or undersampling of the training rows to equal class counts.
- :func:`training_loss`: the loss params choose, with its class weights and (for the logit-adjusted loss)
  its class prior taken from the gradient rows.
- :func:`drop_label_issues`: the noise filter -- confident learning on out-of-fold sub-fits of the gradient
  rows, dropping the rows whose label is confidently contradicted.

``dlrig.labels`` injects noise and imbalance and detects label issues; applying any of it inside a fold
happens here.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from torch import nn

from dlrig.labels.detect import find_label_issues, out_of_fold_proba
from dlrig.labels.imbalance import class_counts
from dlrig.labels.noise import check_labels
from dlrig.params import FitConfig, TrainParams
from dlrig.train.losses import build_loss
from dlrig.train.predict import predict_proba

WeightScheme = Literal["balanced", "inverse_sqrt", "effective_number"]
ResampleMethod = Literal["oversample", "undersample"]


def class_weights(
    y_train: np.ndarray, n_classes: int, scheme: WeightScheme = "balanced", beta: float = 0.999
) -> np.ndarray:
    """Per-class loss weights from the training labels of one fold, float64 of length ``n_classes``.

    - ``balanced``: n / (K * n_k) -- sklearn's ``compute_class_weight("balanced")``;
    - ``inverse_sqrt``: proportional to 1 / sqrt(n_k);
    - ``effective_number``: proportional to (1 - beta) / (1 - beta^n_k) (Cui et al. 2019); beta = 0 is no
      reweighting, beta -> 1 approaches ``balanced``.

    All are scaled so that sum_k n_k w_k = n: the average training sample keeps weight 1, so the loss
    scale (and the learning rate that suits it) does not change. K counts the classes present; a class
    with no training sample gets weight 0 -- it is never a target, so its weight is never used.
    """
    counts = class_counts(y_train, n_classes).astype(np.float64)
    present = counts > 0
    if not present.any():
        raise ValueError("y_train is empty: no class weights to estimate")
    raw = np.zeros(n_classes)
    if scheme == "balanced":
        raw[present] = 1.0 / counts[present]
    elif scheme == "inverse_sqrt":
        raw[present] = 1.0 / np.sqrt(counts[present])
    elif scheme == "effective_number":
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must be in [0, 1) for effective_number weights (got {beta})")
        raw[present] = (1.0 - beta) / (1.0 - beta ** counts[present])
    else:
        raise ValueError(
            f"scheme must be one of ['balanced', 'inverse_sqrt', 'effective_number'] (got {scheme!r})"
        )
    return raw * counts.sum() / (raw * counts).sum()


def resample_indices(y_train: np.ndarray, n_classes: int, method: ResampleMethod, seed: int) -> np.ndarray:
    """Sorted positions *into y_train* that balance the classes of one training fold.

    ``oversample``: every present class is brought up to the largest count -- all its rows once, plus
    rows drawn with replacement. ``undersample``: every present class keeps the smallest count, drawn
    without replacement. Use as ``X_fit, y_fit = X_train[pos], y_train[pos]`` inside the fold: the
    early-stopping and test rows are never resampled (a duplicated row on both sides would leak).
    """
    y_train = check_labels(y_train, n_classes, "y_train")
    counts = class_counts(y_train, n_classes)
    if counts.sum() == 0:
        raise ValueError("y_train is empty: nothing to resample")
    if method not in ("oversample", "undersample"):
        raise ValueError(f"method must be one of ['oversample', 'undersample'] (got {method!r})")
    rng = np.random.default_rng(seed)
    present = np.flatnonzero(counts)
    goal = counts[present].max() if method == "oversample" else counts[present].min()
    parts = []
    for c in present:
        rows = np.flatnonzero(y_train == c)
        if method == "oversample":
            parts += [rows, rng.choice(rows, size=goal - len(rows), replace=True)]
        else:
            parts.append(rng.choice(rows, size=goal, replace=False))
    return np.sort(np.concatenate(parts)).astype(np.int64)


def training_loss(y_fit: np.ndarray, n_classes: int, tcfg: TrainParams) -> nn.Module:
    """Plain (smoothed) cross-entropy, or the robust / imbalance-aware loss params choose; class weights
    and the class prior come from the gradient rows' labels only."""
    if tcfg.loss.name == "ce" and tcfg.class_weight == "none":
        return nn.CrossEntropyLoss(label_smoothing=tcfg.label_smoothing)
    weight = None if tcfg.class_weight == "none" else class_weights(y_fit, n_classes, tcfg.class_weight)
    lcfg = tcfg.loss
    prior = None
    if lcfg.name == "logit_adjusted":
        # Laplace-smoothed: a class absent from the gradient rows (possible at extreme imbalance) keeps a
        # finite log-prior instead of -inf.
        prior = (np.bincount(y_fit, minlength=n_classes) + 1.0) / (len(y_fit) + n_classes)
    return build_loss(lcfg.name, n_classes=n_classes, label_smoothing=tcfg.label_smoothing,
                      class_weight=weight, gce_q=lcfg.gce_q, sce_alpha=lcfg.sce_alpha, sce_beta=lcfg.sce_beta,
                      focal_gamma=lcfg.focal_gamma, class_prior=prior, tau=lcfg.tau)


def drop_label_issues(X: np.ndarray, y: np.ndarray, fit_idx: np.ndarray, n_classes: int, config: FitConfig,
                      seed: int, device: str) -> tuple[np.ndarray, dict[str, Any]]:
    """Confident learning inside the gradient rows: out-of-fold probabilities from sub-fits on those rows
    only, then drop the rows whose label is confidently contradicted."""
    from dlrig.train.fit import fit  # the sub-fits are fits (with the filter off); fit imports this module

    inner = config.with_overrides({"train.noise_filter": "none"})

    def fit_predict(tr: np.ndarray, pr: np.ndarray) -> np.ndarray:
        rows = fit_idx[tr]
        model = fit(X[rows], y[rows], n_classes, inner, seed, device=device).model
        return predict_proba(model, X[fit_idx[pr]])

    proba = out_of_fold_proba(fit_predict, y[fit_idx], config.train.noise_filter_folds, seed)
    issues = find_label_issues(y[fit_idx], proba, n_classes)
    keep = ~issues["issue_mask"]
    summary = {"dropped": int((~keep).sum()), "estimated_noise_rate": issues["summary"]["noise_rate"]}
    return fit_idx[keep], summary


__all__ = ["class_weights", "drop_label_issues", "resample_indices", "training_loss"]
