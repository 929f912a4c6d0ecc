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
    def load(cls, npz_path: str | Path, meta_path: str | Path) -> Dataset:
        arrays = load_npz(npz_path)
        meta = load_json(meta_path)
        try:
            classes, source = list(meta["classes"]), str(meta["source"])
        except KeyError as exc:
            raise UserError(f"{meta_path}: missing key {exc}") from None
        extra = {k: v for k, v in meta.items() if k not in _DERIVED_META}
        return cls(
            X=arrays["X"], y=arrays["y"], classes=classes, source=source, groups=arrays.get("groups"),
            extra=extra,
        )


_DERIVED_META = {
    "source", "n_samples", "sample_shape", "n_classes", "classes", "class_counts", "has_groups",
}
