"""MNIST's own test split (t10k) stays the test split while data.mnist.use_official_test is true."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from tests.data.test_sources import write_mnist
from tests.stages.test_stages import complete, stage

from dlrig.data.dataset import Dataset
from dlrig.data.sources import official_test_rows
from dlrig.data.split import holdout_split, row_hashes
from dlrig.errors import UserError
from dlrig.params import SplitParams


def make(n_train=30, n_test=10, n_classes=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_train + n_test, 4)).astype(np.float32)
    y = np.arange(n_train + n_test) % n_classes
    extra = {"mnist_official_test_rows": [n_train, n_train + n_test]}
    return Dataset(X, y, [f"c{k}" for k in range(n_classes)], "mnist", extra=extra)


def test_the_given_test_rows_are_the_test_split_whatever_the_seed_and_test_size():
    ds = make()
    rows = official_test_rows(ds)
    assert rows.tolist() == list(range(30, 40))
    for seed, size in ((0, 0.2), (7, 0.5)):
        train, test, report = holdout_split(ds, SplitParams(test_size=size), seed, test_rows=rows)
        np.testing.assert_array_equal(test.X, ds.X[30:])
        np.testing.assert_array_equal(train.X, ds.X[:30])
        assert report["official_test"] is True and report["test_size"] is None
        assert (report["n_train"], report["n_test"]) == (30, 10)
    _, _, drawn = holdout_split(ds, SplitParams(test_size=0.25), 0)
    assert drawn["official_test"] is False and drawn["test_size"] == 0.25


def test_the_duplicates_rule_still_applies_to_the_official_split():
    ds = make()
    ds.X[35] = ds.X[3]  # a t10k image that is also a training image
    ds.y[35] = ds.y[3]
    rows = official_test_rows(ds)
    train, test, report = holdout_split(ds, SplitParams(duplicates="remove"), 0, test_rows=rows)
    assert report["duplicates"] == {**report["duplicates"], "across": 1, "removed": 1}
    assert report["n_test"] == 9 and not set(row_hashes(train.X)) & set(row_hashes(test.X))
    with pytest.raises(UserError, match="exact copies of training samples"):
        holdout_split(ds, SplitParams(duplicates="refuse"), 0, test_rows=rows)


def test_an_official_split_missing_a_class_names_the_param():
    ds = make()
    ds.y[30:] = 0  # t10k holds only class c0
    with pytest.raises(UserError, match=r"test side with no sample of class\(es\) \['c1', 'c2'\].*"
                                        "data.mnist.use_official_test=false"):
        holdout_split(ds, SplitParams(), 0, test_rows=official_test_rows(ds))


def test_rows_that_do_not_fit_the_data_are_refused():
    ds = make()
    ds.extra["mnist_official_test_rows"] = [30, 99]
    with pytest.raises(UserError, match="do not fit the 40 rows.*rerun prepare"):
        official_test_rows(ds)
    assert official_test_rows(Dataset(ds.X, ds.y, ds.classes, "csv")) is None


@pytest.mark.parametrize("official", [True, False])
def test_prepare_and_split_keep_t10k_as_the_test_split(tmp_path, capsys, official):
    arrays = write_mnist(tmp_path / "mnist", n_train=40, n_test=20)  # labels cycle 0..9: each class on both sides
    params = complete({"data": {"source": "mnist", "path": str(tmp_path / "mnist"),
                                "mnist": {"use_official_test": official}},
                       "split": {"test_size": 0.25}})
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(params))
    raw, meta = str(tmp_path / "raw.npz"), str(tmp_path / "meta.json")
    stage("prepare")(["--params", str(p), "--out", raw, "--meta", meta])
    (tmp_path / "validation.json").write_text(json.dumps({"success": True}))
    stage("split")(["--params", str(p), "--data", raw, "--meta", meta, "--validation",
                    str(tmp_path / "validation.json"), "--train", str(tmp_path / "train.npz"),
                    "--test", str(tmp_path / "test.npz"), "--report", str(tmp_path / "split.json")])
    test = np.load(tmp_path / "test.npz")["X"][:, 0]
    report = json.loads((tmp_path / "split.json").read_text())
    out = capsys.readouterr().out
    if official:
        np.testing.assert_array_equal(test, arrays["t10k"][0])
        assert report["official_test"] is True and report["n_test"] == 20
        assert "40 train / 20 test (t10k, the data set's own test split)" in out
    else:  # pooled and re-split: 25% of 60, drawn from both files
        assert report["official_test"] is False and report["n_test"] == 15
        train_hashes = set(row_hashes(arrays["train"][0][:, None].astype(np.float32)))
        assert set(row_hashes(test[:, None].astype(np.float32))) & train_hashes
