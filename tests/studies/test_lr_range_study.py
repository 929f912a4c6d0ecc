"""The learning-rate range test study (dlrig.studies.lr_range): its verdict on synthetic numbers, a tiny
real run through its stage, and the studies page's section from what it wrote."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml
from sklearn.datasets import make_classification

from dlrig.data.dataset import Dataset
from dlrig.errors import UserError
from dlrig.io import save_json
from dlrig.params import Params, ReportParams, dump_params, parse_params
from dlrig.report.studies import render_page
from dlrig.studies.lr_range import cv_choice, verdict

ROOT = Path(__file__).resolve().parents[2]
VALLEY = {"median": 3e-3, "low": 2e-3, "high": 4e-3, "n": 3}
SPACE = {"low": 3e-4, "high": 2e-2, "log": True, "count": 4}


def summary(lr: float | None = 1e-3) -> dict:
    """reports/cv/summary.json as the train stage writes it (the keys the study reads)."""
    config = {"model.dropout": 0.0, **({"optim.lr": lr} if lr is not None else {})}
    space = {"optim.lr": {"values": [1e-4, 1e-3, 1e-2, 1e-1]}} if lr is not None else {}
    return {"metric": "accuracy", "final": {"config": config, "inner_score": 0.967}, "space": space}


def test_the_verdict_flips_with_the_numbers():
    inside = verdict(VALLEY, SPACE, cv_choice(summary(1e-3), "s.json", 5e-4))
    assert inside.startswith("The range test suggests lr ≈ 0.003 (valley, median of 3 seeds; seeds 0.002–0.004")
    assert inside.endswith("nested CV chose 0.001 (0.33× the valley), inside the suggested range.")
    above = verdict(VALLEY, SPACE, cv_choice(summary(0.1), "s.json", 5e-4))
    assert above.endswith("nested CV chose 0.1 (33× the valley), above the suggested range.")
    below = verdict(VALLEY, SPACE, cv_choice(summary(1e-4), "s.json", 5e-4))
    assert below.endswith("below the suggested range.")
    fixed = verdict(VALLEY, SPACE, cv_choice(summary(None), "s.json", 5e-4))
    assert "nested CV did not search optim.lr; it held 0.0005" in fixed
    absent = verdict(VALLEY, SPACE, cv_choice(None, "reports/cv/summary.json", 5e-4))
    assert absent.endswith("the nested CV's choice is absent: reports/cv/summary.json not found "
                           "(run `dvc repro train`).")
    none = verdict({"median": None, "low": None, "high": None, "n": 0}, None, cv_choice(summary(), "s", 1e-3))
    assert none.startswith("The range test is inconclusive at these settings")


def test_bad_study_params_are_one_line():
    with pytest.raises(UserError) as err:
        parse_params({"studies": {"lr_range": {"start_lr": 1.0, "end_lr": 0.1}}})
    assert str(err.value) == "params.yaml: studies.lr_range.start_lr must be < end_lr (got 1 >= 0.1)"
    with pytest.raises(UserError, match=r"studies.lr_range.seeds must be >= 3 \(got 2\)"):
        parse_params({"studies": {"lr_range": {"seeds": 2}}})


def stage(rel: str):
    spec = importlib.util.spec_from_file_location(f"stage_{rel.replace('/', '_')}", ROOT / "stages" / rel)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def tiny(tmp: Path) -> list[str]:
    """A 3-class table, a small model and a short sweep: the stage's arguments."""
    X, y = make_classification(n_samples=240, n_features=6, n_informative=4, n_redundant=0, n_classes=3,
                               class_sep=2.0, flip_y=0.05, random_state=0)
    Dataset(X=X, y=y, classes=["a", "b", "c"], source="synthetic").save(tmp / "train.npz", tmp / "meta.json")
    params = {**dump_params(Params()), "model": {"name": "mlp", "hidden": 16, "depth": 1},
              "train": {"epochs": 3, "batch_size": 32}, "report": {"title": "tiny", "dpi": 50},
              "studies": {"lr_range": {"start_lr": 1e-4, "end_lr": 100.0, "steps": 60, "seeds": 3}}}
    (tmp / "params.yaml").write_text(yaml.safe_dump(params))
    return ["--params", str(tmp / "params.yaml"), "--train", str(tmp / "train.npz"), "--meta",
            str(tmp / "meta.json")]


def test_a_tiny_run_through_the_stage_and_onto_the_page(tmp_path, capsys):
    args = tiny(tmp_path)
    save_json(tmp_path / "summary.json", summary(3e-3))
    out = tmp_path / "reports/studies/lr_range.json"
    stage("studies/lr_range.py")([*args, "--cv-summary", str(tmp_path / "summary.json"), "--out", str(out)])
    results = json.loads(out.read_text())
    assert len(results["runs"]) == 3 and len({r["seed"] for r in results["runs"]}) == 3
    lrs = [row["lr"] for row in results["band"]]
    assert lrs[0] == 1e-4 and all(b > a for a, b in zip(lrs, lrs[1:], strict=False))
    assert all(row["min"] <= row["median"] <= row["max"] for row in results["band"])
    first = results["band"][0]["median"]
    assert 0.9 < first < 1.3  # 3 classes: log 3 = 1.10 before anything is learnt
    assert min(row["median"] for row in results["band"]) < 0.8 * first  # and it does fall
    v = results["valley"]
    assert v["n"] == 3 and 1e-4 <= v["low"] <= v["median"] <= v["high"] < 100
    assert results["cv"]["lr"] == 3e-3 and results["verdict"] == verdict(v, results["space"], results["cv"])
    assert results["space_yaml"] in capsys.readouterr().out

    # the same params give the same bytes
    again = tmp_path / "again.json"
    stage("studies/lr_range.py")([*args, "--cv-summary", str(tmp_path / "summary.json"), "--out", str(again)])
    assert again.read_bytes() == out.read_bytes()

    html = render_page({"lr_range": (str(out), results)}, tmp_path / "figures", ReportParams(dpi=50))
    assert '<section id="study-lr_range">' in html and results["verdict"].replace("'", "&#39;") in html
    assert "chose optim.lr = 0.003 from [0.0001, 0.001, 0.01, 0.1]" in html
    assert (tmp_path / "figures/lr_range/loss_vs_lr.png").stat().st_size > 5000


def test_without_the_cv_summary_the_study_says_it_is_absent(tmp_path):
    args = tiny(tmp_path)
    out = tmp_path / "lr_range.json"
    stage("studies/lr_range.py")([*args, "--cv-summary", str(tmp_path / "missing.json"), "--out", str(out)])
    results = json.loads(out.read_text())
    assert results["cv"]["lr"] is None and "missing.json not found" in results["verdict"]
    html = render_page({"lr_range": (str(out), results)}, tmp_path / "figures", ReportParams(dpi=50))
    assert "No nested CV result to compare with" in html
