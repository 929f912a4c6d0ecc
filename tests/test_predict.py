"""``dlrig predict``: a checkpoint plus new data (npz, CSV, image folder, IDX) -> class probabilities."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dlrig.cli import main as cli
from dlrig.data.sources import load_digits, load_imagefolder
from dlrig.errors import UserError
from dlrig.evaluate.predict import predict_file
from dlrig.params import parse_params
from dlrig.train import fit, predict_proba
from dlrig.train.checkpoint import save_model
from tests.data.test_sources import idx_bytes

CLASSES = [str(k) for k in range(10)]


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory) -> tuple[Path, torch.nn.Module, np.ndarray, np.ndarray]:
    """A small MLP on 400 digits ([1, 8, 8], classes '0'..'9'), saved as train saves it; 60 other rows."""
    ds = load_digits()
    config = parse_params({"model": {"hidden": 32, "depth": 1}, "optim": {"lr": 0.01},
                           "train": {"epochs": 8, "batch_size": 64, "early_stopping": None}}).fit_config()
    result = fit(ds.X[:400], ds.y[:400], 10, config, seed=0)
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_model(path, result.model, config, sample_shape=[1, 8, 8], classes=CLASSES, seed=0)
    return path, result.model, ds.X[400:460], ds.y[400:460]


def rows_of(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def check_rows(text: str, proba: np.ndarray, labels: list[str] | None) -> None:
    """The CSV holds the model's own probabilities (6 decimals), its argmax, and the labels if any."""
    rows = rows_of(text)
    assert len(rows) == len(proba) and [int(r["row"]) for r in rows] == list(range(len(proba)))
    written = np.array([[float(r[f"proba_{c}"]) for c in CLASSES] for r in rows])
    np.testing.assert_allclose(written, proba, atol=5e-7)
    assert [r["predicted"] for r in rows] == [CLASSES[k] for k in proba.argmax(1)]
    if labels is None:
        assert "label" not in rows[0] and "correct" not in rows[0]
    else:
        assert [r["label"] for r in rows] == labels
        assert [r["correct"] for r in rows] == [str(int(r["predicted"] == r["label"])) for r in rows]


def test_npz_rows(digits_model, tmp_path):
    path, model, X, y = digits_model
    np.savez(tmp_path / "new.npz", X=X, y=y)
    result = predict_file(path, tmp_path / "new.npz")
    expected = predict_proba(model, X)
    np.testing.assert_array_equal(result.proba, expected)
    check_rows(result.to_csv(), expected, [str(v) for v in y])
    correct, n = result.accuracy()
    assert n == 60 and correct == int((expected.argmax(1) == y).sum()) and result.notes == []
    np.savez(tmp_path / "unlabelled.npz", X=X)
    assert predict_file(path, tmp_path / "unlabelled.npz").accuracy() is None


def test_flat_csv_rows_are_reshaped_with_a_note(digits_model, tmp_path, capsys):
    path, model, X, y = digits_model
    table = tmp_path / "digits.csv"
    header = [f"px{i}" for i in range(64)] + ["label"]
    body = [",".join([*(f"{v:g}" for v in row.ravel()), str(label)]) for row, label in zip(X, y, strict=True)]
    table.write_text("\n".join([",".join(header), *body]) + "\n")
    out = tmp_path / "pred.csv"
    cli(["predict", str(path), str(table), "--out", str(out)])
    expected = predict_proba(model, X)
    check_rows(out.read_text(), expected, [str(v) for v in y])
    err = capsys.readouterr().err
    assert "note: " in err and "samples of shape [64] reshaped to the model's sample shape [1, 8, 8]" in err
    accuracy = (expected.argmax(1) == y).mean()
    assert f"accuracy {accuracy:.6f} ({int((expected.argmax(1) == y).sum())} of 60 labelled rows)" in err
    # Without a label column every column is a feature, and the CSV goes to stdout.
    table.write_text("\n".join([",".join(header[:64]), *(b.rsplit(",", 1)[0] for b in body)]) + "\n")
    cli(["predict", str(path), str(table)])
    check_rows(capsys.readouterr().out, expected, None)


