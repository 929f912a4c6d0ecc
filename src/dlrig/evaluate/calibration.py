"""Calibration: does "90% confident" mean right 90% of the time? ECE, the reliability curve, and
temperature scaling (Guo, Pleiss, Sun & Weinberger, 2017, "On calibration of modern neural networks").

Everything here uses the *top-label* confidence: the largest class probability and whether its class is
the true one -- a binary problem, so sklearn's ``calibration_curve`` gives the bin means. Bins are equal-width
on ``[0, 1]``; bin ``m`` (1-based) holds confidences in ``((m - 1)/M, m/M]``, the first bin also holds 0.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

from dlrig.evaluate.metrics import DECIMALS

# The range a temperature may take: T in [1/5, 5]. Networks that need calibrating are off by a factor of
# about 1.1-3 (Guo et al. 2017); a T outside [1/5, 5] says more about the fitting rows (too few, or labels
# that contradict the model) than about the model, and one-hot or near-uniform probabilities help nobody.
T_BOUNDS = (0.2, 5.0)


def _check(proba: Any, y: Any, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    proba = np.asarray(proba, dtype=np.float64)
    y = np.asarray(y).ravel()
    if proba.ndim != 2 or proba.shape[0] != y.size or y.size == 0:
        raise ValueError(f"proba must have shape [n, K], n = len(y) > 0 (got {list(proba.shape)}, {y.size})")
    if not np.isfinite(proba).all():
        raise ValueError("proba contains NaN or infinite values")
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1 (got {n_bins})")
    return proba, y


def _bin_ids(confidence: Any, n_bins: int) -> np.ndarray:
    """The 0-based bin of each confidence: sklearn's ``calibration_curve(strategy="uniform")`` rule --
    equal-width edges ``linspace(0, 1, n_bins + 1)``, right-closed -- so counts made here line up with the
    bins it returns."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.searchsorted(edges[1:-1], np.asarray(confidence, dtype=np.float64))


def _curve(proba: Any, y: Any, n_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(count per bin ``[n_bins]``, accuracy and mean confidence of the non-empty bins).

    Top-label calibration is a binary problem -- was the top class right, against how confident it was --
    so sklearn's ``calibration_curve`` computes the curve; it drops empty bins, hence the counts.
    """
    from sklearn.calibration import calibration_curve

    proba, y = _check(proba, y, n_bins)
    # Rows that sum to 1 + a few ulps can put the top probability a hair above 1, which sklearn refuses.
    conf = np.clip(proba.max(axis=1), 0.0, 1.0)
    correct = (proba.argmax(axis=1) == y).astype(np.int64)
    accuracy, confidence = calibration_curve(correct, conf, pos_label=1, n_bins=n_bins, strategy="uniform")
    return np.bincount(_bin_ids(conf, n_bins), minlength=n_bins), accuracy, confidence


def expected_calibration_error(proba: Any, y: Any, n_bins: int = 15) -> float:
    """ECE: ``sum_m |B_m|/n * |accuracy(B_m) - confidence(B_m)|`` over equal-width confidence bins.

    0 is perfectly calibrated; an overconfident model (confidence above its accuracy) scores high.
    ``proba`` is ``[n, K]`` class probabilities, ``y`` the true class indices.
    """
    count, accuracy, confidence = _curve(proba, y, n_bins)
    weight = count[count > 0] / count.sum()
    return float((weight * np.abs(accuracy - confidence)).sum())


def reliability_curve(proba: Any, y: Any, n_bins: int = 15) -> list[dict[str, Any]]:
    """One row per bin: ``{"bin_low", "bin_high", "confidence", "accuracy", "count"}``, JSON-ready.

    ``confidence`` and ``accuracy`` are the bin means (``None`` for an empty bin, which stays in the list
    so every run has the same rows; the evaluate stage drops them from the plot data, as sklearn's
    ``calibration_curve`` does). A calibrated model's rows lie on ``accuracy == confidence``.
    """
    count, accuracy, confidence = _curve(proba, y, n_bins)
    means = iter(zip(accuracy, confidence, strict=True))
    rows = []
    for m in range(n_bins):
        c = int(count[m])
        acc, conf = next(means) if c else (None, None)
        rows.append(
            {
                "bin_low": round(m / n_bins, DECIMALS),
                "bin_high": round((m + 1) / n_bins, DECIMALS),
                "confidence": None if conf is None else round(float(conf), DECIMALS),
                "accuracy": None if acc is None else round(float(acc), DECIMALS),
                "count": c,
            }
        )
    return rows


def _nll(logits: np.ndarray, y: np.ndarray, temperature: float) -> float:
    return float(-log_softmax(logits / temperature, axis=1)[np.arange(y.size), y].mean())


def fit_temperature(logits: Any, y: Any, bounds: tuple[float, float] = T_BOUNDS) -> float:
    """The temperature ``T`` in ``bounds`` (default ``[0.2, 5]``, see ``T_BOUNDS``) that minimises the
    NLL of ``softmax(logits / T)`` on ``(logits, y)``.

    **The logits must come from training data only** -- e.g. the early-stopping validation part of the
    training split, or out-of-fold predictions on it -- never from the test set, which is touched only to
    score. (Logits of the very samples the network was fitted on are confidently right, and give a
    too-small T.)

    The NLL is convex in ``1/T``, so a bounded Brent search on ``log T`` finds the optimum
    deterministically; when the optimum lies outside ``bounds`` the result is (near) the nearer bound, which
    :func:`at_bound` tells. ``T > 1`` softens an overconfident model; ``T < 1`` sharpens. On perfectly
    separated data the NLL keeps falling as ``T -> 0`` and the result is the lower bound.
    """
    low, high = bounds
    if not 0 < low < high:
        raise ValueError(f"bounds must satisfy 0 < low < high (got {bounds})")
    logits = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y).ravel()
    if logits.ndim != 2 or logits.shape[0] != y.size or y.size == 0:
        shape = list(logits.shape)
        raise ValueError(f"logits must have shape [n, K], n = len(y) > 0 (got {shape}, {y.size})")
    if not np.isfinite(logits).all():
        raise ValueError("logits contain NaN or infinite values")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= logits.shape[1]:
        raise ValueError(f"y must hold integer class indices in 0..{logits.shape[1] - 1}")
    res = minimize_scalar(
        lambda log_t: _nll(logits, y, math.exp(log_t)),
        bounds=(math.log(low), math.log(high)),
        method="bounded",
        options={"xatol": 1e-6},
    )
    t = float(math.exp(res.x))
    # The bounded search stops a hair inside a bound it runs into; report the bound itself.
    return next((float(b) for b in bounds if math.isclose(t, b, rel_tol=1e-3)), t)


def at_bound(temperature: float, bounds: tuple[float, float] = T_BOUNDS) -> bool:
    """Whether a fitted T sits on an end of its range: the fitting rows asked for more than it allows."""
    return any(math.isclose(temperature, b, rel_tol=1e-3) for b in bounds)


def apply_temperature(logits: Any, temperature: float) -> np.ndarray:
    """Calibrated class probabilities ``softmax(logits / T)`` (float64, rows sum to 1)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 (got {temperature})")
    return softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=1)
