"""The label study (dlrig.studies.labels) through its stage on tiny data, then the studies page from its
results: the shape the page reads is the shape the study writes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import yaml
from sklearn.datasets import make_classification
from tests.report.report_files import study_file

from dlrig.data.dataset import Dataset
from dlrig.params import Params, dump_params
from dlrig.studies.labels import IMBALANCE_OPTIONS, NOISE_OPTIONS, markdown

ROOT = Path(__file__).resolve().parents[2]
STUDY = {"noise_rates": [0.0, 0.4], "ratios": [1.0, 4.0], "detect_rate": 0.2, "wrong_right_ratio": 3.0,
         "folds": 2}


def stage(rel: str):
    spec = importlib.util.spec_from_file_location(f"stage_{rel.replace('/', '_')}", ROOT / "stages" / rel)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _data(tmp: Path) -> None:
    X, y = make_classification(n_samples=300, n_features=6, n_informative=4, n_redundant=0, n_classes=3,
                               class_sep=2.0, random_state=0)
    train = Dataset(X=X[:240], y=y[:240], classes=["a", "b", "c"], source="synthetic")
    train.save(tmp / "train.npz", tmp / "meta.json")
    Dataset(X=X[240:], y=y[240:], classes=["a", "b", "c"], source="synthetic").save(tmp / "test.npz")


def _params(tmp: Path) -> Path:
    params = {**dump_params(Params()), "model": {"name": "mlp", "hidden": 16, "depth": 1},
              "train": {"epochs": 3, "batch_size": 32}, "optim": {"name": "adam", "lr": 0.01},
              "studies": {"labels": STUDY}, "report": {"title": "tiny", "dpi": 50}}
    params["compute"] = {**params["compute"], "n_jobs": 1, "cache_dir": str(tmp / "cache")}
    (tmp / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp / "params.yaml"


def test_the_stage_writes_what_the_studies_page_reads(tmp_path, capsys):
    _data(tmp_path)
    p = str(_params(tmp_path))
    out = tmp_path / "reports/studies/labels.json"
    stage("studies/labels.py")(["--params", p, "--train", str(tmp_path / "train.npz"),
                                "--test", str(tmp_path / "test.npz"), "--meta", str(tmp_path / "meta.json"),
                                "--out", str(out), "--table", str(tmp_path / "reports/studies/labels.md")])
    results = json.loads(out.read_text())
    assert results.keys() == study_file().keys()
    assert [r["rate"] for r in results["noise"]["table"]] == STUDY["noise_rates"]
    assert [r["ratio"] for r in results["imbalance"]["table"]] == STUDY["ratios"]
    assert set(results["noise"]["table"][0]) == {"rate", *NOISE_OPTIONS}
    assert set(results["imbalance"]["table"][0]) == {"ratio", *IMBALANCE_OPTIONS}
    clean = results["noise"]["table"][0]
    assert all(0.5 < clean[name] <= 1 for name in NOISE_OPTIONS)  # 3 classes: chance is 1/3
    assert results["detection"]["rate"] == 0.2 and 0 <= results["detection"]["f1"] <= 1
    assert results["wrong_vs_right"]["folds"] == 2
    text = (tmp_path / "reports/studies/labels.md").read_text()
    assert text == markdown(results) and text in capsys.readouterr().out

    html = tmp_path / "reports/studies/report.html"
    stage("studies/report.py")([str(out), "--params", p, "--out", str(html),
                                "--figures", str(tmp_path / "reports/studies/figures")])
    page = html.read_text()
    assert '<section id="study-labels">' in page and "<title>tiny — studies</title>" in page
    assert sorted(p.name for p in (tmp_path / "reports/studies/figures/labels").iterdir()) == [
        "imbalance.png", "noise.png"]


def test_markdown_reads_the_shape_the_page_reads():
    text = markdown(study_file())
    assert "Detecting 20% injected noise" in text and "| 0.4 | 0.8100 | 0.8800 |" in text
    assert "| wrong: oversample, then split | 0.9952 | 0.9052 | +0.0900 |" in text
