"""Loaders on tiny files the tests write themselves: csv, image folder, MNIST IDX (plain and .gz)."""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dlrig.data.sources import load_csv, load_source, make_synthetic
from dlrig.errors import UserError
from dlrig.params import DataParams, SyntheticParams


def data_params(**kw) -> DataParams:
    return DataParams.model_validate(kw)


# ------------------------------------------------------------------------------------------- digits
def test_digits_shape_range_and_classes():
    ds = load_source(data_params(source="digits"), seed=0)
    assert ds.X.shape == (1797, 1, 8, 8) and ds.X.dtype == np.float32
    assert ds.y.dtype == np.int64 and ds.X.min() == 0 and ds.X.max() == 16
    assert ds.classes == [str(k) for k in range(10)] and ds.source == "digits"
    assert ds.class_counts()["0"] == 178


# ---------------------------------------------------------------------------------------------- csv
def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_numeric_labels_keep_numeric_order(tmp_path):
    f = write(tmp_path / "t.csv", "a,b,label\n1,2,10\n3,4,2\n5,6,10\n7,8.5,-1\n")
    ds = load_source(data_params(source="csv", path=str(f)), seed=0)
    assert ds.X.shape == (4, 2) and ds.X.dtype == np.float32
    np.testing.assert_array_equal(ds.X[3], [7, 8.5])
    assert ds.classes == ["-1", "2", "10"]  # numeric order, not "10" < "2"
    np.testing.assert_array_equal(ds.y, [2, 1, 2, 0])
    assert ds.extra["files"] == [{"name": "t.csv", "sha256": hashlib.sha256(f.read_bytes()).hexdigest()}]
    assert ds.extra["feature_columns"] == ["a", "b"]


def test_csv_string_labels_delimiter_and_directory(tmp_path):
    write(tmp_path / "only.csv", "species;x;y\ncat;1;2\ndog;3;4\ncat;5;6\n")
    cfg = data_params(source="csv", path=str(tmp_path), csv={"label_column": "species", "delimiter": ";"})
    ds = load_source(cfg, seed=0)
    assert ds.classes == ["cat", "dog"]
    np.testing.assert_array_equal(ds.y, [0, 1, 0])
    np.testing.assert_array_equal(ds.X[:, 0], [1, 3, 5])


def test_csv_nan_and_inf_features_load_as_is(tmp_path):
    f = write(tmp_path / "t.csv", "a,b,label\n1,inf,0\n2,,1\nnan,3,0\n")
    ds = load_csv(f)
    assert np.isinf(ds.X[0, 1]) and np.isnan(ds.X[1, 1]) and np.isnan(ds.X[2, 0])


def test_csv_group_column_is_not_a_feature(tmp_path):
    f = write(tmp_path / "t.csv", "patient,a,label\np2,1,0\np1,2,1\np2,3,1\n")
    ds = load_csv(f, group_column="patient")
    assert ds.X.shape == (3, 1)
    np.testing.assert_array_equal(ds.groups, [1, 0, 1])
    assert ds.extra["n_groups"] == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "empty"),
        ("a,b,label\n", "no data rows"),
        ("a,b,label\n1,2,0\n1,2,0,9\n", "not a readable CSV"),
        ('a,"b\n1,2\n', "not a readable CSV"),
        ("a,b,klass\n1,2,0\n", "no label column 'label'.*\\['a', 'b', 'klass'\\]"),
        ("a,b,label\n1,2,0\n1,oops,1\n", "feature column 'b' is not numeric: line 3 holds 'oops'"),
        ("a,b,label\n1,2,x\n3,4,x\n", "label column 'label' \\(data.csv.label_column\\) holds one class"),
        ("a,b,label\n1,2,0\n1,2,\n3,4,1\n", "1 missing label.*line\\(s\\) 3"),
        ("label\n1\n", "no feature columns"),
    ],
)
def test_csv_errors_name_the_file_and_problem(tmp_path, text, expected):
    f = write(tmp_path / "bad.csv", text)
    with pytest.raises(UserError, match=expected) as err:
        load_csv(f)
    assert str(f) in str(err.value)


def test_csv_missing_file_and_ambiguous_directory(tmp_path):
    with pytest.raises(UserError, match="file not found"):
        load_csv(tmp_path / "nope.csv")
    with pytest.raises(UserError, match="exactly one \\*.csv file \\(found 0\\)"):
        load_csv(tmp_path)
    write(tmp_path / "a.csv", "x,label\n1,0\n")
    write(tmp_path / "b.csv", "x,label\n1,0\n")
    with pytest.raises(UserError, match="found 2: a.csv, b.csv"):
        load_csv(tmp_path)


