"""Label noise, injected on purpose and measured: how much, and between which classes.

Three standard corruptions of a clean label vector, each flipping a label with probability ``rate``:

- ``symmetric``  -- to a uniformly chosen *other* class (so the realised flip fraction is ~ ``rate``);
- ``pairflip``   -- class k to (k + 1) mod K (Han et al. 2018, co-teaching);
- ``asymmetric`` -- class k to ``mapping[k]``; classes not in the mapping are never touched
  (Patrini et al. 2017: on digits 7->1, 2->7, 5<->6, 3->8). The realised overall rate is then below
  ``rate``: only the rows of mapped classes are candidates.

Which rows flip depends only on ``seed`` and the number of rows, not on the kind or rate: row i flips when
its uniform draw is below ``rate``. So the same seed with a larger rate flips a superset of the rows -- a
noise sweep changes one thing at a time.

The noise is injected into the *training* split only (the labels stage); the clean labels and the mask of
flipped rows are kept beside the noisy ones so detection and robustness can be measured against truth.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from dlrig.errors import UserError

NoiseKind = Literal["symmetric", "pairflip", "asymmetric"]
NOISE_KINDS: tuple[str, ...] = ("symmetric", "pairflip", "asymmetric")


def check_labels(y: np.ndarray, n_classes: int, name: str = "y") -> np.ndarray:
    """``y`` as a 1-d int64 array of class indices in ``0..n_classes-1``; a clear error otherwise."""
    y = np.asarray(y)
    if n_classes < 2:
        raise ValueError(f"n_classes must be >= 2 (got {n_classes})")
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-d (got shape {list(y.shape)})")
    if len(y) and not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class indices (got dtype {y.dtype})")
    if len(y) and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"{name} must lie in 0..{n_classes - 1} (got {y.min()}..{y.max()})")
    return y.astype(np.int64, copy=False)


def _target_classes(
    y: np.ndarray, n_classes: int, kind: str, offsets: np.ndarray, mapping: dict[int, int] | None
) -> tuple[np.ndarray, np.ndarray]:
    """(class each row would flip to, whether the row may flip at all) for one kind of noise."""
    if kind == "symmetric":
        return (y + offsets) % n_classes, np.ones(len(y), bool)
    if kind == "pairflip":
        return (y + 1) % n_classes, np.ones(len(y), bool)
    if not mapping:
        raise UserError("labels.noise.kind=asymmetric needs labels.noise.mapping, e.g. {7: 1, 3: 8}")
    table = np.arange(n_classes)
    for src, dst in mapping.items():
        src, dst = int(src), int(dst)
        if not (0 <= src < n_classes and 0 <= dst < n_classes):
            raise UserError(f"labels.noise.mapping {src}->{dst} names a class outside 0..{n_classes - 1}")
        if src == dst:
            raise UserError(f"labels.noise.mapping {src}->{dst} maps a class to itself")
        table[src] = dst
    return table[y], table[y] != y


def inject_noise(
    y: np.ndarray,
    n_classes: int,
    kind: NoiseKind,
    rate: float,
    seed: int,
    mapping: dict[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(y_noisy, flipped_mask)``: each eligible label flips with probability ``rate`` (see module doc).

    ``flipped_mask[i]`` is ``y_noisy[i] != y[i]``. Exactly reproducible for a given seed; the realised
    rate is ``flipped_mask.mean()`` (see :func:`noise_summary` for the per-class picture).
    """
    y = check_labels(y, n_classes)
    if kind not in NOISE_KINDS:
        raise ValueError(f"kind must be one of {list(NOISE_KINDS)} (got {kind!r})")
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be in [0, 1] (got {rate})")
    if mapping is not None and kind != "asymmetric":
        raise UserError(f"labels.noise.mapping is only used with kind asymmetric (got kind {kind!r})")
    rng = np.random.default_rng(seed)
    # Both draws are made whatever the kind, so the rows that flip depend on the seed alone.
    draw = rng.random(len(y))
    offsets = rng.integers(1, n_classes, size=len(y))  # 1..K-1: never the class itself
    target, eligible = _target_classes(y, n_classes, kind, offsets, mapping)
    flip = eligible & (draw < rate)
    y_noisy = np.where(flip, target, y).astype(np.int64)
    return y_noisy, y_noisy != y


def noise_transition_matrix(
    y_clean: np.ndarray, y_noisy: np.ndarray, n_classes: int, normalize: bool = True
) -> np.ndarray:
    """``T[i, j] = P(noisy label j | clean label i)``, or the raw counts with ``normalize=False``.

    A class with no clean samples has a row of zeros (there is nothing to estimate), not NaN.
    """
    y_clean = check_labels(y_clean, n_classes, "y_clean")
    y_noisy = check_labels(y_noisy, n_classes, "y_noisy")
    if len(y_clean) != len(y_noisy):
        raise ValueError(f"y_clean has {len(y_clean)} rows but y_noisy has {len(y_noisy)}")
    counts = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(counts, (y_clean, y_noisy), 1)
    if not normalize:
        return counts
    rows = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)


def noise_summary(y_clean: np.ndarray, y_noisy: np.ndarray, n_classes: int) -> dict[str, Any]:
    """JSON-ready report of the realised noise: overall and per-class flip rates, transition matrix."""
    counts = noise_transition_matrix(y_clean, y_noisy, n_classes, normalize=False)
    n_per_class = counts.sum(axis=1)
    flipped_per_class = n_per_class - np.diag(counts)
    n = int(counts.sum())
    return {
        "n": n,
        "n_flipped": int(flipped_per_class.sum()),
        "rate": round(float(flipped_per_class.sum() / n), 6) if n else 0.0,
        "per_class_rate": [
            round(float(f / c), 6) if c else None for f, c in zip(flipped_per_class, n_per_class, strict=True)
        ],
        "transition": np.round(noise_transition_matrix(y_clean, y_noisy, n_classes), 6).tolist(),
    }


__all__ = [
    "NOISE_KINDS",
    "NoiseKind",
    "check_labels",
    "inject_noise",
    "noise_summary",
    "noise_transition_matrix",
]
