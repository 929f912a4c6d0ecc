"""The distillation study (dlrig.studies.distillation): the verdict follows the test, a tiny real run through
the stage keeps each fold's teacher on its fold, the page draws it, bad params are one line."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from dlrig.data.dataset import Dataset
from dlrig.errors import UserError
from dlrig.evaluate.stats import corrected_resampled_ttest
from dlrig.params import Params, ReportParams, dump_params, parse_params
from dlrig.report.studies import render_page
from dlrig.studies import distillation
from dlrig.studies.distillation import verdict

ROOT = Path(__file__).resolve().parents[2]


def stage(rel: str):
    spec = importlib.util.spec_from_file_location(f"stage_{rel.replace('/', '_')}", ROOT / "stages" / rel)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_the_verdict_flips_with_the_test():
    labels = [0.90, 0.91, 0.89, 0.92, 0.90]
    better = [s + d for s, d in zip(labels, [0.020, 0.025, 0.022, 0.018, 0.021], strict=True)]
    noisy = [s + d for s, d in zip(labels, [0.03, -0.02, 0.01, -0.025, 0.01], strict=True)]
    worse = [s - d for s, d in zip(labels, [0.020, 0.025, 0.022, 0.018, 0.021], strict=True)]
    texts = []
    for scores in (better, noisy, worse):
        t = corrected_resampled_ttest(scores, labels, 800, 200)
        texts.append(verdict(t.mean_diff, t.p_value, 0.05, 0.98))
    assert texts[0].startswith("distillation helps the student: +2.12 points of held-out accuracy")
    assert texts[1].startswith("no real difference: the distilled student differs by +0.10 points")
    assert texts[2].startswith("distillation hurts the student: -2.12 points")
    assert all("(teacher: 98.0%)" in t for t in texts)
    assert verdict(0.02, 0.049, 0.05) != verdict(0.02, 0.051, 0.05)


def _data(tmp: Path) -> None:
    rng = np.random.default_rng(0)
    y = np.tile(np.arange(3), 30)
    X = rng.uniform(0, 2, size=(90, 1, 6, 6)).astype(np.float32)
    for i, c in enumerate(y):
        X[i, 0, 1 + 2 * c, :] += 6.0 + rng.normal()
    Dataset(X=X, y=y, classes=["a", "b", "c"], source="synthetic").save(tmp / "train.npz", tmp / "meta.json")


STUDY = {"folds": 3, "epochs": 3, "teacher": {"model.name": "cnn", "model.channels": [4], "model.hidden": 8},
         "student": {"model.hidden": 4, "model.depth": 1}, "temperature": 3.0, "alpha": 0.5}


def test_a_tiny_run_through_the_stage_and_the_page(tmp_path, monkeypatch):
    _data(tmp_path)
    params = {**dump_params(Params()), "model": {"name": "mlp", "hidden": 16, "depth": 1},
              "optim": {"name": "adam", "lr": 0.01}, "studies": {"distillation": STUDY}}
    params["compute"] = {**params["compute"], "n_jobs": 1}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    teachers = []
    original = distillation._teacher_job
    monkeypatch.setattr(distillation, "_teacher_job",
                        lambda X, y, tr, te, *rest: (teachers.append((set(tr), set(te))),
                                                     original(X, y, tr, te, *rest))[1])
    out = tmp_path / "distillation.json"
    stage("studies/distillation.py")(["--params", str(tmp_path / "params.yaml"), "--train",
                                      str(tmp_path / "train.npz"), "--meta", str(tmp_path / "meta.json"),
                                      "--out", str(out)])
    results = json.loads(out.read_text())
    assert len(teachers) == 3 and all(not tr & te for tr, te in teachers)  # no teacher saw its fold's rows
    assert set().union(*(te for _, te in teachers)) == set(range(90))
    for arm in ("teacher", "labels", "distilled"):
        assert len(results[arm]["scores"]) == 3 and all(0 <= s <= 1 for s in results[arm]["scores"])
    assert results["teacher"]["mean"] > 0.5  # 3 easy classes: chance is 1/3
    t = results["test"]
    assert t["n_train"] == 60 and t["n_test"] == 30
    assert t["mean_difference"] == pytest.approx(results["distilled"]["mean"] - results["labels"]["mean"], abs=1e-5)
    assert results["verdict"] == verdict(t["mean_difference"], t["p_value"], 0.05, results["teacher"]["mean"])
    html = render_page({"distillation": (str(out), results)}, tmp_path / "figures", ReportParams(dpi=50))
    assert '<section id="study-distillation">' in html and "corrected resampled t-test" in html
    assert (tmp_path / "figures/distillation/folds.png").stat().st_size > 1000


def test_bad_overrides_are_one_line():
    params = parse_params({"studies": {"distillation": {"teacher": {"model.widht": 3}}}})
    data = Dataset(X=np.zeros((30, 4), np.float32), y=np.tile(np.arange(3), 10), classes=["a", "b", "c"],
                   source="synthetic")
    with pytest.raises(UserError) as err:
        distillation.run(params, data)
    assert str(err.value).startswith("studies.distillation.teacher: model.widht: not a key")


@pytest.mark.parametrize(("study", "message"), [
    ({"folds": 1}, "params.yaml: studies.distillation.folds must be >= 2 (got 1)"),
    ({"alpha": 2}, "params.yaml: studies.distillation.alpha must be <= 1 (got 2)"),
    ({"temperature": 0}, "params.yaml: studies.distillation.temperature must be > 0 (got 0)"),
    ({"test_alpha": 1}, "params.yaml: studies.distillation.test_alpha must be < 1 (got 1)"),
])
def test_bad_params_are_one_line(study, message):
    with pytest.raises(UserError) as err:
        parse_params({"studies": {"distillation": study}})
    assert str(err.value) == message
