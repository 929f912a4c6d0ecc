"""Where data comes from: ``params.data.source`` names one loader; each returns a :class:`Dataset`.

Nothing here downloads anything. ``digits`` ships with scikit-learn; ``csv``, ``imagefolder`` and ``mnist``
read files the user has already placed at ``data.path``; ``synthetic`` is generated from ``seed``;
``modular`` is the whole table of ``(a op b) mod p`` (no randomness).
Every loader records provenance in ``Dataset.extra`` (input files and their sha256, counts), which ends up
in meta.json next to the arrays. A bad input is a :class:`UserError` that names the file (and the column
or row) and says what was expected.
"""

from __future__ import annotations

import gzip
import hashlib
import tempfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dlrig.data.dataset import Dataset
from dlrig.errors import UserError
from dlrig.params import AddingParams, DataParams, ModularParams, SyntheticParams


def load_source(cfg: DataParams, seed: int, group_column: str | None = None) -> Dataset:
    """Load the data set ``cfg.source`` names (``seed`` is used only by ``synthetic``).

    ``group_column`` (``split.group_column``) applies to csv tables only.
    """
    if group_column is not None and cfg.source != "csv":
        raise UserError(f"split.group_column is for csv tables only (data.source is {cfg.source!r})")
    if cfg.source == "digits":
        return load_digits()
    if cfg.source == "csv":
        return load_csv(
            cfg.path,
            label_column=cfg.csv.label_column,
            delimiter=cfg.csv.delimiter,
            group_column=group_column,
        )
    if cfg.source == "imagefolder":
        return load_imagefolder(cfg.path, size=cfg.image.size, grayscale=cfg.image.grayscale)
    if cfg.source == "mnist":
        return load_mnist(cfg.path)
    if cfg.source == "synthetic":
        return make_synthetic(cfg.synthetic, seed)
    if cfg.source == "adding":
        return make_adding(cfg.adding, seed)
    if cfg.source == "modular":
        return make_modular(cfg.modular)
    raise UserError(f"data.source: unknown source {cfg.source!r}")  # params already refuse this


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------- digits
def load_digits() -> Dataset:
    """scikit-learn's bundled 8x8 digits: X ``[1797, 1, 8, 8]`` with raw values 0..16."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    return Dataset(
        X=bunch.images[:, None].astype(np.float32),
        y=bunch.target.astype(np.int64),
        classes=[str(k) for k in range(10)],
        source="digits",
        extra={"origin": "sklearn.datasets.load_digits (bundled with scikit-learn)", "value_range": [0, 16]},
    )


# ---------------------------------------------------------------------------------------------- csv
def _single_csv(path: Path) -> Path:
    if path.is_dir():
        found = sorted(path.glob("*.csv"))
        if len(found) != 1:
            names = [p.name for p in found]
            raise UserError(
                f"{path}: data.path is a directory, so it must hold exactly one *.csv file (found "
                f"{len(found)}{': ' + ', '.join(names) if names else ''})"
            )
        return found[0]
    if not path.is_file():
        raise UserError(f"{path}: file not found (data.source is csv: put the table there or set data.path)")
    return path


def _class_names(values: np.ndarray) -> list[str]:
    """String names of sorted unique label values; integral floats (1.0) read as integers ("1")."""
    names = []
    for v in values:
        if isinstance(v, (float, np.floating)) and float(v).is_integer():
            names.append(str(int(v)))
        else:
            names.append(str(v))
    return names


def _read_table(path: str | Path, delimiter: str) -> tuple[Path, Any]:
    """The one CSV file ``path`` names (or the one in a directory) as a DataFrame of strings/numbers."""
    import pandas as pd

    file = _single_csv(Path(path))
    if file.stat().st_size == 0:
        raise UserError(f"{file}: the file is empty (expected a header row and data rows)")
    try:
        df = pd.read_csv(file, sep=delimiter)
    except pd.errors.EmptyDataError:
        raise UserError(f"{file}: the file holds no table (expected a header row and data rows)") from None
    except pd.errors.ParserError as exc:
        reason = str(exc).strip()
        raise UserError(f"{file}: not a readable CSV table with delimiter {delimiter!r} ({reason})") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{file}: not a text (UTF-8) CSV file ({exc})") from None
    df.columns = [str(c) for c in df.columns]
    return file, df


def _line_of(i: int) -> int:
    """A row's line number as a user sees it in an editor: the header is line 1."""
    return int(i) + 2


