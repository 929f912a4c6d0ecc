"""Test-set classification metrics, as a JSON-stable dict, and the plot data DVC draws from them.

Every number comes from ``sklearn.metrics`` (the oracle), computed with the full label set ``0..K-1`` so a
class that is absent from a small test set still has its row and column in the confusion matrix.
Floats are rounded to 6 decimals so the same predictions always give byte-identical JSON.

A class with no test samples has no recall: ``per_class_recall`` holds ``None`` (JSON ``null``) for it,
and balanced accuracy is the mean recall over the classes that do occur (as sklearn defines it).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    log_loss,
    recall_score,
)

from dlrig.io import save_json

DECIMALS = 6
# Softmax in float32 can give an exact 0 for a confidently wrong class; log(0) is -inf. Clipping at 1e-15
# (sklearn's old default eps) caps one sample's loss at ~34.5 and leaves ordinary probabilities untouched.
PROBA_EPS = 1e-15


def _round(x: float) -> float:
    return round(float(x), DECIMALS)


def _check(y_true: np.ndarray, proba: np.ndarray, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true)
    proba = np.asarray(proba, dtype=np.float64)
    k = len(classes)
    if proba.ndim != 2 or proba.shape[1] != k:
        raise ValueError(f"proba must have shape [n, {k}] for {k} classes (got {list(proba.shape)})")
    if y_true.ndim != 1 or len(y_true) != len(proba):
        raise ValueError(f"y_true must have shape [{len(proba)}] (got {list(y_true.shape)})")
    if len(y_true) == 0:
        raise ValueError("no samples to score")
    if not np.issubdtype(y_true.dtype, np.integer):
        raise ValueError(f"y_true must hold integer class indices (got dtype {y_true.dtype})")
    if y_true.min() < 0 or y_true.max() >= k:
        raise ValueError(f"y_true must lie in 0..{k - 1} (got {y_true.min()}..{y_true.max()})")
    if not np.isfinite(proba).all():
        raise ValueError("proba contains NaN or infinite values")
    return y_true.astype(np.int64), proba


def clip_proba(proba: np.ndarray) -> np.ndarray:
    """Probabilities clipped to [PROBA_EPS, 1] and renormalised so each row sums to 1."""
    clipped = np.clip(np.asarray(proba, dtype=np.float64), PROBA_EPS, 1.0)
    return clipped / clipped.sum(axis=1, keepdims=True)


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro-F1, log loss, per-class recall and the confusion matrix.

    ``proba`` is ``[n, K]`` class probabilities (rows summing to 1); the prediction is its argmax.
    ``classes`` names the K classes in index order. Confusion-matrix rows are true classes, columns are
    predicted classes. Macro-F1 averages over the classes that occur in ``y_true`` or the predictions.
    """
    y_true, proba = _check(y_true, proba, classes)
    labels = list(range(len(classes)))
    y_pred = proba.argmax(axis=1)
    present = sorted(set(np.unique(y_true).tolist()))
    seen = sorted(set(present) | set(np.unique(y_pred).tolist()))

    with warnings.catch_warnings():
        # "y_pred contains classes not in y_true": expected when a class is absent from the test set.
        warnings.simplefilter("ignore", UserWarning)
        balanced = balanced_accuracy_score(y_true, y_pred)
    recall = recall_score(y_true, y_pred, labels=labels, average=None, zero_division=np.nan)
    return {
        "accuracy": _round(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": _round(balanced),
        "macro_f1": _round(f1_score(y_true, y_pred, labels=seen, average="macro", zero_division=0)),
        "log_loss": _round(log_loss(y_true, clip_proba(proba), labels=labels)),
        "n": int(len(y_true)),
        "classes": [str(c) for c in classes],
        "per_class_recall": {
            str(name): (None if i not in present else _round(recall[i])) for i, name in enumerate(classes)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).astype(int).tolist(),
    }


def confusion_plot_records(
    y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]
) -> list[dict[str, str]]:
    """One ``{"actual": name, "predicted": name}`` row per sample, for DVC's ``confusion`` template."""
    names = [str(c) for c in classes]
    return [
        {"actual": names[int(t)], "predicted": names[int(p)]} for t, p in zip(y_true, y_pred, strict=True)
    ]


def write_plot_data(
    plots_dir: str | Path, y_true: np.ndarray, proba: np.ndarray, classes: list[str]
) -> dict[str, Path]:
    """Write ``confusion.json`` and ``per_class_recall.json`` into ``plots_dir``; return their paths.

    ``per_class_recall.json`` lists ``{"class": name, "recall": value}`` for the classes present in
    ``y_true`` (an absent class has no recall to plot).
    """
    y_true, proba = _check(y_true, proba, classes)
    plots_dir = Path(plots_dir)
    recall = classification_metrics(y_true, proba, classes)["per_class_recall"]
    paths = {
        "confusion": plots_dir / "confusion.json",
        "per_class_recall": plots_dir / "per_class_recall.json",
    }
    save_json(paths["confusion"], confusion_plot_records(y_true, proba.argmax(axis=1), classes))
    save_json(
        paths["per_class_recall"],
        [{"class": name, "recall": value} for name, value in recall.items() if value is not None],
    )
    return paths
