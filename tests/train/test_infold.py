"""In-fold handling against its oracles: class weights (sklearn), resampling, and that both only ever see
the training rows of a fold (how fit() applies them: tests/train/test_fit_labels.py)."""

import numpy as np
import pytest
from sklearn.model_selection import StratifiedKFold
from sklearn.utils.class_weight import compute_class_weight

from dlrig.labels.imbalance import class_counts
from dlrig.train.infold import class_weights, resample_indices


# ------------------------------------------------------------------------------------------- weights
def test_balanced_weights_match_sklearn():
    y = np.array([0] * 60 + [1] * 30 + [2] * 10)
    ours = class_weights(y, 3, "balanced")
    assert np.allclose(ours, compute_class_weight("balanced", classes=np.arange(3), y=y))
    assert np.allclose(ours, [100 / 180, 100 / 90, 100 / 30])


def test_every_scheme_keeps_the_average_sample_weight_at_one():
    y = np.array([0] * 60 + [1] * 30 + [2] * 10)
    counts = np.array([60, 30, 10])
    for scheme in ("balanced", "inverse_sqrt", "effective_number"):
        w = class_weights(y, 3, scheme)
        assert np.isclose((w * counts).sum(), len(y)), scheme
        assert w[0] < w[1] < w[2], scheme
    w = class_weights(y, 3, "inverse_sqrt")
    assert np.allclose(w / w[2], np.sqrt(10 / counts))


def test_effective_number_weights_known_answer_and_limits():
    y = np.array([0] * 60 + [1] * 30 + [2] * 10)
    beta = 0.9
    expected = (1 - beta) / (1 - beta ** np.array([60, 30, 10]))
    w = class_weights(y, 3, "effective_number", beta=beta)
    assert np.allclose(w / w[0], expected / expected[0])
    assert np.allclose(class_weights(y, 3, "effective_number", beta=0.0), 1.0)  # beta 0: no reweighting
    near_one = class_weights(y, 3, "effective_number", beta=1 - 1e-9)
    assert np.allclose(near_one, class_weights(y, 3, "balanced"), rtol=1e-4)
    with pytest.raises(ValueError, match="beta"):
        class_weights(y, 3, "effective_number", beta=1.0)


def test_absent_class_gets_weight_zero_and_unknown_scheme_is_refused():
    w = class_weights(np.array([0, 0, 2]), 3, "balanced")
    assert w[1] == 0 and np.isclose(w[0] * 2 + w[2], 3)
    with pytest.raises(ValueError, match="scheme must be one of"):
        class_weights(np.array([0, 1]), 2, "inverse")


# ---------------------------------------------------------------------------------------- resampling
def test_oversample_and_undersample_balance_the_classes():
    y = np.array([0] * 50 + [1] * 20 + [2] * 5)
    over = resample_indices(y, 3, "oversample", seed=0)
    assert class_counts(y[over], 3).tolist() == [50, 50, 50]
    assert set(over.tolist()) == set(range(len(y)))  # every original row is kept
    under = resample_indices(y, 3, "undersample", seed=0)
    assert class_counts(y[under], 3).tolist() == [5, 5, 5]
    assert len(np.unique(under)) == len(under)  # without replacement
    assert np.array_equal(over, resample_indices(y, 3, "oversample", seed=0))
    assert not np.array_equal(under, resample_indices(y, 3, "undersample", seed=1))


def test_fold_fitted_steps_only_ever_see_the_training_rows():
    """Leakage-shaped: given y_train only, positions stay inside it, so mapped back through train_idx
    no validation row is ever duplicated into training."""
    rng = np.random.default_rng(0)
    y = rng.choice(3, size=300, p=[0.7, 0.2, 0.1])
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
    for train_idx, val_idx in folds.split(np.zeros((len(y), 1)), y):
        y_train = y[train_idx]
        for method in ("oversample", "undersample"):
            pos = resample_indices(y_train, 3, method, seed=0)
            assert pos.min() >= 0 and pos.max() < len(y_train)
            rows = train_idx[pos]
            assert not set(rows.tolist()) & set(val_idx.tolist())
        w = class_weights(y_train, 3, "balanced")
        assert np.allclose(w, compute_class_weight("balanced", classes=np.arange(3), y=y_train))
