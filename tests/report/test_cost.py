"""The cost record every stage writes, the estimates made from it, and the page that shows them."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from dlrig.report.cost import GPU_FLOPS, GPU_UTILISATION, cost_page, cost_section, estimates, write_cost_page
from dlrig.stage import record_cost


def _cost(**over):
    return {"seconds": 10.0, "process_seconds": 14.0, "cpu_seconds": 9.5, "peak_memory_mb": 512.0,
            "fits": 149, "flops": 1e12, "samples": 1_000_000, "flops_formula": "3 x forward x rows x epochs",
            "cpus": 2, **over}


def test_estimates_are_the_stated_arithmetic():
    est = estimates(_cost(), n_train=1000)
    assert est["throughput"] == pytest.approx(1e11)
    this, mnist = est["rows"]
    assert this["this_model_cpu"] == pytest.approx(10.0) and mnist["this_model_cpu"] == pytest.approx(600.0)
    assert this["big_flops"] == pytest.approx(6 * 100e6 * 1e6)  # 6 x parameters x samples
    assert this["big_cpu"] == pytest.approx(6e14 / 1e11)
    assert this["big_gpu"] == pytest.approx(6e14 / (GPU_FLOPS * GPU_UTILISATION))
    assert mnist["big_gpu"] == pytest.approx(60 * this["big_gpu"])
    assert estimates(_cost(flops=0.0), 1000) is None and estimates(None, 1000) is None


def test_a_stage_records_its_cost_and_keeps_what_it_wrote_this_run(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["stages/train.py"])
    (tmp_path / "train.json").write_text(json.dumps({"seconds": {"total": 1.0}}))  # the stage's own info
    cost = record_cost(start=0.0 + __import__("time").perf_counter() - 2.0, run_dir=str(tmp_path))
    record = json.loads((tmp_path / "train.json").read_text())
    assert record["seconds"] == {"total": 1.0} and record["cost"] == cost
    assert cost["seconds"] >= 2.0 and cost["peak_memory_mb"] > 10 and cost["cpu_seconds"] > 0
    monkeypatch.setattr(sys, "argv", ["pytest"])  # not a stage script: nothing recorded
    assert record_cost(0.0, run_dir=str(tmp_path / "other")) is None
    assert not (tmp_path / "other").exists()


def test_fits_are_counted_with_their_flops():
    from dlrig.params import FitConfig
    from dlrig.train import fit, work
    from dlrig.train.batched import FitJob, fit_many

    config = FitConfig().with_overrides({"model.hidden": 8, "model.depth": 1, "train.epochs": 2,
                                         "train.early_stopping": None, "model.dropout": 0.0})
    X = np.random.default_rng(0).normal(size=(40, 5)).astype(np.float32)
    y = np.arange(40) % 3
    before = work.snapshot()
    fit(X, y, 3, config, seed=0)
    fit_many(X, y, 3, [FitJob(np.arange(30), config, 1)])
    done = work.since(before)
    forward = 2 * (5 * 8 + 8 * 3)  # multiply-adds of the two linear layers, per sample
    assert done["fits"] == 2 and done["samples"] == 2 * (40 + 30)
    assert done["flops"] == pytest.approx(3 * forward * 2 * (40 + 30))


def test_the_cost_page_shows_each_stage_and_the_main_report_embeds_it(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "train.json").write_text(json.dumps({"cost": _cost()}))
    (run / "prepare.json").write_text(json.dumps({"cost": _cost(fits=0, flops=0.0, samples=0)}))
    (tmp_path / "split.json").write_text(json.dumps({"n_train": 1000}))
    (run / "studies").mkdir()
    (run / "studies" / "grokking.json").write_text(json.dumps({"cost": _cost(fits=4)}))
    html = write_cost_page(tmp_path).read_text()
    assert "<td>train</td>" in html and "<td>prepare</td>" in html
    # the studies' records (another pipeline, maybe another run) in a table of their own, after the stages
    pipeline, studies = html.split("The studies (studies/dvc.yaml)")
    assert "<td>train</td>" in pipeline and "<td>studies/grokking</td>" in studies
    assert "MNIST scale (60,000 training rows)" in html and "10.0 min" in html  # 10 s x 60
    assert "No estimate" in cost_page(tmp_path / "nothing", None)
    link = str(cost_section())  # takes no input: the same bytes in every run
    assert 'href="run/cost.html"' in link and "<table" not in link and "FLOP/s" not in link
    assert '<iframe class="embed" src="run/cost.html"' in link  # the run's numbers, shown in the section
