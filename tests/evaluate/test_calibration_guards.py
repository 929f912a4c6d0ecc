"""Guard rails on temperature scaling (dlrig.evaluate.holdout.calibration): too few fitting rows give
T = 1 and say why, flipped fitting labels are warned about, T stays inside its bounds, and the saved
change in test ECE says whether T helped or hurt."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dlrig.evaluate.calibration import T_BOUNDS, at_bound, fit_temperature
from dlrig.evaluate.holdout import MIN_FIT_ROWS, calibration


def _proba(pred: np.ndarray, confidence: np.ndarray, k: int = 3) -> np.ndarray:
    proba = np.tile(((1 - confidence) / (k - 1))[:, None], (1, k))
    proba[np.arange(len(pred)), pred] = confidence
    return proba


def _model(n: int, overconfidence: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(labels, probabilities) of a 3-class model right ``overconfidence`` less often than it claims."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    confidence = rng.uniform(0.5, 1.0, n)
    right = rng.uniform(size=n) < confidence - overconfidence
    return y, _proba(np.where(right, y, (y + 1) % 3), confidence)


def _flip(y: np.ndarray, every: int) -> tuple[np.ndarray, np.ndarray]:
    """Every ``every``-th label moved to the next class, as the labels stage's noise would, and the mask."""
    flipped = np.arange(len(y)) % every == 0
    return np.where(flipped, (y + 1) % 3, y), flipped


def test_too_few_fitting_rows_give_t_one_and_the_reason():
    y, proba = _model(300, overconfidence=0.2)
    calib, curves = calibration(y[100:], proba[100:], y[:21], proba[:21])
    assert calib["temperature"] == 1.0 and calib["temperature_fitted"] is False
    assert calib["reason"] == f"only 21 fitting rows (< {MIN_FIT_ROWS})" == "only 21 fitting rows (< 50)"
    assert calib["fitted_on"] == 21 and "ece_scaled" not in calib and "after" not in curves
    json.dumps(calib, allow_nan=False)  # metrics.json-ready


def test_the_minimum_is_inclusive_and_can_be_lowered():
    y, proba = _model(300, overconfidence=0.2)
    fitted, _ = calibration(y[100:], proba[100:], y[:MIN_FIT_ROWS], proba[:MIN_FIT_ROWS])
    assert fitted["temperature_fitted"] is True and fitted["fitted_on"] == MIN_FIT_ROWS
    short, _ = calibration(y[100:], proba[100:], y[:MIN_FIT_ROWS - 1], proba[:MIN_FIT_ROWS - 1])
    assert short["temperature_fitted"] is False
    lowered, _ = calibration(y[100:], proba[100:], y[:21], proba[:21], min_rows=20)
    assert lowered["temperature_fitted"] is True


def test_no_fitting_rows_say_so():
    y, proba = _model(100, overconfidence=0.2)
    calib, curves = calibration(y, proba, None, None)
    assert calib["temperature_fitted"] is False and calib["fitted_on"] == 0
    assert calib["reason"].startswith("no fitting rows") and calib["fit_labels_flipped"] is None
    assert list(curves) == ["before"]


def test_flipped_fitting_labels_are_warned_about():
    y, proba = _model(300, overconfidence=0.2)
    noisy, flipped = _flip(y[:100], every=4)
    calib, _ = calibration(y[100:], proba[100:], noisy, proba[:100], flipped_fit=flipped)
    assert calib["fit_labels_flipped"] == 25
    assert any(w.startswith("25 of 100 fitting labels (25.0%) were flipped") for w in calib["warnings"])
    clean, _ = calibration(y[100:], proba[100:], y[:100], proba[:100], flipped_fit=np.zeros(100, bool))
    assert clean["fit_labels_flipped"] == 0 and clean["warnings"] == []
    unknown, _ = calibration(y[100:], proba[100:], y[:100], proba[:100])
    assert unknown["fit_labels_flipped"] is None and unknown["warnings"] == []


def test_temperature_stays_in_its_bounds_and_a_bound_is_warned_about():
    low, high = T_BOUNDS
    assert (low, high) == (0.2, 5.0)
    rng = np.random.default_rng(3)
    # Confident logits against random labels: the NLL wants T -> infinity; held at the upper bound.
    logits = 10 * np.eye(3)[rng.integers(0, 3, 200)]
    assert fit_temperature(logits, rng.integers(0, 3, 200)) == high
    # All right and barely confident: the NLL wants T -> 0; held at the lower bound.
    y = rng.integers(0, 3, 200)
    assert fit_temperature(0.01 * np.eye(3)[y], y) == low
    assert at_bound(high) and at_bound(low) and not at_bound(1.0)
    with pytest.raises(ValueError, match="bounds"):
        fit_temperature(logits, y, bounds=(2.0, 1.0))
    # Through calibration(): random fitting labels drive T to the bound, and the metrics say so.
    yt, proba = _model(300, overconfidence=0.0)
    calib, _ = calibration(yt[100:], proba[100:], rng.integers(0, 3, 100), proba[:100])
    assert calib["temperature"] == high and calib["at_bound"] is True
    assert any("sits on a bound of its range [0.2, 5]" in w for w in calib["warnings"])


def test_ece_change_says_whether_t_helped_or_hurt():
    # Over-confident model, clean fitting rows: T softens and lowers the test ECE.
    y, proba = _model(300, overconfidence=0.2)
    helped, _ = calibration(y[100:], proba[100:], y[:100], proba[:100])
    assert helped["temperature"] > 1 and helped["ece_change"] < 0
    assert helped["ece_change"] == pytest.approx(helped["ece_scaled"] - helped["ece"], abs=1e-6)
    # Calibrated model, half the fitting labels flipped: T softens toward the noise and raises it.
    y, proba = _model(300, overconfidence=0.0)
    noisy, flipped = _flip(y[:100], every=2)
    hurt, _ = calibration(y[100:], proba[100:], noisy, proba[:100], flipped_fit=flipped)
    assert hurt["temperature"] > 2 and hurt["ece_change"] > 0.1
    assert hurt["ece_scaled"] > hurt["ece"] and hurt["warnings"]
