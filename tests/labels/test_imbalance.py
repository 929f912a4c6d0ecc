import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import StratifiedKFold
from sklearn.utils.class_weight import compute_class_weight

from dlrig.errors import UserError
from dlrig.labels.imbalance import (
    class_counts,
    class_prior,
    class_weights,
    imbalance_summary,
    induce_imbalance,
    logit_adjustment,
    resample_indices,
    target_counts,
    threshold_moving,
)


def balanced(n_per_class=100, k=4):
    return np.repeat(np.arange(k), n_per_class)


# ------------------------------------------------------------------------------------------- induce
def test_target_counts_known_answers():
    counts = np.full(4, 100)
    assert target_counts(counts, "step", 10).tolist() == [100, 100, 10, 10]  # second half is minority
    assert target_counts(counts, "step", 10, minority=[1]).tolist() == [100, 10, 100, 100]
    assert target_counts(counts, "linear", 10).tolist() == [100, 70, 40, 10]
    assert target_counts(np.full(3, 100), "exponential", 100).tolist() == [100, 10, 1]
    assert target_counts(counts, "step", 1).tolist() == [100] * 4
    assert target_counts(counts, "linear", 1000).tolist() == [100, 67, 33, 1]  # at least one kept
    # Never more than a class has; an absent class keeps none.
    assert target_counts(np.array([100, 30, 50, 0]), "linear", 4).tolist() == [100, 30, 50, 0]


def test_induce_imbalance_realises_the_profile_and_is_seeded():
    y = balanced(100, 4)
    kept = induce_imbalance(y, 4, "linear", 10, seed=0)
    assert np.array_equal(kept, np.unique(kept)) and kept.min() >= 0 and kept.max() < len(y)
    assert class_counts(y[kept], 4).tolist() == [100, 70, 40, 10]
    summary = imbalance_summary(y[kept], 4)
    assert summary == {"n": 220, "counts": [100, 70, 40, 10], "ratio": 10.0, "n_classes_present": 4}
    assert np.array_equal(kept, induce_imbalance(y, 4, "linear", 10, seed=0))
    assert not np.array_equal(kept, induce_imbalance(y, 4, "linear", 10, seed=1))


def test_a_larger_ratio_keeps_a_subset():
    y = balanced(50, 3)
    mild = induce_imbalance(y, 3, "step", 2, seed=3)
    strong = induce_imbalance(y, 3, "step", 10, seed=3)
    assert set(strong.tolist()) <= set(mild.tolist())
    assert class_counts(y[strong], 3).tolist() == [50, 5, 5]


def test_induce_imbalance_refuses_bad_arguments():
    y = balanced(10, 4)
    with pytest.raises(ValueError, match=">= 1"):
        induce_imbalance(y, 4, "step", 0.5, seed=0)
    with pytest.raises(UserError, match="outside 0..3"):
        induce_imbalance(y, 4, "step", 2, seed=0, minority=[4])
    with pytest.raises(UserError, match="only used with profile step"):
        induce_imbalance(y, 4, "linear", 2, seed=0, minority=[1])


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


# ------------------------------------------------------------------------------- logit adjustment
def test_logit_adjustment_known_answer():
    prior = np.array([0.5, 0.25, 0.25])
    assert np.allclose(logit_adjustment(prior), np.log(prior))
    assert np.allclose(logit_adjustment(np.array([20, 10, 10]), tau=2.0), 2 * np.log(prior))  # counts ok
    assert np.allclose(class_prior(np.array([0, 0, 1, 2]), 3), prior)
    with pytest.raises(UserError, match="positive prior"):
        logit_adjustment(np.array([0.5, 0.5, 0.0]))


def test_threshold_moving_is_post_hoc_logit_adjustment():
    assert np.allclose(threshold_moving(np.array([[0.6, 0.4]]), np.array([0.8, 0.2])), [[3 / 11, 8 / 11]])
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(20, 4))
    prior = np.array([0.4, 0.3, 0.2, 0.1])
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    adjusted = logits - logit_adjustment(prior)
    expected = np.exp(adjusted) / np.exp(adjusted).sum(1, keepdims=True)
    assert np.allclose(threshold_moving(proba, prior), expected)


def test_threshold_moving_raises_balanced_accuracy_on_imbalanced_data():
    rng = np.random.default_rng(0)
    n0, n1 = 1800, 200
    X = np.concatenate([rng.normal(0, 1, (n0, 2)), rng.normal(1.2, 1, (n1, 2))])
    y = np.array([0] * n0 + [1] * n1)
    model = LogisticRegression().fit(X[::2], y[::2])  # fit on the even rows, score on the odd rows
    proba = model.predict_proba(X[1::2])
    plain = balanced_accuracy_score(y[1::2], proba.argmax(1))
    moved = balanced_accuracy_score(y[1::2], threshold_moving(proba, class_prior(y[::2], 2)).argmax(1))
    assert moved > plain + 0.1
