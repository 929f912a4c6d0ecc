"""Each stage script on tiny data in tmp_path, in pipeline order, without DVC; and their error paths."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from dlrig.errors import UserError

ROOT = Path(__file__).resolve().parents[2]


def stage(name: str):
    spec = importlib.util.spec_from_file_location(f"stage_{name}", ROOT / "stages" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


TINY = {
    "data": {"source": "synthetic", "synthetic": {"n_samples": 240, "n_classes": 3, "n_features": 6}},
    "cv": {"outer_folds": 3, "inner_folds": 2},
    "search": {"space": {"optim.lr": [0.003, 0.01]}},
    "compare": {"baselines": {"logreg": {"estimator": "logistic_regression"},
                              "tiny_net": {"estimator": "dlrig", "overrides": {"model.hidden": 4}}},
                "five_by_two": False},
    "validate": {"value_min": None, "value_max": None, "labels": None, "sample_shape": [6]},
    "model": {"hidden": 16, "depth": 1},
    "optim": {"lr": 0.01},
    "train": {"epochs": 4, "batch_size": 32},
    "report": {"title": "tiny", "dpi": 60},
}


def complete(overrides: dict) -> dict:
    """A whole params file: the given sections over the built-in defaults (a file must name every section)."""
    from dlrig.params import Params, dump_params

    return {**dump_params(Params()), **overrides}


def write_params(path: Path, overrides: dict) -> Path:
    path.write_text(yaml.safe_dump(complete(overrides)))
    return path


def run_pipeline(tmp: Path, params: dict) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    params = {**params, "compute": {**params.get("compute", {}), "cache_dir": str(tmp / "cache")}}
    p = str(write_params(tmp / "params.yaml", params))
    raw, meta = str(tmp / "raw.npz"), str(tmp / "meta.json")
    stage("prepare")(["--params", p, "--out", raw, "--meta", meta])
    stage("validate")(["--params", p, "--data", raw, "--meta", meta,
                       "--out", str(tmp / "reports/validation.json"),
                       "--summary", str(tmp / "reports/validation.md")])
    stage("split")(["--params", p, "--data", raw, "--meta", meta,
                    "--validation", str(tmp / "reports/validation.json"),
                    "--train", str(tmp / "train.npz"), "--test", str(tmp / "test.npz"),
                    "--report", str(tmp / "reports/split.json")])
    stage("labels")(["--params", p, "--train", str(tmp / "train.npz"), "--meta", meta,
                     "--out", str(tmp / "train_labels.npz"), "--report", str(tmp / "reports/labels.json")])
    stage("detect")(["--params", p, "--train", str(tmp / "train_labels.npz"), "--meta", meta,
                     "--out", str(tmp / "reports/detect.json")])
    stage("train")(["--params", p, "--train", str(tmp / "train_labels.npz"), "--meta", meta,
                    "--model", str(tmp / "model.pt"), "--logdir", str(tmp / "reports/train"),
                    "--cvdir", str(tmp / "reports/cv")])
    stage("evaluate")(["--params", p, "--train", str(tmp / "train_labels.npz"), "--test", str(tmp / "test.npz"),
                       "--meta", meta, "--model", str(tmp / "model.pt"), "--cv", str(tmp / "reports/cv/summary.json"),
                       "--metrics", str(tmp / "reports/metrics.json"), "--plots", str(tmp / "reports/plots")])
    stage("compare")(["--params", p, "--train", str(tmp / "train_labels.npz"), "--test", str(tmp / "test.npz"),
                      "--meta", meta, "--model", str(tmp / "model.pt"), "--folds", str(tmp / "reports/cv/folds.json"),
                      "--out", str(tmp / "reports/compare.json"), "--table", str(tmp / "reports/compare.md")])
    stage("report")(["--params", p, "--reports", str(tmp / "reports"),
                     "--figures", str(tmp / "reports/figures"), "--out", str(tmp / "reports/report.html")])
    return tmp / "reports"


def test_stages_in_order_on_tiny_data(tmp_path):
    reports = run_pipeline(tmp_path, TINY)
    metrics = json.loads((reports / "metrics.json").read_text())["test"]
    assert metrics["n"] == 48 and metrics["accuracy"] > 0.6  # 3 classes: chance is 0.33
    history = json.loads((reports / "train/history.json").read_text())
    assert len(history["history"]) <= 4 and history["n_fit"] + history["n_val"] == 192
    assert (reports / "train/metrics.json").is_file()  # DVCLive summary for dvc metrics / exp show
    html = (reports / "report.html").read_text()
    assert "tiny" in html and "data:image/png;base64," in html
    assert (reports / "plots/confusion.json").is_file()
    # 15% of 192 training rows are too few to fit a temperature: T = 1, and the metrics and report say why.
    calib = json.loads((reports / "metrics.json").read_text())["calibration"]
    assert calib["temperature"] == 1.0 and calib["temperature_fitted"] is False
    assert calib["reason"] == f"only {history['n_val']} fitting rows (< 50)"
    assert f"Temperature scaling was not applied (T = 1): only {history['n_val']} fitting rows" in html
    assert json.loads((reports / "plots/reliability_after.json").read_text()) == []


def test_noisy_labels_are_named_in_calibration_and_headline(tmp_path, capsys):
    # 40% symmetric noise and a 30% early-stopping split (57 rows, enough to fit T on noisy labels).
    params = {**TINY, "labels": {"noise": {"kind": "symmetric", "rate": 0.4}},
              "train": {**TINY["train"], "early_stopping": {"val_fraction": 0.3}}}
    reports = run_pipeline(tmp_path, params)
    calib = json.loads((reports / "metrics.json").read_text())["calibration"]
    assert calib["temperature_fitted"] is True and 0.2 <= calib["temperature"] <= 5
    assert calib["fit_labels_flipped"] > 0 and "flipped by the labels stage" in calib["warnings"][0]
    assert "warning: " in capsys.readouterr().err
    html = (reports / "report.html").read_text()
    effect = "raised" if calib["ece_scaled"] > calib["ece"] else "lowered"
    assert f"Temperature scaling (T = {calib['temperature']:.2f}) {effect} the test ECE" in html
    if effect == "raised":
        assert "it made calibration worse" in html and "the fitting labels were noisy" in html
    cv = json.loads((reports / "cv/summary.json").read_text())
    assert f"CV accuracy {cv['mean']:.3f}, measured against the noisy training labels" in html


def test_same_params_same_metrics(tmp_path):
    a = run_pipeline(tmp_path / "a", TINY)
    b = run_pipeline(tmp_path / "b", TINY)
    assert (a / "metrics.json").read_bytes() == (b / "metrics.json").read_bytes()
    # The reports differ only where they quote params.yaml: each run has its own compute.cache_dir.


def test_validation_failure_stops_before_split(tmp_path):
    params = {**TINY, "validate": {**TINY["validate"], "min_per_class": 500}}
    with pytest.raises(UserError, match="data validation failed"):
        run_pipeline(tmp_path, params)
    assert json.loads((tmp_path / "reports/validation.json").read_text())["success"] is False
    assert not (tmp_path / "train.npz").exists()


def test_validation_warn_mode_goes_on(tmp_path, capsys):
    params = {**TINY, "validate": {**TINY["validate"], "min_per_class": 500, "on_failure": "warn"}}
    reports = run_pipeline(tmp_path, params)
    assert (reports / "metrics.json").is_file()
    assert "warning:" in capsys.readouterr().err


def test_cnn_on_table_data_is_a_clear_error(tmp_path):
    params = {**TINY, "model": {"name": "cnn"}}
    with pytest.raises(UserError, match="cnn needs image data"):
        run_pipeline(tmp_path, params)


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"optim": {"lr": -1}}, "error: params.yaml: optim.lr must be > 0 (got -1)"),
        ({"model": {"hiden": 3}}, "error: params.yaml: model.hiden is not a key of model.name=mlp (mlp keys: name, activation, dropout, norm, norm_momentum, norm_eps, init, residual, hidden, depth)"),
        ({"train": {"batch_size": "big"}}, "error: params.yaml: train.batch_size must be an integer (got 'big')"),
    ],
)
def test_bad_params_exit_2_with_one_line_and_no_output(tmp_path, params, expected):
    write_params(tmp_path / "params.yaml", params)
    out = tmp_path / "raw.npz"
    proc = run_cli([str(ROOT / "stages/prepare.py"), "--out", str(out), "--meta", str(tmp_path / "m.json")],
                   cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == expected
    assert not out.exists() and not (tmp_path / "m.json").exists()


def test_missing_input_file_names_the_file(tmp_path):
    write_params(tmp_path / "params.yaml", {})
    proc = run_cli([str(ROOT / "stages/train.py"), "--train", "nowhere/train.npz"], cwd=tmp_path)
    assert proc.returncode == 2 and "nowhere/train.npz: file not found" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_corrupt_csv_is_a_clear_error(tmp_path):
    (tmp_path / "data.csv").write_bytes(b'a,b,label\n1,2,0\n3,"4,1\n\x00\x01')
    write_params(tmp_path / "params.yaml", {"data": {"source": "csv", "path": "data.csv"}})
    proc = run_cli([str(ROOT / "stages/prepare.py"), "--out", "raw.npz", "--meta", "m.json"], cwd=tmp_path)
    assert proc.returncode == 2 and "data.csv" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "raw.npz").exists()


def test_nan_pixels_fail_validation_with_a_count(tmp_path):
    X = np.random.default_rng(0).uniform(0, 16, size=(60, 1, 8, 8)).astype(np.float32)
    X[[3, 7], 0, 2, 2] = np.nan
    y = np.repeat(np.arange(3), 20)
    from dlrig.data.dataset import Dataset

    Dataset(X, y, ["a", "b", "c"], "test").save(tmp_path / "raw.npz", tmp_path / "meta.json")
    write_params(tmp_path / "params.yaml", {"validate": {"labels": None, "min_per_class": 5}})
    proc = run_cli([str(ROOT / "stages/validate.py"), "--data", "raw.npz", "--meta", "meta.json"], cwd=tmp_path)
    assert proc.returncode == 2
    assert "raw.npz" in proc.stderr and "2" in proc.stderr and "nan" in proc.stderr.lower()


def test_a_checkpoint_trained_on_held_out_rows_stops_train_and_compare(tmp_path):
    """Leakage: a teacher (or pretrained body, or feature extractor) trained on the training split has seen
    every row the nested CV holds out; train and compare refuse it in one line, before any fit."""
    from dlrig.data.dataset import Dataset
    from dlrig.models import build_model
    from dlrig.params import FitConfig
    from dlrig.train.checkpoint import save_model

    reports = run_pipeline(tmp_path / "run", TINY)  # writes model.pt, trained on all training rows
    run = reports.parent
    teacher = str(run / "model.pt")
    p = str(write_params(tmp_path / "p.yaml", {**TINY, "train": {**TINY["train"], "distill": {"teacher": teacher}},
                                               "compute": {"cache_dir": None}}))
    out = tmp_path / "again.pt"
    with pytest.raises(UserError, match=r"^train.distill.teacher: .*model.pt was trained on \d+ of the \d+ rows of "
                                        r"the training split, which the nested CV holds out"):
        stage("train")(["--params", p, "--train", str(run / "train_labels.npz"), "--meta", str(run / "meta.json"),
                        "--model", str(out), "--logdir", str(tmp_path / "logs"), "--cvdir", str(tmp_path / "cv")])
    assert not out.exists() and not (tmp_path / "cv").exists()
    # compare's pretrained features: one trained on the test rows leaks into the test score
    test = Dataset.load(run / "test.npz", run / "meta.json")
    config = FitConfig().with_overrides({"model.hidden": 4, "model.depth": 1})
    save_model(tmp_path / "features.pt", build_model(config.model, [6], 3), config, sample_shape=[6],
               classes=test.classes, seed=0, rows=test.X[:5])
    baselines = {"feat": {"estimator": "pretrained_logreg", "params": {"checkpoint": str(tmp_path / "features.pt")}}}
    p = str(write_params(tmp_path / "q.yaml", {**TINY, "compare": {**TINY["compare"], "baselines": baselines}}))
    with pytest.raises(UserError, match=r"^compare.baselines.feat.params.checkpoint: .*features.pt was trained on 5 "
                                        r"of the \d+ rows of the test split"):
        stage("compare")(["--params", p, "--train", str(run / "train_labels.npz"), "--test", str(run / "test.npz"),
                          "--meta", str(run / "meta.json"), "--model", str(run / "model.pt"),
                          "--folds", str(reports / "cv/folds.json"), "--out", str(tmp_path / "c.json"),
                          "--table", str(tmp_path / "c.md")])
    assert not (tmp_path / "c.json").exists()
