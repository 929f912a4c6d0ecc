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


# ------------------------------------------------- the hand-written binning the sklearn version replaced
def _old_binned(proba, y, n_bins):
    """The hand-written bins before sklearn's calibration_curve: ceil(conf * M) - 1, right-closed."""
    conf = proba.max(axis=1)
    correct = (proba.argmax(axis=1) == y).astype(np.float64)
    bins = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    return np.bincount(bins, minlength=n_bins), np.bincount(bins, conf, n_bins), np.bincount(bins, correct, n_bins)


def _old_ece(proba, y, n_bins):
    count, conf_sum, right_sum = _old_binned(proba, y, n_bins)
    return float(np.abs(right_sum - conf_sum).sum() / count.sum())


def _old_rows(proba, y, n_bins):
    count, conf_sum, right_sum = _old_binned(proba, y, n_bins)
    return [(int(c), conf_sum[m] / c if c else None, right_sum[m] / c if c else None) for m, c in enumerate(count)]


@pytest.mark.parametrize("n_bins", [1, 2, 10, 15, 40])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ece_and_bins_equal_the_hand_written_version(n_bins, seed):
    # Random data with very different confidence spreads, so some runs leave bins empty (40 bins, peaked
    # softmax) and some fill them all.
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(5, 400)), int(rng.integers(2, 11))
    proba = softmax(rng.normal(0, 4.0 * rng.random(), size=(n, k)), axis=1)
    y = rng.integers(0, k, n)
    assert expected_calibration_error(proba, y, n_bins) == pytest.approx(_old_ece(proba, y, n_bins), abs=1e-12)
    rows = reliability_curve(proba, y, n_bins)
    old = _old_rows(proba, y, n_bins)
    assert [r["count"] for r in rows] == [c for c, _, _ in old]
    for r, (c, conf, acc) in zip(rows, old, strict=True):
        if c:
            assert (r["confidence"], r["accuracy"]) == pytest.approx((round(conf, 6), round(acc, 6)), abs=1e-12)
        else:
            assert r["confidence"] is None and r["accuracy"] is None


def test_bins_are_sklearns_calibration_curve_on_top_label_correctness():
    # The oracle stated directly: confidence vs "was the top class right" is binary calibration.
    from sklearn.calibration import calibration_curve

    rng = np.random.default_rng(5)
    proba = softmax(rng.normal(0, 2, size=(500, 6)), axis=1)
    y = rng.integers(0, 6, 500)
    prob_true, prob_pred = calibration_curve(proba.argmax(1) == y, proba.max(1), n_bins=15, strategy="uniform")
    rows = [r for r in reliability_curve(proba, y) if r["count"]]  # sklearn drops empty bins; so does the plot data
    assert [r["accuracy"] for r in rows] == pytest.approx(prob_true, abs=1e-6)
    assert [r["confidence"] for r in rows] == pytest.approx(prob_pred, abs=1e-6)
    counts = np.array([r["count"] for r in rows])
    assert counts.sum() == 500
    assert expected_calibration_error(proba, y) == pytest.approx((counts / 500 * np.abs(prob_true - prob_pred)).sum())


def test_confidence_a_hair_above_one_is_binned_not_refused():
    # float32 softmax rows can sum to 1 + a few ulps; sklearn refuses y_prob > 1, the curve clips.
    proba = np.array([[1 + 1e-7, 0.0], [0.6, 0.4]])
    rows = reliability_curve(proba, np.array([0, 1]), n_bins=2)
    assert [r["count"] for r in rows] == [0, 2]
    assert expected_calibration_error(proba, np.array([0, 1]), n_bins=2) == pytest.approx(abs(0.5 - 0.8))