def _check_labels_present(file: Path, labels: Any, label_column: str) -> None:
    missing = np.flatnonzero(labels.isna().to_numpy())
    if len(missing):
        shown = ", ".join(str(_line_of(i)) for i in missing[:5])
        raise UserError(
            f"{file}: column {label_column!r} has {len(missing)} missing label(s) (line(s) {shown}"
            f"{', ...' if len(missing) > 5 else ''}); every row needs a label"
        )


def _feature_matrix(file: Path, df: Any, features: list[str], label_column: str) -> np.ndarray:
    """The feature columns as float32; text in a feature column is refused (NaN and inf load as they are)."""
    import pandas as pd

    X = np.empty((len(df), len(features)), dtype=np.float32)
    for j, col in enumerate(features):
        values = df[col]
        if not (pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)):
            numeric = pd.to_numeric(values, errors="coerce")
            bad = np.flatnonzero((numeric.isna() & values.notna()).to_numpy())
            if len(bad):
                i = bad[0]
                raise UserError(
                    f"{file}: feature column {col!r} is not numeric: line {_line_of(i)} holds "
                    f"{values.iloc[i]!r} ({len(bad)} such value(s)); every column but {label_column!r} "
                    "must hold numbers"
                )
            values = numeric
        X[:, j] = values.to_numpy(dtype=np.float64, na_value=np.nan)
    return X


def _is_numeric_labels(labels: Any) -> bool:
    import pandas as pd

    return bool(pd.api.types.is_numeric_dtype(labels) and not pd.api.types.is_bool_dtype(labels))


def load_csv(
    path: str | Path, label_column: str = "label", delimiter: str = ",", group_column: str | None = None
) -> Dataset:
    """A table with one label column; every other column (but ``group_column``) is a numeric feature.

    Labels become ``0..K-1`` in sorted order of their values (numeric order for numeric labels); the
    original values are kept as ``classes``. NaN and inf features are loaded as they are (the validate
    stage reports them); text in a feature column is refused here.
    """
    import pandas as pd

    file, df = _read_table(path, delimiter)
    columns = list(df.columns)
    if label_column not in columns:
        raise UserError(
            f"{file}: no label column {label_column!r} (data.csv.label_column); columns found: {columns}"
            + (f" -- is data.csv.delimiter {delimiter!r} right?" if len(columns) == 1 else "")
        )
    if group_column is not None and group_column not in columns:
        raise UserError(f"{file}: no group column {group_column!r}; columns found: {columns}")
    if len(df) == 0:
        raise UserError(f"{file}: the table has a header but no data rows")
    features = [c for c in columns if c not in (label_column, group_column)]
    if not features:
        raise UserError(f"{file}: no feature columns (only {columns})")

    labels = df[label_column]
    _check_labels_present(file, labels, label_column)
    X = _feature_matrix(file, df, features, label_column)

    if _is_numeric_labels(labels):
        uniques = np.unique(labels.to_numpy())
        y = np.searchsorted(uniques, labels.to_numpy())
        classes = _class_names(uniques)
    else:
        as_text = labels.astype(str).to_numpy()
        uniques = np.unique(as_text)
        y = np.searchsorted(uniques, as_text)
        classes = [str(v) for v in uniques]
    if len(classes) < 2:
        raise UserError(
            f"{file}: label column {label_column!r} (data.csv.label_column) holds one class "
            f"({classes[0]!r}) in all {len(df)} rows; classification needs at least 2 classes"
        )

    groups = None
    extra: dict[str, Any] = {
        "files": [{"name": file.name, "sha256": sha256_file(file)}],
        "label_column": label_column,
        "feature_columns": features,
    }
    if group_column is not None:
        g = df[group_column]
        if g.isna().any():
            i = int(np.flatnonzero(g.isna().to_numpy())[0])
            raise UserError(f"{file}: group column {group_column!r} is empty on line {_line_of(i)}")
        codes, uniq = pd.factorize(g.astype(str), sort=True)
        groups = codes.astype(np.int64)
        extra["group_column"] = group_column
        extra["n_groups"] = len(uniq)
    return Dataset(X=X, y=y, classes=classes, source="csv", groups=groups, extra=extra)


