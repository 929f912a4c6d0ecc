"""The held-out evaluation: test metrics with bootstrap intervals, and calibration before/after
temperature scaling (the temperature fitted on training rows only -- the final fit's early-stopping rows --
with guard rails: a minimum number of rows, a bounded T, a warning when those rows' labels were flipped).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dlrig.evaluate.calibration import (
    T_BOUNDS,
    apply_temperature,
    at_bound,
    expected_calibration_error,
    fit_temperature,
    reliability_curve,
)
from dlrig.evaluate.metrics import classification_metrics
from dlrig.evaluate.stats import bootstrap_ci

CI_METRICS = ("accuracy", "balanced_accuracy", "macro_f1")
# Fewer fitting rows than this and no temperature is fitted (T = 1): one scalar fitted by log loss on a few
# dozen rows follows their noise (21 rows of a 178-row CSV gave T = 0.02, which sharpened every test
# probability to near one-hot), and a T that makes the test ECE worse is worse than none.
MIN_FIT_ROWS = 50


def holdout_metrics(y: np.ndarray, proba: np.ndarray, classes: list[str], *, seed: int,
                 n_boot: int = 1000) -> dict[str, Any]:
    """classification_metrics plus a 95% BCa bootstrap interval on each headline metric."""
    metrics = classification_metrics(y, proba, classes)
    pred = proba.argmax(1)
    ci = {}
    for name in CI_METRICS:  # bootstrap_ci's vectorised statistics (held to sklearn's by test_stats.py)
        result = bootstrap_ci(y, pred, name, n_boot=n_boot, seed=seed)
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
    # Interpolated precision: the best precision at any recall >= the level (the usual PR envelope). sklearn's
    # last point (recall 0, precision 1) has no threshold behind it, so it only counts at level 0.
    curve = [{"recall": round(float(r), 4),
              "precision": round(float(precision[recall >= r].max()) if (recall >= r).any() else 0.0, 6)}
             for r in levels]
    metrics = {"macro_average_precision": round(float(np.mean(list(per_class.values()))), 6),
               "average_precision": per_class}
    return metrics, curve


def _fit_warnings(t: float, n_flipped: int | None, n_rows: int) -> list[str]:
    """What a reader of T must know about its fitting rows: flipped labels, a T held at a bound."""
    warnings = []
    if n_flipped:
        warnings.append(
            f"{n_flipped} of {n_rows} fitting labels ({n_flipped / n_rows:.1%}) were flipped by the labels "
            "stage: T was fitted to match noisy labels, so it calibrates the model to that noise rather "
            "than to the true labels the test split holds, and can make the test ECE worse"
        )
    if at_bound(t):
        low, high = T_BOUNDS
        warnings.append(
            f"T = {t:.3g} sits on a bound of its range [{low:g}, {high:g}]: the fitting rows asked for more "
            "than a temperature should change (noisy labels or too few rows), so T was held at the bound"
        )
    return warnings


def calibration(y_test: np.ndarray, proba_test: np.ndarray, y_fit: np.ndarray | None,
                proba_fit: np.ndarray | None, n_bins: int = 15, *, flipped_fit: np.ndarray | None = None,
                min_rows: int = MIN_FIT_ROWS) -> tuple[dict[str, Any], dict[str, Any]]:
    """ECE on the test split before and after temperature scaling; (metrics, reliability plot data).

    ``proba_fit``/``y_fit`` are predictions on training rows the network did not take gradient steps on
    (the early-stopping split); ``flipped_fit`` marks which of their labels the labels stage flipped (None
    when unknown). Guard rails, each written into the metrics so the report can say it:

    - fewer than ``min_rows`` fitting rows: no T is fitted (``temperature`` 1, ``temperature_fitted``
      false, ``reason`` says why);
    - T is searched in ``T_BOUNDS`` ([0.2, 5]); one on a bound is kept and warned about;
    - flipped fitting labels are warned about: T then learns the noise;
    - ``ece_change`` (scaled minus unscaled test ECE) says whether T helped (< 0) or hurt (> 0). It is
      reported, never used to pick T: the test split only scores.
    """
    logits_test = np.log(np.clip(proba_test, 1e-12, 1))  # log-probabilities are logits up to a shift
    ece = round(expected_calibration_error(proba_test, y_test, n_bins), 6)
    n_rows = 0 if y_fit is None or proba_fit is None else int(len(y_fit))
    n_flipped = None if flipped_fit is None or not n_rows else int(np.count_nonzero(flipped_fit))
    out: dict[str, Any] = {"n_bins": n_bins, "ece": ece, "temperature": 1.0, "temperature_fitted": False,
                           "fitted_on": n_rows, "fit_labels_flipped": n_flipped}
    curves = {"before": reliability_curve(proba_test, y_test, n_bins)}
    if n_rows < max(min_rows, 1):
        out["reason"] = (f"only {n_rows} fitting rows (< {min_rows})" if n_rows
                         else "no fitting rows: the final fit held out no early-stopping rows")
        out["warnings"] = []
        return out, curves
    t = fit_temperature(np.log(np.clip(proba_fit, 1e-12, 1)), y_fit)
    scaled = apply_temperature(logits_test, t)
    ece_scaled = round(expected_calibration_error(scaled, y_test, n_bins), 6)
    out.update(temperature=round(t, 6), temperature_fitted=True, ece_scaled=ece_scaled,
               ece_change=round(ece_scaled - ece, 6), at_bound=at_bound(t),
               warnings=_fit_warnings(t, n_flipped, n_rows))
    curves["after"] = reliability_curve(scaled, y_test, n_bins)
    return out, curves


# The DVC metric (dvc.yaml's only `metrics:` entry): the numbers a reader compares across experiments, with
# keys short enough that `dvc metrics show` and `dvc exp show` fit a 120-column terminal. Everything else
# (intervals, per-class values, the confusion matrix, calibration details) stays in reports/metrics.json.
HEADLINE_KEYS = {  # headline key -> where its value lives in reports/metrics.json
    "test.acc": "test.accuracy",
    "test.bal_acc": "test.balanced_accuracy",
    "test.f1": "test.macro_f1",  # macro-F1
    "test.loss": "test.log_loss",  # log loss (cross-entropy) of the predicted probabilities
    "test.ap": "test.macro_average_precision",  # one-vs-rest average precision, macro mean
    "test.ece": "calibration.ece",  # before temperature scaling
    "cv.mean": "cv.mean",  # the nested-CV estimate of search.metric (cv.depth 1: optimistic)
    "cv.std": "cv.std",
}


def headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """The headline metrics (``HEADLINE_KEYS``) picked out of the full evaluate output, nested by group."""
    out: dict[str, dict[str, Any]] = {}
    for key, source in HEADLINE_KEYS.items():
        node: Any = metrics
        for part in source.split("."):
            node = node[part]
        group, name = key.split(".")
        out.setdefault(group, {})[name] = node
    return out
