"""The in-memory data set every stage passes along, and its on-disk form (npz + meta.json)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dlrig.errors import UserError
from dlrig.io import load_json, load_npz, save_json, save_npz


@dataclass
class Dataset:
    """``X`` float32 ``[N, C, H, W]`` (images) or ``[N, F]`` (tables); ``y`` int64 in ``0..K-1``.

    ``classes[k]`` is the original name of label ``k``; ``groups`` (optional) ties samples that must stay
    in the same fold (e.g. several images of one patient).
    """

    X: np.ndarray
    y: np.ndarray
    classes: list[str]
    source: str
    groups: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.X = np.ascontiguousarray(self.X, dtype=np.float32)
        self.y = np.asarray(self.y, dtype=np.int64)
        if self.X.ndim not in (2, 4):
            raise ValueError(f"X must be [N, F] or [N, C, H, W], got shape {self.X.shape}")
        if len(self.X) != len(self.y):
            raise ValueError(f"X has {len(self.X)} rows but y has {len(self.y)}")
        if self.groups is not None and len(self.groups) != len(self.y):
            raise ValueError(f"groups has {len(self.groups)} rows but y has {len(self.y)}")

    @property
    def sample_shape(self) -> list[int]:
        return list(self.X.shape[1:])

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.y, minlength=self.n_classes)
        return {name: int(c) for name, c in zip(self.classes, counts[: self.n_classes], strict=True)}

    def meta(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "n_samples": int(len(self.y)),
            "sample_shape": self.sample_shape,
            "n_classes": self.n_classes,
            "classes": list(self.classes),
            "class_counts": self.class_counts(),
            "has_groups": self.groups is not None,
            **self.extra,
        }

    def subset(self, index: np.ndarray) -> Dataset:
        return Dataset(
            X=self.X[index],
            y=self.y[index],
            classes=list(self.classes),
            source=self.source,
            groups=None if self.groups is None else self.groups[index],
            extra=dict(self.extra),
        )

    def save(self, npz_path: str | Path, meta_path: str | Path | None = None) -> None:
        arrays = {"X": self.X, "y": self.y}
        if self.groups is not None:
            arrays["groups"] = np.asarray(self.groups)
        save_npz(npz_path, **arrays)
        if meta_path is not None:
            save_json(meta_path, self.meta())

    @classmethod
    def load(cls, npz_path: str | Path, meta_path: str | Path, *, allow_nonfinite: bool = False) -> Dataset:
        """Read a data set written by :meth:`save`; a file that does not hold one is a :class:`UserError`.

        NaN and inf features are refused (naming the file and the count): nothing downstream can train
        on them, and ``validate.on_failure: warn`` would otherwise let them through. The validate stage,
        whose job is to report them, passes ``allow_nonfinite=True``.
        """
        arrays = load_npz(npz_path)
        meta = load_json(meta_path)
        if not isinstance(meta, dict):
            raise UserError(f"{meta_path}: expected a JSON object with 'classes' and 'source'")
        try:
            classes, source = [str(c) for c in meta["classes"]], str(meta["source"])
        except (KeyError, TypeError) as exc:
            raise UserError(f"{meta_path}: missing or malformed key {exc}; rerun prepare") from None
        extra = {k: v for k, v in meta.items() if k not in _DERIVED_META}
        X, y, groups = arrays["X"], arrays["y"], arrays.get("groups")
        _check_arrays(npz_path, meta_path, X, y, groups, len(classes))
        if not allow_nonfinite:
            check_finite(X, npz_path)
        return cls(X=X, y=y, classes=classes, source=source, groups=groups, extra=extra)


def _check_arrays(npz_path, meta_path, X: np.ndarray, y: np.ndarray, groups, n_classes: int) -> None:
    """What ``__post_init__`` asserts, as one line naming the file (a hand-made or stale npz)."""
    if X.ndim not in (2, 4) or not (np.issubdtype(X.dtype, np.number) or X.dtype == bool):
        raise UserError(
            f"{npz_path}: X must be numbers of shape [N, F] or [N, C, H, W] (got {X.dtype} {list(X.shape)})"
        )
    if y.ndim != 1 or len(y) != len(X) or (len(y) and not np.issubdtype(y.dtype, np.integer)):
        raise UserError(
            f"{npz_path}: y must hold one integer label per row of X ({len(X)}; got {y.dtype} "
            f"{list(y.shape)})"
        )
    if len(y) and (y.min() < 0 or y.max() >= n_classes):
        raise UserError(
            f"{npz_path}: labels run {int(y.min())}..{int(y.max())} but {meta_path} names {n_classes} "
            f"classes (0..{n_classes - 1}); the two files come from different runs: rerun prepare"
        )
    if groups is not None and (groups.ndim != 1 or len(groups) != len(y)):
        raise UserError(f"{npz_path}: groups has shape {list(groups.shape)} but there are {len(y)} rows")


def row_digests(X: np.ndarray) -> np.ndarray:
    """One 64-bit digest per sample (blake2b of its float32 bytes), ``int64 [N]``: what a checkpoint records
    of the rows it was trained on, so a later stage can tell whether rows it holds out were among them
    (:func:`dlrig.train.checkpoint.check_unseen`). Equal samples have equal digests, whatever their index."""
    import hashlib

    rows = np.ascontiguousarray(np.asarray(X, np.float32).reshape(len(X), -1))
    digest = lambda row: hashlib.blake2b(row.tobytes(), digest_size=8).digest()  # noqa: E731
    return np.array([int.from_bytes(digest(r), "little", signed=True) for r in rows], np.int64)


def check_finite(X: np.ndarray, where: str | Path) -> None:
    """Refuse NaN / inf features with one line: the file, how many values and samples, the key."""
    if np.isfinite(X).all():
        return
    flat = X.reshape(len(X), -1)
    nan, inf = np.isnan(flat), np.isinf(flat)
    rows = np.flatnonzero((nan | inf).any(axis=1))
    n_nan, n_inf = int(nan.sum()), int(inf.sum())
    kinds = " and ".join(t for t, n in ((f"{n_nan} NaN", n_nan), (f"{n_inf} inf", n_inf)) if n)
    raise UserError(
        f"{where}: {kinds} feature value(s) in {len(rows)} of {len(X)} samples (first: row {int(rows[0])}); "
        "nothing can train on them, and validate.on_failure: warn only let them past validation: "
        "clean or impute the data"
    )


_DERIVED_META = {
    "source", "n_samples", "sample_shape", "n_classes", "classes", "class_counts", "has_groups",
}
