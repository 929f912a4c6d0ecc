"""Cross-validation folds: stratified, grouped, seeded, and a clear error when a class is too small."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import StratifiedKFold

from dlrig.data.folds import make_folds
from dlrig.errors import UserError


def test_folds_are_stratified_grouped_and_seeded():
    y = np.repeat(np.arange(3), 20)
    rows = np.arange(60)
    folds = make_folds(y, None, rows, 4, seed=1)
    assert all(np.bincount(y[te]).tolist() == [5, 5, 5] for _, te in folds)
    assert np.array_equal(np.sort(np.concatenate([te for _, te in folds])), rows)
    again = make_folds(y, None, rows, 4, seed=1)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again, strict=True))
    groups = np.repeat(np.arange(30), 2)
    for tr, te in make_folds(y, groups, rows, 3, seed=0):
        assert not set(groups[tr]) & set(groups[te])


def test_folds_over_a_subset_are_sklearns_folds_mapped_to_the_rows():
    """Oracle: the folds over some rows are StratifiedKFold's positions into those rows, as row numbers."""
    y = np.repeat(np.arange(3), 30)
    rows = np.arange(0, 90, 2)
    oracle = StratifiedKFold(n_splits=3, shuffle=True, random_state=5).split(np.zeros(len(rows)), y[rows])
    for (tr, te), (a, b) in zip(make_folds(y, None, rows, 3, seed=5), oracle, strict=True):
        assert np.array_equal(tr, rows[a]) and np.array_equal(te, rows[b])


def test_too_small_class_for_the_folds_is_a_clear_error():
    y = np.array([0] * 10 + [1] * 2)
    with pytest.raises(UserError, match="class 1 has 2 training samples .* fewer than the 3 folds"):
        make_folds(y, None, np.arange(12), 3, seed=0)
