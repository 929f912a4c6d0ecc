import numpy as np
import pytest

from dlrig.data.dataset import Dataset
from dlrig.data.split import holdout_split, row_hashes
from dlrig.errors import UserError
from dlrig.params import SplitParams


def make(n_per_class=20, n_classes=3, seed=0, groups=None):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_per_class * n_classes, 4)).astype(np.float32)
    y = np.repeat(np.arange(n_classes), n_per_class)
    return Dataset(X, y, [f"c{k}" for k in range(n_classes)], "test", groups=groups)


def test_stratified_and_seeded():
    ds = make()
    train, test, report = holdout_split(ds, SplitParams(test_size=0.25), seed=1)
    assert report["n_train"] == 45 and report["n_test"] == 15
    assert np.bincount(test.y).tolist() == [5, 5, 5]
    again = holdout_split(ds, SplitParams(test_size=0.25), seed=1)[1]
    other = holdout_split(ds, SplitParams(test_size=0.25), seed=2)[1]
    assert np.array_equal(test.X, again.X) and not np.array_equal(test.X, other.X)


def test_train_and_test_are_disjoint_and_cover_the_data():
    ds = make()
    train, test, _ = holdout_split(ds, SplitParams(), seed=0)
    h_train, h_test = set(row_hashes(train.X)), set(row_hashes(test.X))
    assert not h_train & h_test and len(h_train | h_test) == len(ds.y)


def duplicated(n_copies=6):
    ds = make()
    X = np.concatenate([ds.X, np.repeat(ds.X[:1], n_copies, axis=0)])
    y = np.concatenate([ds.y, np.repeat(ds.y[:1], n_copies)])
    return Dataset(X, y, ds.classes, "test")


def test_duplicates_across_the_split_are_removed_and_counted():
    train, test, report = holdout_split(duplicated(), SplitParams(test_size=0.3, duplicates="remove"), 0)
    dup = report["duplicates"]
    assert dup["across"] > 0 and dup["removed"] == dup["across"]
    assert not set(row_hashes(train.X)) & set(row_hashes(test.X))
    assert report["n_test"] == len(test.y)


def test_duplicates_refused_or_kept_on_request():
    with pytest.raises(UserError, match="exact copies of training samples"):
        holdout_split(duplicated(), SplitParams(test_size=0.3, duplicates="refuse"), 0)
    _, test, report = holdout_split(duplicated(), SplitParams(test_size=0.3, duplicates="keep"), 0)
    assert report["duplicates"]["removed"] == 0 and report["duplicates"]["across"] > 0


def test_negative_zero_is_a_duplicate_of_zero():
    X = np.array([[0.0, 1.0], [-0.0, 1.0]], np.float32)
    assert row_hashes(X)[0] == row_hashes(X)[1]


def test_a_class_with_one_sample_gets_a_clear_error():
    ds = make()
    X = np.concatenate([ds.X, ds.X[:1] + 5])
    y = np.concatenate([ds.y, [3]])
    tiny = Dataset(X, y, ds.classes + ["rare"], "test")
    with pytest.raises(UserError, match="'rare' has 1"):
        holdout_split(tiny, SplitParams(), 0)


def test_groups_never_straddle_the_split():
    groups = np.repeat(np.arange(30), 2)  # pairs of samples from one "patient"
    ds = make(groups=groups)
    ds.y = np.repeat(np.arange(3), 20)
    train, test, report = holdout_split(ds, SplitParams(test_size=0.2), 0)
    assert report["grouped"] and not set(train.groups) & set(test.groups)


def test_one_class_and_too_few_groups_are_refused():
    with pytest.raises(UserError, match=r"split: the data set has 1 class\(es\) \['c0'\]; classification needs"):
        holdout_split(make(n_classes=1), SplitParams(), 0)
    ds = make(groups=np.arange(60) % 3)
    with pytest.raises(UserError, match="split.group_column has 3 distinct value.* needs at least 5 groups"):
        holdout_split(ds, SplitParams(test_size=0.2), 0)


def test_a_grouped_split_that_loses_a_class_names_the_group_column():
    # Class c2 lives in one group only: it can be on one side of the split, never both.
    groups = np.r_[np.arange(40) % 8, np.full(20, 99)]
    with pytest.raises(UserError, match=r"grouped hold-out \(split.group_column\) leaves the (train|test) side "
                                        r"with no sample of class\(es\) \['c2'\]"):
        holdout_split(make(groups=groups), SplitParams(test_size=0.2), 0)
