"""Metrics against hand-worked examples (the formulas, not sklearn, are the oracle here)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from dlrig.evaluate.metrics import (
    classification_metrics,
    confusion_plot_records,
    write_plot_data,
)

CLASSES = ["a", "b", "c"]
# 6 samples, 3 classes with counts 3/2/1. Predictions (argmax): 0 0 1 1 2 2.
Y_TRUE = np.array([0, 0, 0, 1, 1, 2])
PROBA = np.array(
    [
        [0.8, 0.1, 0.1],  # a -> a
        [0.6, 0.3, 0.1],  # a -> a
        [0.3, 0.6, 0.1],  # a -> b  (wrong)
        [0.2, 0.7, 0.1],  # b -> b
        [0.1, 0.4, 0.5],  # b -> c  (wrong)
        [0.2, 0.2, 0.6],  # c -> c
    ]
)


def test_hand_worked_example():
    m = classification_metrics(Y_TRUE, PROBA, CLASSES)
    # accuracy: 4 of 6 right.
    assert m["accuracy"] == round(4 / 6, 6)
    # recall: a 2/3, b 1/2, c 1/1 -> balanced accuracy is their mean, 13/18.
    assert m["per_class_recall"] == {"a": round(2 / 3, 6), "b": 0.5, "c": 1.0}
    assert m["balanced_accuracy"] == round(13 / 18, 6)
    # precision: a 2/2, b 1/2, c 1/2 -> F1 a 4/5, b 1/2, c 2/3 -> macro 59/90.
    assert m["macro_f1"] == round(59 / 90, 6)
    # log loss: mean of -ln(probability given to the true class).
    expected = (
        -(math.log(0.8) + math.log(0.6) + math.log(0.3) + math.log(0.7) + math.log(0.4) + math.log(0.6)) / 6
    )
    assert m["log_loss"] == pytest.approx(expected, abs=1e-6)
    assert m["n"] == 6
    assert m["classes"] == CLASSES
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]


def test_absent_class_keeps_its_row_and_column():
    classes = ["a", "b", "c", "d"]
    proba = np.hstack([PROBA * 0.9, np.full((6, 1), 0.1)])
    proba[5] = [0.0, 0.1, 0.2, 0.7]  # a "c" sample predicted as "d", which never occurs
    m = classification_metrics(Y_TRUE, proba, classes)
    cm = np.array(m["confusion_matrix"])
    assert cm.shape == (4, 4)
    assert cm[3].tolist() == [0, 0, 0, 0]  # no true "d"
    assert cm[2].tolist() == [0, 0, 0, 1]
    assert m["per_class_recall"]["d"] is None  # undefined, not 0
    # balanced accuracy averages over the classes that occur: (2/3 + 1/2 + 0) / 3.
    assert m["balanced_accuracy"] == round((2 / 3 + 1 / 2 + 0) / 3, 6)
    # a zero probability (sample 5, class a) and an unused label column still give a finite log loss
    assert math.isfinite(m["log_loss"])
    json.dumps(m)  # None, not NaN: valid JSON


def test_zero_probability_for_true_class_is_clipped():
    proba = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    m = classification_metrics(np.array([1, 1]), proba, ["x", "y"])
    assert math.isfinite(m["log_loss"])
    assert m["log_loss"] == pytest.approx(-math.log(1e-15) / 2, rel=1e-6)


def test_deterministic_and_json_stable():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 3))
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = rng.integers(0, 3, size=50)
    a = json.dumps(classification_metrics(y, proba, CLASSES))
    b = json.dumps(classification_metrics(y.copy(), proba.astype(np.float32), CLASSES))
    assert a == json.dumps(classification_metrics(y, proba, CLASSES))
    # float32 vs float64 input differs only below the rounding of the hard metrics
    assert json.loads(a)["accuracy"] == json.loads(b)["accuracy"]


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="shape"):
        classification_metrics(Y_TRUE, PROBA[:, :2], CLASSES)
    with pytest.raises(ValueError, match="0..2"):
        classification_metrics(np.array([0, 0, 0, 1, 1, 3]), PROBA, CLASSES)


def test_plot_data(tmp_path):
    records = confusion_plot_records(Y_TRUE, PROBA.argmax(axis=1), CLASSES)
    assert records[2] == {"actual": "a", "predicted": "b"}
    assert len(records) == 6

    paths = write_plot_data(tmp_path / "plots", Y_TRUE, PROBA, CLASSES)
    assert json.loads(paths["confusion"].read_text()) == records
    assert json.loads(paths["per_class_recall"].read_text()) == [
        {"class": "a", "recall": round(2 / 3, 6)},
        {"class": "b", "recall": 0.5},
        {"class": "c", "recall": 1.0},
    ]
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "confusion.json",
        "per_class_recall.json",
    ]


def test_precision_recall_by_hand():
    from sklearn.metrics import average_precision_score

    from dlrig.evaluate.holdout import precision_recall

    y = np.array([0, 0, 1, 1, 2])
    proba = np.array([[0.8, 0.1, 0.1], [0.3, 0.6, 0.1], [0.2, 0.7, 0.1], [0.5, 0.4, 0.1], [0.1, 0.1, 0.8]])
    metrics, curve = precision_recall(y, proba, ["a", "b", "c"])
    assert metrics["average_precision"]["c"] == 1.0
    assert metrics["average_precision"]["a"] == round(average_precision_score(y == 0, proba[:, 0]), 6)
    assert metrics["macro_average_precision"] == round(np.mean(list(metrics["average_precision"].values())), 6)
    assert curve[0] == {"recall": 0.0, "precision": 1.0} and len(curve) == 101
    precisions = [p["precision"] for p in curve]
    assert all(a >= b for a, b in zip(precisions, precisions[1:], strict=False))  # an envelope never rises
    # By hand, over the 15 (sample, class) pairs: 5 positives scored .8 .3 .7 .4 .8. Recall 1 needs a threshold
    # <= .3, where 2 negatives (.6, .5) join: 5/7. Recall .8 alone (threshold .4) is 4/6, but the envelope takes
    # the better 5/7 found at a higher recall. Recall .6 (threshold .7) has no negative: 1.
    at = {p["recall"]: p["precision"] for p in curve}
    assert at[1.0] == round(5 / 7, 6) and at[0.8] == round(5 / 7, 6) and at[0.6] == 1.0
