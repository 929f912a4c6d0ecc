"""Dataset.load: a file that does not hold a usable data set is one line naming it."""

from __future__ import annotations

import numpy as np
import pytest

from dlrig.data.dataset import Dataset
from dlrig.errors import UserError
from dlrig.io import save_json, save_npz


def saved(tmp_path, X=None, y=None, classes=("a", "b")):
    X = np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32) if X is None else X
    y = np.arange(10) % 2 if y is None else y
    Dataset(X, y, list(classes), "test").save(tmp_path / "d.npz", tmp_path / "m.json")
    return tmp_path / "d.npz", tmp_path / "m.json"


def test_round_trip(tmp_path):
    ds = Dataset.load(*saved(tmp_path))
    assert ds.X.shape == (10, 3) and ds.classes == ["a", "b"] and ds.class_counts() == {"a": 5, "b": 5}


def test_non_finite_features_are_refused_unless_asked_for(tmp_path):
    X = np.zeros((10, 3), np.float32)
    X[2, 0] = X[2, 1] = np.nan
    X[7, 2] = -np.inf
    npz, meta = saved(tmp_path, X=X)
    with pytest.raises(UserError) as err:
        Dataset.load(npz, meta)
    assert str(err.value) == (
        f"{npz}: 2 NaN and 1 inf feature value(s) in 2 of 10 samples (first: row 2); nothing can train on "
        "them, and validate.on_failure: warn only let them past validation: clean or impute the data"
    )
    assert np.isnan(Dataset.load(npz, meta, allow_nonfinite=True).X[2, 0])  # the validate stage reports them


def test_arrays_that_do_not_fit_their_meta(tmp_path):
    npz, meta = saved(tmp_path)
    save_npz(npz, X=np.zeros((10, 3), np.float32), y=np.arange(10) % 4)
    with pytest.raises(UserError, match=f"d.npz: labels run 0..3 but {meta} names 2 classes"):
        Dataset.load(npz, meta)
    save_npz(npz, X=np.zeros((10, 3, 2), np.float32), y=np.arange(10) % 2)
    with pytest.raises(UserError, match=r"d.npz: X must be numbers of shape \[N, F\] or \[N, C, H, W\]"):
        Dataset.load(npz, meta)
    save_npz(npz, X=np.zeros((10, 3), np.float32), y=np.zeros(9, np.int64))
    with pytest.raises(UserError, match=r"d.npz: y must hold one integer label per row of X \(10; got int64 \[9\]\)"):
        Dataset.load(npz, meta)
    save_npz(npz, X=np.zeros((10, 3), np.float32), y=np.arange(10) % 2, groups=np.zeros(4))
    with pytest.raises(UserError, match=r"d.npz: groups has shape \[4\] but there are 10 rows"):
        Dataset.load(npz, meta)
    save_json(meta, {"source": "test"})
    with pytest.raises(UserError, match="m.json: missing or malformed key 'classes'; rerun prepare"):
        Dataset.load(npz, meta)