def read_csv_rows(
    path: str | Path, label_column: str = "label", delimiter: str = ","
) -> tuple[np.ndarray, list[str] | None]:
    """New rows to predict: every column but ``label_column`` is a feature (checked as :func:`load_csv`
    does); the labels, when that column is there, come back as class names (``1.0`` reads as ``"1"``)."""
    file, df = _read_table(path, delimiter)
    if len(df) == 0:
        raise UserError(f"{file}: the table has a header but no data rows")
    columns = list(df.columns)
    features = [c for c in columns if c != label_column]
    if not features:
        raise UserError(f"{file}: no feature columns (only {columns})")
    X = _feature_matrix(file, df, features, label_column)
    if label_column not in columns:
        return X, None
    labels = df[label_column]
    _check_labels_present(file, labels, label_column)
    names = _class_names(labels.to_numpy()) if _is_numeric_labels(labels) else labels.astype(str).tolist()
    return X, names


# -------------------------------------------------------------------------------------- imagefolder
def load_imagefolder(
    path: str | Path, size: list[int] | tuple[int, int] = (28, 28), grayscale: bool = True
) -> Dataset:
    """One sub-folder per class (torchvision ImageFolder); X ``[N, C, H, W]`` in 0..1."""
    from torchvision import datasets

    root = Path(path)
    if not root.is_dir():
        raise UserError(f"{root}: directory not found (data.source is imagefolder: one sub-folder per class)")
    class_dirs = _class_dirs(root)
    if len(class_dirs) < 2:
        found = f"one class folder ({class_dirs[0]!r})" if class_dirs else "no class folders"
        raise UserError(
            f"{root}: {found}; data.source imagefolder needs at least 2 class sub-folders "
            "(data.path/<class>/<image>), one per class"
        )
    empty = [name for name in class_dirs if not _has_image(root / name)]
    if empty:
        raise UserError(
            f"{root}: class folder(s) {empty} hold no images (.png, .jpg, ...); every class sub-folder "
            "needs at least one"
        )

    class _VisibleImageFolder(datasets.ImageFolder):
        """torchvision's ImageFolder, but hidden folders (.ipynb_checkpoints, .git) are no class."""

        def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
            names = _class_dirs(Path(directory))
            return names, {name: i for i, name in enumerate(names)}

    try:
        folder = _VisibleImageFolder(str(root))
    except FileNotFoundError as exc:  # kept for other torchvision versions; checked above
        raise UserError(f"{root}: {exc}") from None
    per_class = np.bincount([t for _, t in folder.samples], minlength=len(folder.classes))

    transform = _image_transform(size, grayscale)

    n_channels = 1 if grayscale else 3
    X = np.empty((len(folder.samples), n_channels, size[0], size[1]), dtype=np.float32)
    digest = hashlib.sha256()
    for i, (file, _) in enumerate(folder.samples):
        try:
            image = folder.loader(file)  # PIL, converted to RGB
            X[i] = transform(image).numpy()
        except Exception as exc:  # PIL raises several types (OSError, SyntaxError, ValueError) for bad files
            raise UserError(f"{file}: not a readable image ({type(exc).__name__}: {exc})") from None
        rel = Path(file).relative_to(root).as_posix()
        digest.update(f"{rel}\0{sha256_file(file)}\n".encode())
    return Dataset(
        X=X,
        y=np.asarray(folder.targets, dtype=np.int64),
        classes=list(folder.classes),
        source="imagefolder",
        extra={
            "images_per_class": {c: int(n) for c, n in zip(folder.classes, per_class, strict=True)},
            "image_size": [int(size[0]), int(size[1])],
            "grayscale": bool(grayscale),
            "files_sha256": digest.hexdigest(),  # over every relative path and its content
        },
    )


