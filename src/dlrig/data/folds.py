"""Cross-validation folds: stratified (and grouped, when the data set has groups), seeded, as positions.

The nested-CV driver, the detect stage and the studies split their rows here: the same rows, n_splits and
seed give the same folds wherever they are made.
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from dlrig.errors import UserError

Folds = list[tuple[np.ndarray, np.ndarray]]


def make_folds(y: np.ndarray, groups: np.ndarray | None, rows: np.ndarray, n_splits: int, seed: int) -> Folds:
    """Stratified (and grouped, when groups are given) folds over ``rows``, as positions into y."""
    y_rows = y[rows]
    counts = np.bincount(y_rows)
    present = counts[counts > 0]
    if present.min() < n_splits:
        k = int(np.flatnonzero(counts == present.min())[0])
        raise UserError(
            f"cv: class {k} has {present.min()} training samples in a set of {len(rows)}, fewer than the "
            f"{n_splits} folds asked for; lower cv.outer_folds / cv.inner_folds or collect more data"
        )
    if groups is not None:
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        parts = splitter.split(np.zeros(len(rows)), y_rows, groups[rows])
    else:
        splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        parts = splitter.split(np.zeros(len(rows)), y_rows)
    return [(rows[a], rows[b]) for a, b in parts]


__all__ = ["Folds", "make_folds"]
