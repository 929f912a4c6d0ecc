import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score

from dlrig.errors import UserError
from dlrig.labels.imbalance import (
    class_counts,
    class_prior,
    imbalance_summary,
    induce_imbalance,
    logit_adjustment,
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