# -------------------------------------------------------------------------------------- imagefolder
def make_image_folder(root: Path) -> None:
    """Three classes; 'red' images are pure red, 'blue' pure blue, 'gray' mid-gray; sizes differ."""
    colours = {"red": (255, 0, 0), "blue": (0, 0, 255), "gray": (128, 128, 128)}
    for k, (name, rgb) in enumerate(colours.items()):
        (root / name).mkdir(parents=True)
        for i in range(2 + k):
            Image.new("RGB", (10 + i, 12), rgb).save(root / name / f"{i}.png")
    Image.new("L", (5, 5), 128).save(root / "gray" / "single_channel.png")  # a grayscale file too


def test_imagefolder_rgb_and_grayscale(tmp_path):
    make_image_folder(tmp_path / "imgs")
    rgb = load_source(data_params(source="imagefolder", path=str(tmp_path / "imgs"),
                                  image={"size": [6, 4], "grayscale": False}), seed=0)
    assert rgb.classes == ["blue", "gray", "red"]  # sorted folder names
    assert rgb.X.shape == (2 + 3 + 5, 3, 6, 4) and rgb.X.dtype == np.float32
    assert rgb.extra["images_per_class"] == {"blue": 3, "gray": 5, "red": 2}
    red = rgb.X[rgb.y == 2]
    np.testing.assert_allclose(red[:, 0], 1.0)  # ToTensor scale: 255 -> 1.0
    np.testing.assert_allclose(red[:, 1:], 0.0)
    np.testing.assert_allclose(rgb.X[rgb.y == 1], 128 / 255, atol=1e-6)

    gray = load_source(data_params(source="imagefolder", path=str(tmp_path / "imgs"),
                                   image={"size": [7, 7], "grayscale": True}), seed=0)
    assert gray.X.shape == (10, 1, 7, 7)
    assert 0.0 <= gray.X.min() and gray.X.max() <= 1.0
    np.testing.assert_allclose(gray.X[gray.y == 1], 128 / 255, atol=1e-6)
    assert gray.extra["files_sha256"] == rgb.extra["files_sha256"]


def test_imagefolder_errors(tmp_path):
    cfg = lambda p: data_params(source="imagefolder", path=str(p))  # noqa: E731
    with pytest.raises(UserError, match="directory not found"):
        load_source(cfg(tmp_path / "missing"), 0)
    (tmp_path / "flat").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "flat" / "x.png")
    with pytest.raises(UserError, match="no class folders"):
        load_source(cfg(tmp_path / "flat"), 0)

    make_image_folder(tmp_path / "imgs")
    (tmp_path / "imgs" / "zebra").mkdir()
    (tmp_path / "imgs" / "zebra" / "notes.txt").write_text("not an image")
    with pytest.raises(UserError, match=r"imgs: class folder\(s\) \['zebra'\] hold no images"):
        load_source(cfg(tmp_path / "imgs"), 0)
    (tmp_path / "imgs" / "zebra" / "notes.txt").unlink()
    (tmp_path / "imgs" / "zebra").rmdir()
    (tmp_path / "imgs" / ".ipynb_checkpoints").mkdir()  # hidden folders are not classes
    assert load_source(cfg(tmp_path / "imgs"), 0).classes == ["blue", "gray", "red"]

    (tmp_path / "one" / "cat").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(tmp_path / "one" / "cat" / "x.png")
    with pytest.raises(UserError, match=r"one class folder \('cat'\); .*at least 2 class sub-folders"):
        load_source(cfg(tmp_path / "one"), 0)

    bad = tmp_path / "imgs" / "red" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nthis is not really a png")
    with pytest.raises(UserError, match="broken.png: not a readable image"):
        load_source(cfg(tmp_path / "imgs"), 0)