def _image_transform(size: Sequence[int], grayscale: bool) -> Any:
    """Resize to ``size`` ([height, width]), optionally to one gray channel, to a tensor in 0..1."""
    from torchvision import transforms

    steps = [transforms.Resize(list(size))]
    if grayscale:
        steps.append(transforms.Grayscale(num_output_channels=1))
    steps.append(transforms.ToTensor())
    return transforms.Compose(steps)


def read_image_files(
    path: str | Path, size: Sequence[int], grayscale: bool
) -> tuple[np.ndarray, list[str] | None, list[str]]:
    """New images to predict, read exactly as :func:`load_imagefolder` reads training images.

    ``path`` holds either one sub-folder per class (the labels are the folder names; a subset of the
    classes is fine) or the images themselves (no labels). Returns X ``[N, C, H, W]``, the labels (or
    None) and each image's path relative to ``path``.
    """
    from torchvision.datasets.folder import IMG_EXTENSIONS, default_loader

    root = Path(path)
    if not root.is_dir():
        raise UserError(f"{root}: directory not found")

    def images(folder: Path, deep: bool) -> list[Path]:
        found = folder.rglob("*") if deep else folder.iterdir()
        return sorted(p for p in found if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS
                      and not any(part.startswith(".") for part in p.relative_to(root).parts))

    files, labels = images(root, deep=False), None
    if not files:
        by_class = [(name, images(root / name, deep=True)) for name in _class_dirs(root)]
        files = [f for _, fs in by_class for f in fs]
        labels = [name for name, fs in by_class for _ in fs]
    if not files:
        raise UserError(f"{root}: no images (.png, .jpg, ...) in it or in class sub-folders")
    transform = _image_transform(size, grayscale)
    X = np.empty((len(files), 1 if grayscale else 3, size[0], size[1]), dtype=np.float32)
    for i, file in enumerate(files):
        try:
            X[i] = transform(default_loader(str(file))).numpy()  # PIL, converted to RGB (as ImageFolder)
        except Exception as exc:  # PIL raises several types (OSError, SyntaxError, ValueError) for bad files
            raise UserError(f"{file}: not a readable image ({type(exc).__name__}: {exc})") from None
    return X, labels, [f.relative_to(root).as_posix() for f in files]


