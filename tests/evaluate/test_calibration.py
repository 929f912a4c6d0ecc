"""ECE, the reliability curve and temperature scaling: a hand example and synthetic known answers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.special import softmax

from dlrig.evaluate.calibration import (
    T_BOUNDS,
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    reliability_curve,
)

# Two bins: [0, 0.5] and (0.5, 1].
PROBA = np.array(
    [
        [0.40, 0.30, 0.30],  # conf 0.40, bin 1, right
        [0.45, 0.35, 0.20],  # conf 0.45, bin 1, wrong (y = 1)
        [0.90, 0.05, 0.05],  # conf 0.90, bin 2, right
        [0.10, 0.80, 0.10],  # conf 0.80, bin 2, wrong (y = 2)
    ]
)
Y = np.array([0, 1, 0, 2])


def test_ece_hand_worked_two_bins():
    # bin 1: accuracy 1/2, confidence (0.40 + 0.45) / 2 = 0.425 -> |diff| 0.075, weight 2/4
    # bin 2: accuracy 1/2, confidence (0.90 + 0.80) / 2 = 0.85  -> |diff| 0.35,  weight 2/4
    # ECE = 0.5 * 0.075 + 0.5 * 0.35 = 0.2125
    assert expected_calibration_error(PROBA, Y, n_bins=2) == pytest.approx(0.2125)
    assert reliability_curve(PROBA, Y, n_bins=2) == [
        {"bin_low": 0.0, "bin_high": 0.5, "confidence": 0.425, "accuracy": 0.5, "count": 2},
        {"bin_low": 0.5, "bin_high": 1.0, "confidence": 0.85, "accuracy": 0.5, "count": 2},
    ]


def test_bin_edges_are_right_closed():
    # A confidence of exactly 0.5 belongs to ((0, 0.5]), the first of two bins.
    rows = reliability_curve(np.array([[0.5, 0.5], [0.7, 0.3]]), np.array([0, 0]), n_bins=2)
    assert [r["count"] for r in rows] == [1, 1]


def test_reliability_curve_keeps_empty_bins_and_is_json():
    rows = reliability_curve(PROBA, Y)
    assert len(rows) == 15 and sum(r["count"] for r in rows) == 4
    assert rows[0] == {"bin_low": 0.0, "bin_high": 0.066667, "confidence": None, "accuracy": None, "count": 0}
    json.dumps(rows, allow_nan=False)


def _calibrated(n: int, seed: int = 0, k: int = 5):
    """Logits whose softmax is the true class distribution: labels are drawn from it."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1.5, size=(n, k))
    p = softmax(logits, axis=1)
    y = (rng.random(n)[:, None] > np.cumsum(p, axis=1)).sum(axis=1)
    return logits, np.minimum(y, k - 1)


def test_ece_is_near_zero_when_calibrated_and_large_when_overconfident():
    logits, y = _calibrated(20000)
    assert expected_calibration_error(softmax(logits, axis=1), y) < 0.02
    assert expected_calibration_error(softmax(3 * logits, axis=1), y) > 0.15


def test_temperature_recovers_the_scale_and_lowers_ece():
    logits, y = _calibrated(20000, seed=1)
    overconfident = 3 * logits
    fit, held_out = slice(0, 10000), slice(10000, None)  # fit on one part, measure on the other
    t = fit_temperature(overconfident[fit], y[fit])
    assert t == pytest.approx(3.0, rel=0.05)
    assert fit_temperature(overconfident[fit], y[fit]) == t  # deterministic
    before = expected_calibration_error(softmax(overconfident[held_out], axis=1), y[held_out])
    after = expected_calibration_error(apply_temperature(overconfident[held_out], t), y[held_out])
    assert after < 0.03 < 0.15 < before
    assert apply_temperature(overconfident, t).sum(axis=1) == pytest.approx(np.ones(len(y)))


def test_temperature_below_one_sharpens_and_separable_data_hits_the_bound():
    logits, y = _calibrated(5000, seed=2)
    assert fit_temperature(logits / 2, y) == pytest.approx(0.5, rel=0.08)
    # Every sample right: NLL keeps falling as T -> 0, so the search ends at its lower bound -- a finite
    # T, reported as the bound itself, not an error.
    sep = np.eye(3)[np.array([0, 1, 2, 0])]
    assert fit_temperature(sep, np.array([0, 1, 2, 0])) == T_BOUNDS[0] == 0.2


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="shape"):
        fit_temperature(np.zeros(4), np.zeros(4, dtype=int))
    with pytest.raises(ValueError, match="class indices"):
        fit_temperature(np.zeros((2, 2)), np.array([0, 2]))
    with pytest.raises(ValueError, match="temperature"):
        apply_temperature(np.zeros((2, 2)), 0.0)