# -------------------------------------------------------------------------------------------- mnist
def idx_bytes(array: np.ndarray) -> bytes:
    """The real IDX format: magic (0, 0, 0x08 = unsigned byte, ndim), big-endian dims, then the data."""
    magic = 0x0800 + array.ndim  # 2051 for images, 2049 for labels
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(root: Path, n_train: int = 6, n_test: int = 4, gz: bool = False, test: bool = True):
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    parts = {"train": n_train, "t10k": n_test} if test else {"train": n_train}
    arrays = {}
    for part, n in parts.items():
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        arrays[part] = (images, labels)
        for kind, arr in (("images-idx3-ubyte", images), ("labels-idx1-ubyte", labels)):
            data = idx_bytes(arr)
            name = f"{part}-{kind}"
            if gz:
                (root / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (root / name).write_bytes(data)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_reads_idx_and_concatenates(tmp_path, gz):
    arrays = write_mnist(tmp_path / "mnist", gz=gz)
    ds = load_source(data_params(source="mnist", path=str(tmp_path / "mnist")), seed=0)
    assert ds.X.shape == (10, 1, 28, 28) and ds.X.dtype == np.float32
    np.testing.assert_array_equal(ds.X[:6, 0], arrays["train"][0])
    np.testing.assert_array_equal(ds.X[6:, 0], arrays["t10k"][0])
    np.testing.assert_array_equal(ds.y, np.r_[np.arange(6), np.arange(4)])
    assert ds.extra["mnist_official_test_rows"] == [6, 10]
    assert ds.classes == [str(k) for k in range(10)]
    assert len(ds.extra["files"]) == 4 and all(len(f["sha256"]) == 64 for f in ds.extra["files"])


def test_mnist_train_only(tmp_path):
    write_mnist(tmp_path, test=False)
    ds = load_source(data_params(source="mnist", path=str(tmp_path)), seed=0)
    assert len(ds.y) == 6 and "mnist_official_test_rows" not in ds.extra


def test_mnist_errors(tmp_path):
    cfg = data_params(source="mnist", path=str(tmp_path))
    (tmp_path / "readme.txt").write_text("hi")
    expected = "missing MNIST file.*train-images-idx3-ubyte.*found \\['readme.txt'\\]"
    with pytest.raises(UserError, match=expected):
        load_source(cfg, 0)

    write_mnist(tmp_path)
    img = tmp_path / "train-images-idx3-ubyte"
    img.write_bytes(img.read_bytes()[:-100])
    with pytest.raises(UserError, match="train-images-idx3-ubyte: truncated"):
        load_source(cfg, 0)

    write_mnist(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(5, dtype=np.uint8)))
    with pytest.raises(UserError, match="holds 6 images but train-labels-idx1-ubyte holds 5 labels"):
        load_source(cfg, 0)

    write_mnist(tmp_path)
    img.write_bytes(b"\x00\x00\x08\x01" + img.read_bytes()[4:])  # labels' magic on an image file
    with pytest.raises(UserError, match="magic number 2049, expected 2051"):
        load_source(cfg, 0)

    write_mnist(tmp_path)
    for part, n in (("train", 6), ("t10k", 4)):
        (tmp_path / f"{part}-labels-idx1-ubyte").write_bytes(idx_bytes(np.full(n, 3, dtype=np.uint8)))
    with pytest.raises(UserError, match="every label in .* is 3; classification needs at least 2 classes"):
        load_source(cfg, 0)


def test_mnist_corrupt_gzip(tmp_path):
    write_mnist(tmp_path, gz=True)
    f = tmp_path / "t10k-labels-idx1-ubyte.gz"
    f.write_bytes(f.read_bytes()[:15])
    with pytest.raises(UserError, match="t10k-labels-idx1-ubyte.gz: not a readable gzip"):
        load_source(data_params(source="mnist", path=str(tmp_path)), 0)


# ---------------------------------------------------------------------------------------- synthetic
def test_synthetic_is_deterministic_and_balanced():
    cfg = SyntheticParams(n_samples=90, n_classes=3, n_features=5)
    a, b, c = make_synthetic(cfg, 1), make_synthetic(cfg, 1), make_synthetic(cfg, 2)
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.y, b.y)
    assert not np.array_equal(a.X, c.X)
    assert a.X.shape == (90, 5) and a.X.dtype == np.float32
    assert a.class_counts() == {"0": 30, "1": 30, "2": 30}


def test_synthetic_images_shape():
    ds = load_source(data_params(source="synthetic", synthetic={"n_samples": 40, "image_side": 6}), seed=3)
    assert ds.X.shape == (40, 1, 6, 6)


@pytest.mark.parametrize(
    ("image_side", "class_sep", "at_least"), [(0, 1.5, 0.55), (8, 1.5, 0.55), (0, 4.0, 0.9), (8, 4.0, 0.9)]
)
def test_synthetic_is_learnable(image_side, class_sep, at_least):
    """A small MLP beats chance (1/3) on held-out synthetic data, and more so with wider class_sep."""
    import torch

    cfg = SyntheticParams(n_samples=600, n_classes=3, n_features=20, image_side=image_side,
                          class_sep=class_sep)
    ds = make_synthetic(cfg, seed=0)
    X = torch.from_numpy(ds.X.reshape(len(ds.y), -1))
    y = torch.from_numpy(ds.y)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(X.shape[1], 32), torch.nn.ReLU(), torch.nn.Linear(32, 3))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(X[:400]), y[:400]).backward()
        opt.step()
    accuracy = (net(X[400:]).argmax(1) == y[400:]).float().mean().item()
    assert accuracy > at_least