def _class_dirs(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _has_image(folder: Path) -> bool:
    """Whether torchvision's ImageFolder finds at least one image file under ``folder``."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    return any(p.suffix.lower() in IMG_EXTENSIONS and p.is_file() for p in folder.rglob("*"))


# -------------------------------------------------------------------------------------------- mnist
_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "t10k": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _find_idx(root: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (root / name).is_file():
            return root / name
    return None


def _read_idx_bytes(file: Path) -> bytes:
    try:
        if file.suffix == ".gz":
            with gzip.open(file, "rb") as fh:
                return fh.read()
        return file.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise UserError(f"{file}: not a readable gzip file ({exc})") from None


def _check_idx(file: Path, data: bytes, magic: int, ndim: int) -> int:
    """Check an IDX header (big-endian dims; MNIST stores unsigned bytes) and length; return the count."""
    header = 4 + 4 * ndim
    if len(data) < header:
        raise UserError(
            f"{file}: truncated IDX file ({len(data)} bytes, shorter than its {header}-byte header)"
        )
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise UserError(
            f"{file}: not an MNIST IDX file (magic number {found}, expected {magic}: unsigned bytes, "
            f"{ndim} dimension(s))"
        )
    dims = [int.from_bytes(data[4 + 4 * k: 8 + 4 * k], "big") for k in range(ndim)]
    expected = header + int(np.prod(dims))
    if len(data) != expected:
        state = "truncated" if len(data) < expected else "longer than its header says"
        raise UserError(
            f"{file}: {state}: header says {dims} ({expected} bytes) but the file holds {len(data)} bytes"
        )
    return dims[0]


def _read_idx(file: Path, kind: str) -> np.ndarray:
    """Read one IDX file with torchvision's reader, decompressing ``.gz`` to a temporary file first."""
    from torchvision.datasets.mnist import read_image_file, read_label_file

    data = _read_idx_bytes(file)
    _check_idx(file, data, magic=2051 if kind == "images" else 2049, ndim=3 if kind == "images" else 1)
    reader = read_image_file if kind == "images" else read_label_file
    try:
        if file.suffix != ".gz":
            return reader(str(file)).numpy()
        with tempfile.TemporaryDirectory(prefix="dlrig-mnist-") as tmp:
            plain = Path(tmp) / file.stem
            plain.write_bytes(data)
            return reader(str(plain)).numpy()
    except (AssertionError, RuntimeError, TypeError, ValueError) as exc:  # torchvision's own checks
        raise UserError(f"{file}: not a readable MNIST {kind} file ({exc})") from None


def load_mnist(path: str | Path) -> Dataset:
    """MNIST-format IDX files already at ``path`` (plain or .gz); train and t10k are concatenated.

    The t10k rows come last and are recorded as ``extra["mnist_official_test_rows"] = [start, stop]``
    (in meta.json): the split stage keeps them as the test split (:func:`official_test_rows`) unless
    ``data.mnist.use_official_test`` is false, which pools them with train.
    """
    root = Path(path)
    expected = [stem + "[.gz]" for pair in _MNIST_FILES.values() for stem in pair]
    if not root.is_dir():
        raise UserError(
            f"{root}: directory not found (data.source is mnist: expected the IDX files {expected})"
        )
    found = {stem: _find_idx(root, stem) for pair in _MNIST_FILES.values() for stem in pair}
    present = sorted(p.name for p in root.iterdir() if p.is_file())
    missing_train = [s for s in _MNIST_FILES["train"] if found[s] is None]
    t10k = [found[s] for s in _MNIST_FILES["t10k"]]
    if missing_train or (any(t10k) and not all(t10k)):
        missing = [s for s, f in found.items() if f is None and (s in missing_train or any(t10k))]
        raise UserError(
            f"{root}: missing MNIST file(s) {missing}; expected {expected} (the t10k pair is optional); "
            f"found {present}"
        )

    parts = [name for name in _MNIST_FILES if all(found[s] is not None for s in _MNIST_FILES[name])]
    images, labels, files, rows = [], [], [], {}
    start = 0
    for name in parts:
        img_file, lbl_file = (found[s] for s in _MNIST_FILES[name])
        img, lbl = _read_idx(img_file, "images"), _read_idx(lbl_file, "labels")
        if len(img) != len(lbl):
            raise UserError(
                f"{root}: {img_file.name} holds {len(img)} images but {lbl_file.name} holds {len(lbl)} labels"
            )
        if len(lbl) == 0:
            raise UserError(f"{lbl_file}: holds no labels (its header says 0 samples)")
        if lbl.max() > 9:
            raise UserError(f"{lbl_file}: labels must be digits 0..9 (found {int(lbl.max())})")
        images.append(img)
        labels.append(lbl)
        files += [{"name": f.name, "sha256": sha256_file(f)} for f in (img_file, lbl_file)]
        rows[name] = [start, start + len(lbl)]
        start += len(lbl)

    y = np.concatenate(labels).astype(np.int64)
    present = np.unique(y)
    if len(present) < 2:
        raise UserError(
            f"{root}: every label in {[f['name'] for f in files if 'labels' in f['name']]} is "
            f"{int(present[0])}; classification needs at least 2 classes"
        )
    X = np.concatenate(images).astype(np.float32)[:, None]
    extra: dict[str, Any] = {"files": files, "value_range": [0, 255], "mnist_train_rows": rows["train"]}
    if "t10k" in rows:
        extra["mnist_official_test_rows"] = rows["t10k"]
    return Dataset(
        X=X,
        y=y,
        classes=[str(k) for k in range(10)],
        source="mnist",
        extra=extra,
    )


def read_idx_images(path: str | Path) -> tuple[np.ndarray, list[str] | None]:
    """New images to predict from one IDX images file (``*-images-idx3-ubyte``, plain or .gz), read as
    :func:`load_mnist` reads them (X ``[N, 1, H, W]``, raw 0..255); the labels, as class names, come from
    the matching ``*-labels-idx1-ubyte`` file beside it when there is one."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"{file}: file not found")
    name = file.name
    if "images-idx3-ubyte" not in name:
        raise UserError(f"{file}: an IDX input is an images file named like t10k-images-idx3-ubyte[.gz]")
    X = _read_idx(file, "images").astype(np.float32)[:, None]
    stem = name.replace("images-idx3-ubyte", "labels-idx1-ubyte").removesuffix(".gz")
    labels_file = _find_idx(file.parent, stem)
    if labels_file is None:
        return X, None
    y = _read_idx(labels_file, "labels")
    if len(y) != len(X):
        raise UserError(f"{file.parent}: {name} holds {len(X)} images but {labels_file.name} holds {len(y)} "
                        "labels")
    return X, [str(int(v)) for v in y]


def official_test_rows(ds: Dataset) -> np.ndarray | None:
    """The rows of the data set's own test split (MNIST's t10k), or None when it has none."""
    rows = ds.extra.get("mnist_official_test_rows")
    if rows is None:
        return None
    start, stop = (int(v) for v in rows)
    if not 0 < start < stop <= len(ds.y):
        raise UserError(
            f"meta.json: mnist_official_test_rows {list(rows)} do not fit the {len(ds.y)} rows of the data "
            "set; the two files come from different runs: rerun prepare"
        )
    return np.arange(start, stop)


# ---------------------------------------------------------------------------------------- synthetic
def _smooth(field: np.ndarray, passes: int = 2) -> np.ndarray:
    """Blur the last two axes with a wrap-around 3x3 box filter (spatial structure for CNNs)."""
    for _ in range(passes):
        field = sum(
            np.roll(np.roll(field, dy, axis=-2), dx, axis=-1) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
        ) / 9.0
    return field


def make_synthetic(cfg: SyntheticParams, seed: int) -> Dataset:
    """Class centres plus Gaussian noise; the same seed gives the same arrays.

    Each class has a centre of norm ``class_sep`` in a random direction (a smooth random pattern when
    ``image_side > 0``), so two centres lie about ``class_sep * sqrt(2)`` apart whatever the dimension;
    ``noise`` is the standard deviation added to every feature. ``class_sep / noise`` sets the difficulty.
    """
    rng = np.random.default_rng(seed)
    k, n = cfg.n_classes, cfg.n_samples
    if cfg.image_side > 0:
        shape: tuple[int, ...] = (1, cfg.image_side, cfg.image_side)
        centres = _smooth(rng.standard_normal((k, *shape)))
    else:
        shape = (cfg.n_features,)
        centres = rng.standard_normal((k, *shape))
    flat = centres.reshape(k, -1)
    flat = flat - flat.mean(axis=1, keepdims=True) if flat.shape[1] > 1 else flat
    flat = cfg.class_sep * flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-12)
    centres = flat.reshape(k, *shape)

    y = rng.permutation(np.arange(n) % k)  # balanced classes, shuffled
    X = centres[y] + cfg.noise * rng.standard_normal((n, *shape))
    return Dataset(
        X=X.astype(np.float32),
        y=y.astype(np.int64),
        classes=[str(c) for c in range(k)],
        source="synthetic",
        extra={"synthetic": cfg.model_dump(), "seed": int(seed)},
    )


# ------------------------------------------------------------------------------------------- adding
def make_adding(cfg: AddingParams, seed: int) -> Dataset:
    """The adding problem as classification: does the sum of the two marked values exceed 1?

    Each sample is ``length`` (T) steps of (value ~ U(0, 1), marker in {0, 1}); exactly two markers are 1,
    one at a uniform step of the first half and one of the second half (Hochreiter & Schmidhuber 1997,
    Le et al. 2015). The label is 1 when the two marked values add up to more than 1: the sum of two
    U(0, 1) exceeds 1 with probability 1/2, so the classes are balanced in expectation and chance is 50%.
    A model must carry the first marked value across T/2 to T steps of distractors: a long-range memory
    test. The second value alone gives 75%; at T=100 a plain RNN stalls near 85% while an LSTM with the
    same budget reaches 99% (tests/data/test_adding.py); at T=50 both solve it.

    X is ``[N, 1, T, 2]`` (an "image" of one channel, T rows, 2 columns) because every stage takes tables
    ``[N, F]`` or images ``[N, C, H, W]``: ``model.name: rnn`` with ``sequence: rows`` reads it as T steps
    of 2 features; an mlp sees the 2T numbers flattened; a cnn a 1-channel T x 2 image.
    """
    rng = np.random.default_rng(seed)
    n, t = cfg.n_samples, cfg.length
    values = rng.uniform(0.0, 1.0, size=(n, t))
    half = t // 2
    first = rng.integers(0, half, size=n)
    second = rng.integers(half, t, size=n)
    markers = np.zeros((n, t))
    rows = np.arange(n)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    total = values[rows, first] + values[rows, second]
    X = np.stack([values, markers], axis=-1)[:, None]  # [N, 1, T, 2]
    return Dataset(
        X=X.astype(np.float32),
        y=(total > 1.0).astype(np.int64),
        classes=["0", "1"],  # integer names, so validate.labels: [0, 1] can state them
        source="adding",
        extra={"adding": cfg.model_dump(), "seed": int(seed), "value_range": [0, 1],
               "classes": {"0": "marked sum <= 1", "1": "marked sum > 1"},
               "layout": "[N, 1, T, 2]: T steps of (value, marker)"},
    )


# ------------------------------------------------------------------------------------------ modular
_MODULAR_OPS = {"add": "+", "sub": "-", "mul": "*", "div": "/"}


def make_modular(cfg: ModularParams) -> Dataset:
    """The whole table of ``a op b mod p`` (Power et al. 2022, the grokking task): no randomness, no seed.

    X is ``[N, 2]``: the two operands as integer codes 0..p-1 (stored as float32, like every table; a
    model that embeds them casts back with ``X.long()``), y is the result, p classes named "0".."p-1".
    ``div`` is ``a * b^-1 mod p`` over ``b != 0`` (p is prime, checked in params), so N = p(p-1); the other
    ops cover all p * p pairs. Which pairs are training rows is the split's (or a study's) business.
    """
    p = cfg.p
    a, b = (g.ravel() for g in np.meshgrid(np.arange(p), np.arange(p), indexing="ij"))
    if cfg.op == "add":
        y = (a + b) % p
    elif cfg.op == "sub":
        y = (a - b) % p
    elif cfg.op == "mul":
        y = (a * b) % p
    else:
        a, b = a[b != 0], b[b != 0]
        y = (a * np.array([pow(int(v), -1, p) for v in b])) % p  # Fermat: b^-1 exists for prime p
    return Dataset(
        X=np.stack([a, b], axis=1).astype(np.float32),
        y=y.astype(np.int64),
        classes=[str(k) for k in range(p)],
        source="modular",
        extra={"modular": cfg.model_dump(), "value_range": [0, p - 1],
               "layout": f"[N, 2]: integer codes (a, b) with y = (a {_MODULAR_OPS[cfg.op]} b) mod {p}"},
    )
