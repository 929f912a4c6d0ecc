import numpy as np

from dlrig.data.dataset import Dataset
from dlrig.labels.corrupt import corrupt_training_labels
from dlrig.params import LabelsParams


def data():
    rng = np.random.default_rng(0)
    return Dataset(rng.normal(size=(300, 4)).astype(np.float32), np.repeat(np.arange(3), 100),
                   ["a", "b", "c"], "test")


def test_default_changes_nothing():
    ds = data()
    out, report, truth = corrupt_training_labels(ds, LabelsParams(), seed=0)
    assert np.array_equal(out.y, ds.y) and np.array_equal(out.X, ds.X) and not truth["flipped"].any()
    assert report["n_after"] == 300


def test_imbalance_then_noise_keeps_the_truth():
    cfg = LabelsParams.model_validate({"noise": {"kind": "symmetric", "rate": 0.4},
                                       "imbalance": {"profile": "step", "ratio": 10}})
    ds = data()
    out, report, truth = corrupt_training_labels(ds, cfg, seed=3)
    assert report["imbalance"]["counts"] == [100, 10, 10] or sorted(np.bincount(truth["y_clean"])) == [10, 10, 100]
    assert np.array_equal(truth["y_clean"], ds.y[truth["source_index"]])
    assert np.array_equal(truth["flipped"], out.y != truth["y_clean"])
    assert 0.25 < truth["flipped"].mean() < 0.55
    again = corrupt_training_labels(ds, cfg, seed=3)[0]
    assert np.array_equal(again.y, out.y)
