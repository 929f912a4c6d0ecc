"""Bad input that used to get through: each stage refuses it with one line naming the key or file and what
is allowed, exit status 2, no traceback, and no output written or changed -- before any long work.

Each test writes a tiny bad file in tmp_path and runs the stage's ``main`` through ``dlrig.stage.run_stage``
(one runs the script in a subprocess, to see what a user sees).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from dlrig.data.dataset import Dataset
from dlrig.models import build_model
from dlrig.params import FitConfig, Params, dump_params
from dlrig.stage import run_stage
from dlrig.train.checkpoint import save_model

ROOT = Path(__file__).resolve().parents[2]


def stage(name: str):
    spec = importlib.util.spec_from_file_location(f"bad_inputs_{name}", ROOT / "stages" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


def write_params(tmp: Path, overrides: dict) -> str:
    """A whole params file: the defaults with ``overrides`` merged in key by key."""
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(merge(dump_params(Params()), overrides)))
    return str(path)


def snapshot(paths: list[Path]) -> dict[Path, bytes | None]:
    return {p: p.read_bytes() if p.is_file() else None for p in paths}


def refuses(capsys, name: str, args: list[str], outputs: list[Path], *expected: str) -> str:
    """Run a stage; assert exit 2, exactly one stderr line holding every ``expected`` text, and that no
    output appeared or changed. Returns the line."""
    before = snapshot(outputs)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_stage(stage(name), args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for text in expected:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"
    assert snapshot(outputs) == before
    for p in outputs:  # no temporary file left beside an output either
        assert not list(p.parent.glob(f".{p.name}.*")) if p.parent.is_dir() else True
    return lines[0]


def csv_table(path: Path, n: int = 40, labels=(0, 1), nan_rows=()) -> Path:
    rng = np.random.default_rng(0)
    rows = ["a,b,label"]
    for i in range(n):
        a = "" if i in nan_rows else f"{rng.normal():.4f}"
        rows.append(f"{a},{rng.normal():.4f},{labels[i % len(labels)]}")
    path.write_text("\n".join(rows) + "\n")
    return path


TABLE_VALIDATE = {"value_min": None, "value_max": None, "labels": None, "sample_shape": None,
                  "min_per_class": 2}


def prepare_args(tmp: Path, params: str) -> list[str]:
    return ["--params", params, "--out", str(tmp / "raw.npz"), "--meta", str(tmp / "meta.json")]


def validate_args(tmp: Path, params: str) -> list[str]:
    return ["--params", params, "--data", str(tmp / "raw.npz"), "--meta", str(tmp / "meta.json"),
            "--out", str(tmp / "validation.json"), "--summary", str(tmp / "validation.md")]


def split_outputs(tmp: Path) -> list[Path]:
    return [tmp / "train.npz", tmp / "test.npz", tmp / "split.json"]


def split_args(tmp: Path, params: str) -> list[str]:
    return ["--params", params, "--data", str(tmp / "raw.npz"), "--meta", str(tmp / "meta.json"),
            "--validation", str(tmp / "validation.json"), "--train", str(tmp / "train.npz"),
            "--test", str(tmp / "test.npz"), "--report", str(tmp / "split.json")]


# ----------------------------------------------------------------- 1. NaN features with on_failure: warn
def test_nan_features_let_through_by_warn_are_refused_by_split(tmp_path, capsys):
    csv_table(tmp_path / "d.csv", nan_rows=(3, 7))
    params = write_params(tmp_path, {"data": {"source": "csv", "path": str(tmp_path / "d.csv")},
                                     "validate": {**TABLE_VALIDATE, "on_failure": "warn"}})
    run_stage(stage("prepare"), prepare_args(tmp_path, params))
    run_stage(stage("validate"), validate_args(tmp_path, params))  # warns, goes on
    assert "warning:" in capsys.readouterr().err
    for p in split_outputs(tmp_path):  # outputs of an earlier run must survive the refusal
        p.write_bytes(b"old")
    refuses(capsys, "split", split_args(tmp_path, params), split_outputs(tmp_path),
            f"{tmp_path / 'raw.npz'}: 2 NaN feature value(s) in 2 of 40 samples (first: row 3)",
            "validate.on_failure: warn", "clean or impute the data")


def test_nan_features_never_reach_train(tmp_path, capsys):
    X = np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32)
    X[5, 1] = np.inf
    Dataset(X, np.arange(30) % 2, ["0", "1"], "csv").save(tmp_path / "tl.npz", tmp_path / "meta.json")
    params = write_params(tmp_path, {})
    outputs = [tmp_path / "model.pt", tmp_path / "cv" / "summary.json"]
    refuses(capsys, "train", ["--params", params, "--train", str(tmp_path / "tl.npz"),
                              "--meta", str(tmp_path / "meta.json"), "--model", str(outputs[0]),
                              "--logdir", str(tmp_path / "log"), "--cvdir", str(tmp_path / "cv")],
            outputs, f"{tmp_path / 'tl.npz'}: 1 inf feature value(s) in 1 of 30 samples")


def test_nan_refusal_as_a_user_sees_it(tmp_path):
    """The same refusal through the real script: one line on stderr, no traceback."""
    csv_table(tmp_path / "d.csv", nan_rows=(0,))
    params = write_params(tmp_path, {"data": {"source": "csv", "path": "d.csv"},
                                     "validate": {**TABLE_VALIDATE, "on_failure": "warn"}})

    def script(name: str, args: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(ROOT / "stages" / f"{name}.py"), *args], cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)

    assert script("prepare", prepare_args(tmp_path, params)).returncode == 0
    assert script("validate", validate_args(tmp_path, params)).returncode == 0
    proc = script("split", split_args(tmp_path, params))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and "raw.npz: 1 NaN feature value(s)" in proc.stderr
    assert not any(p.exists() for p in split_outputs(tmp_path))


# ------------------------------------------------------------------------------ 2. a single class
def test_single_class_csv_is_refused_by_prepare(tmp_path, capsys):
    csv_table(tmp_path / "d.csv", labels=("spam",))
    params = write_params(tmp_path, {"data": {"source": "csv", "path": str(tmp_path / "d.csv")}})
    refuses(capsys, "prepare", prepare_args(tmp_path, params), [tmp_path / "raw.npz", tmp_path / "meta.json"],
            f"{tmp_path / 'd.csv'}: label column 'label' (data.csv.label_column) holds one class ('spam') "
            "in all 40 rows; classification needs at least 2 classes")


def test_single_class_data_set_is_refused_by_split(tmp_path, capsys):
    """A hand-made (or stale) one-class data set never reaches labels."""
    X = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    Dataset(X, np.zeros(20, np.int64), ["only"], "csv").save(tmp_path / "raw.npz", tmp_path / "meta.json")
    params = write_params(tmp_path, {})
    (tmp_path / "validation.json").write_text('{"success": true}')
    refuses(capsys, "split", split_args(tmp_path, params), split_outputs(tmp_path),
            "split: the data set has 1 class(es) ['only']; classification needs at least 2")


# ------------------------------------------------------------- 3. a checkpoint of another architecture
def evaluate_setup(tmp: Path, weights_of: dict, config_says: dict, shape=(6,)) -> list[str]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(24, *shape)).astype(np.float32)
    Dataset(X, np.arange(24) % 3, ["a", "b", "c"], "test").save(tmp / "test.npz", tmp / "meta.json")
    base = FitConfig()
    model = build_model(base.with_overrides(weights_of).model, list(shape), 3)
    save_model(tmp / "model.pt", model, base.with_overrides(config_says), sample_shape=list(shape),
               classes=["a", "b", "c"], seed=0)
    (tmp / "summary.json").write_text("{}")
    params = write_params(tmp, {})
    return ["--params", params, "--train", str(tmp / "test.npz"), "--test", str(tmp / "test.npz"),
            "--meta", str(tmp / "meta.json"), "--model", str(tmp / "model.pt"), "--cv", str(tmp / "summary.json"),
            "--metrics", str(tmp / "metrics.json"), "--plots", str(tmp / "plots")]


@pytest.mark.parametrize(
    ("weights_of", "config_says", "shape", "expected"),
    [
        ({"model.hidden": 128}, {"model.hidden": 64}, (6,),
         "layer '2.weight' has shape [128, 6] in the checkpoint but [64, 6] in its config (model.name=mlp, "
         "model.hidden=64"),
        ({"model.depth": 1}, {"model.depth": 2}, (6,),
         "layer '6.weight' has shape [3, 256] in the checkpoint but [256, 256] in its config"),
        ({"model.norm": "layer"}, {"model.norm": "none"}, (6,),
         "the checkpoint holds layer '3.weight', which its config (model.name=mlp, model.hidden=256, "
         "model.depth=2) does not build (4 such tensor(s))"),
        ({"model.name": "mlp"}, {"model.name": "cnn", "model.channels": [4]}, (1, 4, 4),
         "layer '1.weight' of its config (model.name=cnn, model.hidden=256, model.depth=2, model.channels=[4], "
         "model.kernel_size=3, model.stride=1, model.padding=same, model.pooling=max, model.pool_size=2) "
         "is missing from the checkpoint, which holds '2.weight' instead"),
    ],
)
def test_checkpoint_of_another_architecture_is_refused(tmp_path, capsys, weights_of, config_says, shape,
                                                       expected):
    args = evaluate_setup(tmp_path, weights_of, config_says, shape)
    line = refuses(capsys, "evaluate", args, [tmp_path / "metrics.json", tmp_path / "plots" / "confusion.json"],
                   f"{tmp_path / 'model.pt'}: ", expected)
    assert line.endswith("rerun train")


# ------------------------------------------------------------------------ 4. an image folder, one class
def image_folder(root: Path, classes: dict[str, int], size=(8, 8)) -> Path:
    for k, (name, n) in enumerate(classes.items()):
        (root / name).mkdir(parents=True)
        for i in range(n):
            Image.new("L", size, 40 * k + i).save(root / name / f"{i}.png")
    return root


def test_image_folder_with_one_class_is_refused(tmp_path, capsys):
    root = image_folder(tmp_path / "imgs", {"cat": 3})
    params = write_params(tmp_path, {"data": {"source": "imagefolder", "path": str(root)}})
    refuses(capsys, "prepare", prepare_args(tmp_path, params), [tmp_path / "raw.npz", tmp_path / "meta.json"],
            f"{root}: one class folder ('cat'); data.source imagefolder needs at least 2 class sub-folders")


# ------------------------------------------------- 5. validation failures name the key to change
def test_image_folder_recipe_names_the_validate_keys(tmp_path, capsys):
    """README: `-S data.source=imagefolder -S data.image.size=[...]` with the digits validate section."""
    root = image_folder(tmp_path / "imgs", {"cat": 12, "dog": 12}, size=(9, 7))
    params = write_params(tmp_path, {"data": {"source": "imagefolder", "path": str(root),
                                              "image": {"size": [6, 5]}},
                                     "validate": {"value_min": 0.0, "value_max": 16.0, "min_per_class": 10,
                                                  "labels": list(range(10)), "sample_shape": [1, 8, 8]}})
    run_stage(stage("prepare"), prepare_args(tmp_path, params))
    line = refuses(capsys, "validate", validate_args(tmp_path, params), [tmp_path / "train.npz"],
                   f"{tmp_path / 'raw.npz'}: data validation failed",
                   "validate.sample_shape is [1,8,8] but the data's samples are [1,6,5]: "
                   "set validate.sample_shape=[1,6,5] or null",
                   "validate.labels is [0,1,2,3,4,5,6,7,8,9] but 24 of 24 samples",
                   "set validate.labels=null (it lists integer labels only)")
    assert "or null or null" not in line
    assert "expect_column" not in line and "n_values ==" not in line
    assert (tmp_path / "validation.json").is_file()  # the report is written whatever the outcome


# ------------------------------------------- 6. imbalance leaves a class too small for the folds
def labels_args(tmp: Path, params: str) -> list[str]:
    return ["--params", params, "--train", str(tmp / "train.npz"), "--meta", str(tmp / "meta.json"),
            "--out", str(tmp / "train_labels.npz"), "--report", str(tmp / "labels.json")]


def test_imbalance_recipe_is_refused_by_labels_before_any_write(tmp_path, capsys):
    X = np.random.default_rng(0).normal(size=(120, 4)).astype(np.float32)
    Dataset(X, np.arange(120) % 6, [str(k) for k in range(6)], "synthetic").save(tmp_path / "train.npz",
                                                                                 tmp_path / "meta.json")
    params = write_params(tmp_path, {"labels": {"imbalance": {"profile": "step", "ratio": 100}}})
    outputs = [tmp_path / "train_labels.npz", tmp_path / "labels.json"]
    for p in outputs:
        p.write_bytes(b"old")
    refuses(capsys, "labels", labels_args(tmp_path, params), outputs,
            "labels: class '3' is left with 1 training sample(s) by labels.imbalance.ratio=100 (profile step; "
            "20 before) (2 other class(es) too), but cv.outer_folds=5, cv.inner_folds=3 (cv.depth=2) need at "
            "least 5 per class (the train stage's stratified folds); labels.detect.n_splits=3 needs at least 3",
            "lower labels.imbalance.ratio to at most 4, or lower cv.outer_folds / cv.inner_folds / "
            "labels.detect.n_splits")


def test_a_ratio_the_folds_can_take_passes(tmp_path, capsys):
    X = np.random.default_rng(0).normal(size=(120, 4)).astype(np.float32)
    Dataset(X, np.arange(120) % 6, [str(k) for k in range(6)], "synthetic").save(tmp_path / "train.npz",
                                                                                 tmp_path / "meta.json")
    params = write_params(tmp_path, {"labels": {"imbalance": {"profile": "step", "ratio": 2}}})
    run_stage(stage("labels"), labels_args(tmp_path, params))
    assert np.bincount(np.load(tmp_path / "train_labels.npz")["y"]).tolist() == [20, 20, 20, 10, 10, 10]


def test_detect_names_its_own_key(tmp_path, capsys):
    X = np.random.default_rng(0).normal(size=(41, 4)).astype(np.float32)
    y = np.r_[np.zeros(20), np.ones(20), [2]].astype(np.int64)
    Dataset(X, y, ["a", "b", "c"], "csv").save(tmp_path / "tl.npz", tmp_path / "meta.json")
    params = write_params(tmp_path, {})
    line = refuses(capsys, "detect", ["--params", params, "--train", str(tmp_path / "tl.npz"),
                                      "--meta", str(tmp_path / "meta.json"), "--out", str(tmp_path / "d.json")],
                   [tmp_path / "d.json"],
                   f"{tmp_path / 'tl.npz'}: class 'c' has 1 training sample(s), fewer than the "
                   "labels.detect.n_splits=3 folds need")
    assert "cv." not in line


# ------------------------------------------------------------------------- 7. other bad data found
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "the file is empty"),
        ("a,b,label\n1,2,0\n1,x,1\n", "feature column 'b' is not numeric: line 3 holds 'x'"),
        ("a,b,target\n1,2,0\n3,4,1\n", "no label column 'label' (data.csv.label_column)"),
    ],
)
def test_bad_csv_tables(tmp_path, capsys, text, expected):
    (tmp_path / "d.csv").write_text(text)
    params = write_params(tmp_path, {"data": {"source": "csv", "path": str(tmp_path / "d.csv")}})
    refuses(capsys, "prepare", prepare_args(tmp_path, params), [tmp_path / "raw.npz", tmp_path / "meta.json"],
            str(tmp_path / "d.csv"), expected)


def test_mnist_counts_that_disagree(tmp_path, capsys):
    import struct

    def idx(array: np.ndarray) -> bytes:
        head = struct.pack(">I", 0x0800 + array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
        return head + array.astype(np.uint8).tobytes()

    (tmp_path / "train-images-idx3-ubyte").write_bytes(idx(np.zeros((4, 28, 28))))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx(np.arange(3)))
    params = write_params(tmp_path, {"data": {"source": "mnist", "path": str(tmp_path)}})
    refuses(capsys, "prepare", prepare_args(tmp_path, params), [tmp_path / "raw.npz", tmp_path / "meta.json"],
            "train-images-idx3-ubyte holds 4 images but train-labels-idx1-ubyte holds 3 labels")


def test_empty_image_folder_and_empty_class(tmp_path, capsys):
    (tmp_path / "imgs").mkdir()
    params = write_params(tmp_path, {"data": {"source": "imagefolder", "path": str(tmp_path / "imgs")}})
    outputs = [tmp_path / "raw.npz", tmp_path / "meta.json"]
    refuses(capsys, "prepare", prepare_args(tmp_path, params), outputs, "no class folders")
    image_folder(tmp_path / "imgs", {"cat": 2})
    (tmp_path / "imgs" / "dog").mkdir()
    refuses(capsys, "prepare", prepare_args(tmp_path, params), outputs, "class folder(s) ['dog'] hold no images")


def test_images_of_mixed_sizes_are_resized(tmp_path, capsys):
    root = image_folder(tmp_path / "imgs", {"cat": 2, "dog": 2}, size=(9, 7))
    Image.new("RGB", (30, 11), (1, 2, 3)).save(root / "dog" / "big.png")
    params = write_params(tmp_path, {"data": {"source": "imagefolder", "path": str(root),
                                              "image": {"size": [5, 5]}}})
    run_stage(stage("prepare"), prepare_args(tmp_path, params))
    assert np.load(tmp_path / "raw.npz")["X"].shape == (5, 1, 5, 5)


def test_stale_meta_is_refused_with_the_file_names(tmp_path, capsys):
    X = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    Dataset(X, np.arange(20) % 4, list("abcd"), "csv").save(tmp_path / "raw.npz")
    Dataset(X, np.arange(20) % 2, list("ab"), "csv").save(tmp_path / "other.npz", tmp_path / "meta.json")
    params = write_params(tmp_path, {})
    (tmp_path / "validation.json").write_text('{"success": true}')
    refuses(capsys, "split", split_args(tmp_path, params), split_outputs(tmp_path),
            f"{tmp_path / 'raw.npz'}: labels run 0..3 but {tmp_path / 'meta.json'} names 2 classes")


def test_too_few_groups_for_the_split(tmp_path, capsys):
    rows = ["g,a,label"] + [f"p{i % 3},{i},{i % 2}" for i in range(30)]
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    params = write_params(tmp_path, {"data": {"source": "csv", "path": str(tmp_path / "d.csv")},
                                     "split": {"group_column": "g"}, "validate": TABLE_VALIDATE})
    run_stage(stage("prepare"), prepare_args(tmp_path, params))
    (tmp_path / "validation.json").write_text('{"success": true}')
    refuses(capsys, "split", split_args(tmp_path, params), split_outputs(tmp_path),
            "split.group_column has 3 distinct value(s), too few for a grouped hold-out of "
            "split.test_size=0.2 (it needs at least 5 groups)")