def write_png(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8), mode="L").save(path)


def test_image_folder_with_and_without_class_folders(digits_model, tmp_path):
    path, model, X, y = digits_model
    pixels = (X[:6, 0] * 15).clip(0, 255)  # digits 0..16 as gray levels
    names = ["0", "3", "0", "3", "3", "0"]
    for i, (img, name) in enumerate(zip(pixels, names, strict=True)):
        write_png(tmp_path / "labelled" / name / f"img{i}.png", img)
        write_png(tmp_path / "bare" / f"img{i}.png", img)
    result = predict_file(path, tmp_path / "labelled")
    oracle = load_imagefolder(tmp_path / "labelled", size=(8, 8), grayscale=True)  # how train reads images
    expected = predict_proba(model, oracle.X)
    np.testing.assert_array_equal(result.proba, expected)
    assert result.labels == [oracle.classes[k] for k in oracle.y]
    check_rows(result.to_csv(), expected, result.labels)
    assert [r["file"] for r in rows_of(result.to_csv())][:2] == ["0/img0.png", "0/img2.png"]
    bare = predict_file(path, tmp_path / "bare")
    assert bare.labels is None and bare.files == [f"img{i}.png" for i in range(6)]


def test_idx_images_with_their_labels_file(digits_model, tmp_path):
    path, model, X, y = digits_model
    images = X[:, 0].astype(np.uint8)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(images))
    result = predict_file(path, tmp_path / "t10k-images-idx3-ubyte")
    assert result.labels is None
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(y.astype(np.uint8)))
    result = predict_file(path, tmp_path / "t10k-images-idx3-ubyte")
    expected = predict_proba(model, images.astype(np.float32)[:, None])
    np.testing.assert_array_equal(result.proba, expected)
    check_rows(result.to_csv(), expected, [str(v) for v in y])


