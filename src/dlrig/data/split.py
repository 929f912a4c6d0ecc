"""The hold-out split: stratified, seeded, and refusing to score on a sample the model trained on.

Exact duplicates (the same pixels / feature values) that land on both sides of the split leak: the test
score then partly measures memory. ``split.duplicates`` decides: ``remove`` drops those rows from the test
side, ``refuse`` stops with an error, ``keep`` only counts them. Counts go into ``reports/split.json``.

A data set that comes with its own test split (MNIST's t10k files) keeps it when the caller passes its rows
as ``test_rows``: then no rows are drawn, and the duplicates rule applies the same way.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

from dlrig.data.dataset import Dataset
from dlrig.errors import UserError
from dlrig.params import SplitParams


def row_hashes(X: np.ndarray) -> np.ndarray:
    """One digest per sample of its exact bytes (float32, C order): equal rows, equal digests."""
    flat = np.ascontiguousarray(X, dtype=np.float32).reshape(len(X), -1)
    # -0.0 and 0.0 are the same value with different bytes; normalise before hashing.
    flat = flat + np.float32(0.0)
    return np.array([hashlib.blake2b(row.tobytes(), digest_size=16).hexdigest() for row in flat])


def _n_duplicates(hashes: np.ndarray) -> int:
    """Rows that repeat an earlier row."""
    return int(len(hashes) - len(np.unique(hashes)))


def _check_splittable(ds: Dataset, test_size: float | None) -> None:
    if ds.n_classes < 2:
        raise UserError(
            f"split: the data set has {ds.n_classes} class(es) {ds.classes}; classification needs at "
            "least 2 (check data.path and the label column / class folders)"
        )
    counts = np.bincount(ds.y, minlength=ds.n_classes)
    small = [(ds.classes[k], int(c)) for k, c in enumerate(counts) if c < 2]
    if small:
        shown = ", ".join(f"{name!r} has {c}" for name, c in small)
        raise UserError(
            f"split: a stratified hold-out needs at least 2 samples per class ({shown}); "
            "collect more data or drop the class"
        )
    if test_size is None:  # a given test split: its sides are checked per class after the split
        return
    n_test = int(np.ceil(test_size * len(ds.y)))
    if n_test < ds.n_classes or len(ds.y) - n_test < ds.n_classes:
        raise UserError(
            f"split.test_size={test_size} gives {n_test} test and {len(ds.y) - n_test} train samples for "
            f"{ds.n_classes} classes; each side needs at least one sample per class"
        )


def holdout_split(
    ds: Dataset, cfg: SplitParams, seed: int, test_rows: np.ndarray | None = None
) -> tuple[Dataset, Dataset, dict[str, Any]]:
    """Split ``ds`` into (train, test, report). Groups, when present, never straddle the split.

    ``test_rows`` (the data set's official test split) are the test side as they are; ``split.test_size``
    and ``seed`` are then unused.
    """
    official = test_rows is not None
    _check_splittable(ds, None if official else cfg.test_size)
    index = np.arange(len(ds.y))
    if official:
        test_idx = np.unique(np.asarray(test_rows, dtype=np.int64))
        if not len(test_idx) or test_idx[0] < 0 or test_idx[-1] >= len(index) or len(test_idx) == len(index):
            raise ValueError(f"test_rows must be some, not all, of rows 0..{len(index) - 1}")
        train_idx = np.setdiff1d(index, test_idx)
    elif ds.groups is not None:
        n_splits = max(2, int(round(1 / cfg.test_size)))
        n_groups = len(np.unique(ds.groups))
        if n_groups < n_splits:
            raise UserError(
                f"split: split.group_column has {n_groups} distinct value(s), too few for a grouped hold-out "
                f"of split.test_size={cfg.test_size} (it needs at least {n_splits} groups): use a column "
                "with more groups, a larger test_size, or set split.group_column=null"
            )
        folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        train_idx, test_idx = next(folds.split(ds.X, ds.y, ds.groups))
    else:
        train_idx, test_idx = train_test_split(
            index, test_size=cfg.test_size, random_state=seed, stratify=ds.y
        )
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)

    hashes = row_hashes(ds.X)
    across_mask = np.isin(hashes[test_idx], hashes[train_idx])
    n_across = int(across_mask.sum())
    removed = 0
    if n_across and cfg.duplicates == "refuse":
        raise UserError(
            f"split: {n_across} test sample(s) are exact copies of training samples "
            f"(e.g. row {int(test_idx[across_mask][0])}); set split.duplicates to remove or keep"
        )
    if n_across and cfg.duplicates == "remove":
        test_idx = test_idx[~across_mask]
        removed = n_across

    train, test = ds.subset(train_idx), ds.subset(test_idx)
    for side, part in (("train", train), ("test", test)):
        missing = sorted(set(range(ds.n_classes)) - set(np.unique(part.y).tolist()))
        if not missing:
            continue
        names = [ds.classes[k] for k in missing]
        if official:
            raise UserError(
                f"split: the data set's own test split (data.mnist.use_official_test) leaves the {side} side "
                f"with no sample of class(es) {names}; set data.mnist.use_official_test=false to re-split"
            )
        if ds.groups is not None:
            raise UserError(
                f"split: the grouped hold-out (split.group_column) leaves the {side} side with no sample of "
                f"class(es) {names}: each class needs rows in several groups; use another group column or "
                "set split.group_column=null"
            )
        raise UserError(
            f"split: after removing duplicates the {side} side has no sample of class(es) {names}; "
            "use split.duplicates=keep or a larger split.test_size"
        )
    report = {
        "n_train": int(len(train_idx)),
        "n_test": int(len(test_idx)),
        "test_size": None if official else cfg.test_size,  # None: the data set's own test split
        "official_test": official,
        "grouped": ds.groups is not None,
        "duplicates": {
            "policy": cfg.duplicates,
            "within_train": _n_duplicates(hashes[train_idx]),
            "within_test": _n_duplicates(hashes[test_idx]),
            "across": n_across,
            "removed": removed,
        },
        "class_counts": {"train": train.class_counts(), "test": test.class_counts()},
    }
    return train, test, report
