"""Predict with a saved model: a checkpoint plus new data -> class probabilities per row (``dlrig predict``).

The input is read by the loaders of :mod:`dlrig.data.sources`, as training data is: an ``.npz`` (``X``, and
``y`` as class indices when labelled), a CSV table (every column a feature but the label column, which
may be absent), an image folder (one sub-folder per class, or the images themselves; read at the
checkpoint's sample shape) or an IDX images file (its ``labels`` file beside it is used when present).

Before any prediction the input is checked against the checkpoint, each failure one line: a sample of
another shape names the shape the model expects (a flat row with the right number of values is
reshaped, with a note: 64 CSV columns for an ``[1, 8, 8]`` model); a label the model has no class for
names the model's classes; NaN or inf values are refused.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dlrig.data.dataset import check_finite
from dlrig.data.sources import read_csv_rows, read_idx_images, read_image_files
from dlrig.errors import UserError
from dlrig.io import load_npz
from dlrig.train.checkpoint import load_model
from dlrig.train.predict import predict_proba

INPUT_KINDS = "an .npz or .npy file, a CSV table, an image folder or an IDX images file (*-images-idx3-ubyte)"


@dataclass
class Predictions:
    proba: np.ndarray  # [N, K], the model's class probabilities
    classes: list[str]  # the model's class names, in probability-column order
    labels: list[str] | None = None  # the input's labels as class names, when it has them
    files: list[str] | None = None  # image inputs: each row's file, relative to the folder
    notes: list[str] = field(default_factory=list)  # what was done to fit the input (a reshape)

    @property
    def predicted(self) -> list[str]:
        return [self.classes[k] for k in self.proba.argmax(1)]

    def accuracy(self) -> tuple[int, int] | None:
        """(correct, labelled rows), or None without labels."""
        if self.labels is None:
            return None
        return sum(p == t for p, t in zip(self.predicted, self.labels, strict=True)), len(self.labels)

    def to_csv(self) -> str:
        """``row``, (``file``), ``predicted``, one ``proba_<class>`` column per class, (``label``,
        ``correct``); probabilities with 6 decimals."""
        buffer = io.StringIO()
        out = csv.writer(buffer, lineterminator="\n")
        out.writerow(["row", *(["file"] if self.files else []), "predicted",
                      *(f"proba_{c}" for c in self.classes), *(["label", "correct"] if self.labels else [])])
        for i, (pred, row) in enumerate(zip(self.predicted, self.proba, strict=True)):
            label = [self.labels[i], int(pred == self.labels[i])] if self.labels else []
            out.writerow([i, *([self.files[i]] if self.files else []), pred, *(f"{p:.6f}" for p in row),
                          *label])
        return buffer.getvalue()


def predict_file(model_path: str | Path, data_path: str | Path, *, label_column: str = "label",
                 delimiter: str = ",") -> Predictions:
    """Load the checkpoint, read and check ``data_path`` against it, and predict every row."""
    model, ckpt = load_model(model_path)
    shape, classes = [int(v) for v in ckpt["sample_shape"]], [str(c) for c in ckpt["classes"]]
    X, labels, files = read_input(data_path, shape, classes, label_column=label_column, delimiter=delimiter)
    X, notes = fit_shape(X, shape, data_path, model_path)
    check_finite(X, data_path)
    check_labels(labels, classes, data_path, model_path)
    return Predictions(predict_proba(model, X), classes, labels, files, notes)


def read_input(path: str | Path, shape: list[int], classes: list[str], *, label_column: str = "label",
               delimiter: str = ",") -> tuple[np.ndarray, list[str] | None, list[str] | None]:
    """(X, labels as class names or None, image files or None) from any input kind ``dlrig predict`` takes."""
    path = Path(path)
    if path.is_dir():
        if len(shape) != 3 or shape[0] not in (1, 3):
            raise UserError(f"{path}: an image folder gives [C, H, W] images, but the model takes samples of "
                            f"shape {shape}; pass a CSV table or an .npz instead")
        return read_image_files(path, size=shape[1:], grayscale=shape[0] == 1)
    if not path.is_file():
        raise UserError(f"{path}: no such file or folder (dlrig predict reads {INPUT_KINDS})")
    if "images-idx3-ubyte" in path.name:
        return (*read_idx_images(path), None)
    suffix = path.suffix.lower()
    if suffix in (".npz", ".npy"):
        return (*_read_arrays(path, classes), None)
    if suffix in (".csv", ".tsv", ".txt"):
        return (*read_csv_rows(path, label_column=label_column, delimiter=delimiter), None)
    kind = suffix or "(no suffix)"
    raise UserError(f"{path}: unknown input kind {kind!r}; dlrig predict reads {INPUT_KINDS}")


def _read_arrays(path: Path, classes: list[str]) -> tuple[np.ndarray, list[str] | None]:
    """An .npz with ``X`` (and ``y``: class indices 0..K-1, as the split stage writes them), or an .npy X."""
    if path.suffix.lower() == ".npy":
        try:
            X = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise UserError(f"{path}: not a readable .npy file ({exc})") from None
        return _numbers(X, path), None
    arrays = load_npz(path, required=("X",))
    X, y = _numbers(arrays["X"], path), arrays.get("y")
    if y is None:
        return X, None
    if y.ndim != 1 or len(y) != len(X) or not np.issubdtype(y.dtype, np.integer):
        raise UserError(f"{path}: y must hold one integer class index per row of X ({len(X)}; got {y.dtype} "
                        f"{list(y.shape)})")
    if len(y) and (y.min() < 0 or y.max() >= len(classes)):
        raise UserError(f"{path}: y holds class indices {int(y.min())}..{int(y.max())}, but the model has "
                        f"{len(classes)} classes (0..{len(classes) - 1}: {classes})")
    return X, [classes[k] for k in y]


def _numbers(X: np.ndarray, path: Path) -> np.ndarray:
    if X.ndim < 2 or not (np.issubdtype(X.dtype, np.number) or X.dtype == bool):
        raise UserError(f"{path}: X must be numbers, one sample per row (got {X.dtype} {list(X.shape)})")
    return X.astype(np.float32)


def fit_shape(X: np.ndarray, shape: list[int], data: str | Path,
              model: str | Path) -> tuple[np.ndarray, list[str]]:
    """X with the model's sample shape: as it is, or reshaped when each sample holds as many values (with a
    note); anything else is one line naming both shapes."""
    if not len(X):
        raise UserError(f"{data}: holds no samples to predict")
    got = list(X.shape[1:])
    if got == shape:
        return X, []
    if int(np.prod(got)) == int(np.prod(shape)):
        return (np.ascontiguousarray(X.reshape(len(X), *shape)),
                [f"{data}: samples of shape {got} reshaped to the model's sample shape {shape}"])
    raise UserError(f"{data}: samples of shape {got} ({int(np.prod(got))} values), but {model} expects "
                    f"samples of shape {shape} ({int(np.prod(shape))} values)")


def check_labels(labels: list[str] | None, classes: list[str], data: str | Path, model: str | Path) -> None:
    """Refuse labels the model has no class for, naming a few and the model's classes."""
    if labels is None:
        return
    unknown = sorted(set(labels) - set(classes))
    if unknown:
        shown = ", ".join(repr(u) for u in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        raise UserError(f"{data}: label(s) {shown} are not among the classes {model} was trained on "
                        f"({classes}); check the label column or the class folder names")