@pytest.mark.parametrize("make, message", [
    (lambda d: np.savez(d / "x.npz", X=np.zeros((3, 63), np.float32)),
     r"x.npz: samples of shape \[63\] \(63 values\), but .*model.pt expects samples of shape \[1, 8, 8\] "
     r"\(64 values\)"),
    (lambda d: np.savez(d / "x.npz", X=np.zeros((3, 64), np.float32), y=np.array([0, 1, 12])),
     r"y holds class indices 0..12, but the model has 10 classes"),
    (lambda d: (d / "x.csv").write_text("a,b,label\n1,2,cat\n"),
     r"x.csv: samples of shape \[2\] \(2 values\), but .* expects samples of shape \[1, 8, 8\]"),
    (lambda d: (d / "x.csv").write_text(",".join(f"p{i}" for i in range(64)) + ",label\n"
                                        + ",".join(["1"] * 64) + ",cat\n"),
     r"x.csv: label\(s\) 'cat' are not among the classes .* trained on \(\['0', '1'"),
    (lambda d: (d / "x.csv").write_text(",".join(f"p{i}" for i in range(64)) + "\n" + ",".join(["nan"] * 64) + "\n"),
     r"x.csv: 64 NaN feature value\(s\)"),
    (lambda d: (d / "x.json").write_text("{}"), r"x.json: unknown input kind '.json'; dlrig predict reads"),
    (lambda d: None, r"x.npz: no such file or folder"),
])
def test_a_bad_input_is_one_line_naming_what_the_model_expects(digits_model, tmp_path, capsys, make, message):
    path = digits_model[0]
    make(tmp_path)
    target = next((p for p in tmp_path.iterdir() if p.name.startswith("x.")), tmp_path / "x.npz")
    with pytest.raises(UserError, match=message):
        predict_file(path, target)
    with pytest.raises(SystemExit) as exit_:
        cli(["predict", str(path), str(target)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1


def test_an_image_folder_for_a_table_model_is_refused(tmp_path):
    config = parse_params({"model": {"hidden": 4, "depth": 1}}).fit_config()
    from dlrig.models import build_model

    save_model(tmp_path / "m.pt", build_model(config.model, [5], 2), config, sample_shape=[5],
               classes=["a", "b"], seed=0)
    write_png(tmp_path / "imgs" / "a" / "1.png", np.zeros((8, 8)))
    with pytest.raises(UserError, match=r"an image folder gives \[C, H, W\] images, but the model takes samples "
                                        r"of shape \[5\]"):
        predict_file(tmp_path / "m.pt", tmp_path / "imgs")


def test_predict_on_the_test_split_gives_evaluate_s_accuracy_exactly(tmp_path, capsys):
    """The real train -> evaluate on tiny image data, then `dlrig predict` on the test split (npz, and the
    same rows as a flat CSV)."""
    from tests.stages.test_stages import TINY, stage, write_params

    params = {**TINY, "data": {"source": "synthetic", "synthetic": {"n_samples": 240, "n_classes": 3,
                                                                    "image_side": 8}},
              "validate": {**TINY["validate"], "sample_shape": [1, 8, 8]},
              "labels": {"detect": {"enabled": False}},
              "compute": {"cache_dir": None}}
    p = str(write_params(tmp_path / "params.yaml", params))
    raw, meta, train, test = (str(tmp_path / n) for n in ("raw.npz", "meta.json", "train.npz", "test.npz"))
    model, reports = str(tmp_path / "model.pt"), tmp_path / "reports"
    stage("prepare")(["--params", p, "--out", raw, "--meta", meta])
    stage("validate")(["--params", p, "--data", raw, "--meta", meta, "--out", str(reports / "validation.json"),
                       "--summary", str(reports / "validation.md")])
    stage("split")(["--params", p, "--data", raw, "--meta", meta, "--validation", str(reports / "validation.json"),
                    "--train", train, "--test", test, "--report", str(reports / "split.json")])
    stage("labels")(["--params", p, "--train", train, "--meta", meta, "--out", str(tmp_path / "labels.npz"),
                     "--report", str(reports / "labels.json")])
    stage("train")(["--params", p, "--train", str(tmp_path / "labels.npz"), "--meta", meta, "--model", model,
                    "--logdir", str(reports / "train"), "--cvdir", str(reports / "cv"),
                    "--run-info", str(tmp_path / "run.json")])
    stage("evaluate")(["--params", p, "--train", str(tmp_path / "labels.npz"), "--test", test, "--meta", meta,
                       "--model", model, "--cv", str(reports / "cv/summary.json"),
                       "--metrics", str(reports / "metrics.json"), "--plots", str(reports / "plots")])
    accuracy = json.loads((reports / "metrics.json").read_text())["test"]["accuracy"]
    capsys.readouterr()

    cli(["predict", model, test, "--out", str(tmp_path / "pred.csv")])
    rows = rows_of((tmp_path / "pred.csv").read_text())
    assert round(np.mean([int(r["correct"]) for r in rows]), 6) == accuracy
    assert f"accuracy {accuracy:.6f}" in capsys.readouterr().err

    arrays = np.load(test)
    flat = tmp_path / "test.csv"
    flat.write_text("\n".join([",".join([*(f"f{i}" for i in range(64)), "label"])]
                              + [",".join([*(repr(float(v)) for v in x.ravel()), str(label)])
                                 for x, label in zip(arrays["X"], arrays["y"], strict=True)]) + "\n")
    cli(["predict", model, str(flat), "--out", str(tmp_path / "pred_flat.csv")])
    assert (tmp_path / "pred_flat.csv").read_text() == (tmp_path / "pred.csv").read_text()
    assert "reshaped to the model's sample shape [1, 8, 8]" in capsys.readouterr().err
