"""The held-out evaluation: test metrics with bootstrap intervals, and calibration before/after
temperature scaling (the temperature fitted on training rows only -- the final fit's early-stopping rows).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dlrig.evaluate.calibration import (
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    reliability_curve,
)
from dlrig.evaluate.metrics import classification_metrics
from dlrig.evaluate.stats import bootstrap_ci

CI_METRICS = ("accuracy", "balanced_accuracy", "macro_f1")


def _macro_f1(y: np.ndarray, pred: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(y, pred, average="macro", zero_division=0))


def holdout_metrics(y: np.ndarray, proba: np.ndarray, classes: list[str], *, seed: int,
                 n_boot: int = 1000) -> dict[str, Any]:
    """classification_metrics plus a 95% percentile-bootstrap interval on each headline metric."""
    metrics = classification_metrics(y, proba, classes)
    pred = proba.argmax(1)
    ci = {}
    for name in CI_METRICS:
        fn = _macro_f1 if name == "macro_f1" else name
        result = bootstrap_ci(y, pred, fn, n_boot=n_boot, seed=seed)
        ci[name] = {"low": round(result.low, 6), "high": round(result.high, 6)}
    metrics["ci95"] = ci
    return metrics


def precision_recall(y: np.ndarray, proba: np.ndarray, classes: list[str],
                     n_points: int = 101) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """Average precision per class (one-vs-rest) and its macro mean; the micro-averaged PR curve
    (every sample x class pair), resampled at ``n_points`` recall levels for ``dvc plots``."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    onehot = np.eye(len(classes))[y]
    per_class = {name: round(float(average_precision_score(onehot[:, k], proba[:, k])), 6)
                 for k, name in enumerate(classes) if onehot[:, k].any()}
    precision, recall, _ = precision_recall_curve(onehot.ravel(), proba.ravel())
    levels = np.linspace(0, 1, n_points)
    # Interpolated precision: the best precision at any recall >= the level (the usual PR envelope).
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    curve = [{"recall": round(float(r), 4),
              "precision": round(float(envelope[recall >= r].max()) if (recall >= r).any() else 0.0, 6)}
             for r in levels]
    metrics = {"macro_average_precision": round(float(np.mean(list(per_class.values()))), 6),
               "average_precision": per_class}
    return metrics, curve


def calibration(y_test: np.ndarray, proba_test: np.ndarray, y_fit: np.ndarray | None,
                proba_fit: np.ndarray | None, n_bins: int = 15) -> tuple[dict[str, Any], dict[str, Any]]:
    """ECE on the test split before and after temperature scaling; (metrics, reliability plot data).

    ``proba_fit``/``y_fit`` are predictions on training rows the network did not take gradient steps on
    (the early-stopping split); without them no temperature is fitted.
    """
    logits_test = np.log(np.clip(proba_test, 1e-12, 1))  # log-probabilities are logits up to a shift
    ece = expected_calibration_error(proba_test, y_test, n_bins)
    out: dict[str, Any] = {"n_bins": n_bins, "ece": round(ece, 6)}
    curves = {"before": reliability_curve(proba_test, y_test, n_bins)}
    if proba_fit is not None and y_fit is not None and len(y_fit):
        t = fit_temperature(np.log(np.clip(proba_fit, 1e-12, 1)), y_fit)
        scaled = apply_temperature(logits_test, t)
        out.update(temperature=round(t, 6), fitted_on=int(len(y_fit)),
                   ece_scaled=round(expected_calibration_error(scaled, y_test, n_bins), 6))
        curves["after"] = reliability_curve(scaled, y_test, n_bins)
    return out, curves
