"""The augmentation study (dlrig.studies.augmentation): the verdict follows the numbers, a tiny real run
through the stage gives sane ones, the studies page draws them, bad params are one line."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from dlrig.data.dataset import Dataset
from dlrig.errors import UserError
from dlrig.params import Params, ReportParams, dump_params, parse_params
from dlrig.report.studies import render_page
from dlrig.studies.augmentation import ARMS, subsample, verdict

ROOT = Path(__file__).resolve().parents[2]


def stage(rel: str):
    spec = importlib.util.spec_from_file_location(f"stage_{rel.replace('/', '_')}", ROOT / "stages" / rel)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _row(n, none, augment, mixup):
    cell = lambda v: {"mean": v, "min": v - 0.01, "max": v + 0.01, "scores": [v - 0.01, v, v + 0.01]}  # noqa: E731
    return {"per_class": n, "rows": 10 * (n if n != "all" else 143), "none": cell(none),
            "augment": cell(augment), "mixup": cell(mixup)}


def test_the_verdict_follows_the_numbers():
    helps = verdict([_row(10, 0.80, 0.86, 0.81), _row("all", 0.97, 0.975, 0.97)])
    assert helps.startswith("augmentation adds 6.0 points at 10 per class and adds 0.5 points at all rows "
                            "(it helps most where data is scarce); mixup adds 1.0 points at 10 per class")
    hurts = verdict([_row(10, 0.80, 0.75, 0.80), _row("all", 0.97, 0.95, 0.97)])
    assert hurts.startswith("augmentation costs 5.0 points at 10 per class and costs 2.0 points at all rows "
                            "(it does not help at any size here); mixup changes nothing")
    assert helps != hurts and "3 seeds" in hurts


def test_subsample_is_stratified_and_seeded():
    y = np.repeat(np.arange(3), [5, 20, 30])
    rows = subsample(y, 3, 10, seed=0)
    assert np.bincount(y[rows]).tolist() == [5, 10, 10]  # a class with fewer rows gives all it has
    assert np.array_equal(rows, subsample(y, 3, 10, seed=0)) and not np.array_equal(rows, subsample(y, 3, 10, 1))
    assert np.array_equal(subsample(y, 3, "all", 0), np.arange(55))


def _images(tmp: Path) -> None:
    rng = np.random.default_rng(0)
    y = np.tile(np.arange(3), 40)  # interleaved: both splits hold every class
    X = rng.uniform(0, 2, size=(120, 1, 6, 6)).astype(np.float32)
    for i, c in enumerate(y):
        X[i, 0, 1 + 2 * c, :] += 12.0
    classes = ["a", "b", "c"]
    Dataset(X=X[:90], y=y[:90], classes=classes, source="synthetic").save(tmp / "train.npz", tmp / "meta.json")
    Dataset(X=X[90:], y=y[90:], classes=classes, source="synthetic").save(tmp / "test.npz")


def test_a_tiny_run_through_the_stage_and_the_page(tmp_path):
    _images(tmp_path)
    params = {**dump_params(Params()), "model": {"name": "mlp", "hidden": 16, "depth": 1},
              "optim": {"name": "adam", "lr": 0.01},
              "studies": {"augmentation": {"per_class": [5, "all"], "seeds": 2, "epochs": 3, "min_steps": 10,
                                           "augment": {"rotation": 10.0}, "mixup_alpha": 0.2}}}
    params["compute"] = {**params["compute"], "n_jobs": 1}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = tmp_path / "augmentation.json"
    stage("studies/augmentation.py")(["--params", str(tmp_path / "params.yaml"), "--train",
                                      str(tmp_path / "train.npz"), "--test", str(tmp_path / "test.npz"),
                                      "--meta", str(tmp_path / "meta.json"), "--out", str(out)])
    results = json.loads(out.read_text())
    assert [r["per_class"] for r in results["table"]] == [5, "all"]
    assert [r["rows"] for r in results["table"]] == [15, 90]
    for r in results["table"]:
        for arm in ARMS:
            c = r[arm]
            assert len(c["scores"]) == 2 and c["min"] <= c["mean"] <= c["max"]
            assert 1 / 3 < c["mean"] <= 1  # 3 easy classes: every arm beats chance
    assert results["verdict"] == verdict(results["table"])
    html = render_page({"augmentation": (str(out), results)}, tmp_path / "figures", ReportParams(dpi=50))
    assert '<section id="study-augmentation">' in html and results["verdict"].split(" (")[0] in html
    assert (tmp_path / "figures/augmentation/curves.png").stat().st_size > 1000


def test_table_data_is_refused(tmp_path):
    from dlrig.studies.augmentation import run

    X = np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32)
    data = Dataset(X=X, y=np.repeat(np.arange(3), 10), classes=["a", "b", "c"], source="synthetic")
    with pytest.raises(UserError, match=r"^studies.augmentation: needs image data \[N, C, H, W\]"):
        run(Params(), data, data)


@pytest.mark.parametrize(("study", "message"), [
    ({"per_class": [0]}, "params.yaml: studies.augmentation.per_class entries must be integers >= 1 or 'all' (got 0)"),
    ({"per_class": [10, "most"]},
     "params.yaml: studies.augmentation.per_class entries must be integers >= 1 or 'all' (got 'most')"),
    ({"seeds": 0}, "params.yaml: studies.augmentation.seeds must be >= 1 (got 0)"),
    ({"mixup_alpha": 0}, "params.yaml: studies.augmentation.mixup_alpha must be > 0 (got 0)"),
    ({"augment": {"rotation": -1}}, "params.yaml: studies.augmentation.augment.rotation must be >= 0 (got -1)"),
])
def test_bad_params_are_one_line(study, message):
    with pytest.raises(UserError) as err:
        parse_params({"studies": {"augmentation": study}})
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_the_arms_switch_off_what_the_pipeline_s_train_section_switched_on():
    """A pipeline tuned with class weights and its own mixing (a README recipe leaves them in params.yaml)
    must not turn "none" into something else, nor make the mixup arm refuse its soft targets."""
    from dlrig.params import load_params
    from dlrig.studies.augmentation import arm_configs

    params = load_params("params.yaml")
    base = params.fit_config().with_overrides({"train.class_weight": "balanced", "train.resample": "oversample",
                                               "train.augment.rotation": 5.0})
    arms = arm_configs(base, params)
    assert arms["none"].train.class_weight == "none" and arms["none"].train.augment.rotation == 0.0
    assert arms["none"].train.resample == "none" and arms["mixup"].train.mixup_alpha > 0
    assert arms["augment"].train.augment.rotation == params.studies.augmentation.augment.rotation
