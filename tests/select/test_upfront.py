"""Bigger stacks: a grid or random search's fits of every outer fold trained together give the same
selection, byte for byte, as one selection at a time (a fit's numbers do not depend on its stack-mates)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dlrig.data.dataset import Dataset
from dlrig.params import parse_params
from dlrig.select import run
from dlrig.select.nested import NestedCV
from dlrig.select.run import select_config


def _tiny(search: dict, **over) -> tuple:
    params = parse_params({
        "seed": 3,
        "cv": {"depth": 2, "outer_folds": 3, "inner_folds": 2},
        "search": search,
        "model": {"hidden": 8, "depth": 1, "dropout": 0.0}, "train": {"epochs": 3, "batch_size": 32},
        "compute": {"n_jobs": 1, "cache_dir": None}, **over,
    })
    rng = np.random.default_rng(0)
    y = np.arange(91) % 3  # uneven fold sizes: stack-mates with other row counts (padded batches)
    X = (rng.normal(size=(91, 5)) + y[:, None]).astype(np.float32)
    return params, Dataset(X, y, ["a", "b", "c"], "test")


def _record(report) -> str:
    return json.dumps([report.folds, report.summary, report.final.config, report.space, report.cache])


@pytest.mark.parametrize("search", [
    {"strategy": "grid", "space": {"optim.lr": [0.003, 0.01], "model.hidden": [8, 12]}},
    {"strategy": "random", "n_trials": 3, "space": {"optim.lr": {"low": 1e-3, "high": 1e-1, "log": True}}},
])
def test_upfront_stacks_give_the_same_selection_as_one_selection_at_a_time(monkeypatch, search):
    params, ds = _tiny(search)
    trained: list[int] = []
    prefetch = run.TorchScorer.prefetch

    def counting(self, calls, holdouts=(), n_jobs=1):
        trained.append(sum(len(c) * len(f) for c, f, _ in calls) + len(holdouts))
        return prefetch(self, calls, holdouts, n_jobs)

    monkeypatch.setattr(run.TorchScorer, "prefetch", counting)
    monkeypatch.setattr(run, "_bigger_stacks_pay", lambda *_args: True)  # as on a GPU
    upfront = select_config(params, ds, progress=False, log=lambda _line: None)
    params.compute.n_jobs = 2  # the stacks cut in two shares, trained in two processes
    shared = select_config(params, ds, progress=False, log=lambda _line: None)
    assert _record(shared) == _record(upfront)
    params.compute.n_jobs = 1
    n_configs = 4 if search["strategy"] == "grid" else 3
    assert trained[:3] == [3 * n_configs * 2, n_configs * 2, 3]  # 3 outer folds, then the final selection
    # (x configs x 2 inner folds: two stacks, their row counts differ), then 3 refits
    assert "upfront" in upfront.seconds

    monkeypatch.setattr(run, "_bigger_stacks_pay", lambda *_args: False)  # a CPU: one selection at a time
    assert "upfront" not in select_config(params, ds, progress=False, log=lambda _line: None).seconds
    monkeypatch.setattr(run, "_bigger_stacks_pay", lambda *_args: True)
    monkeypatch.setattr(NestedCV, "upfront", lambda self: False)
    one_at_a_time = select_config(params, ds, progress=False, log=lambda _line: None)
    assert "upfront" not in one_at_a_time.seconds
    assert _record(upfront) == _record(one_at_a_time)


def test_upfront_writes_the_cache_a_later_run_reads(tmp_path):
    params, ds = _tiny({"strategy": "grid", "space": {"optim.lr": [0.003, 0.01]}},
                       compute={"n_jobs": 1, "cache_dir": str(tmp_path)})
    first = select_config(params, ds, progress=False, log=lambda _line: None)
    again = select_config(params, ds, progress=False, log=lambda _line: None)
    assert first.cache == {"hits": 0, "misses": 4 + 3}  # 4 selections' first batches, 3 outer refits
    assert again.cache == {"hits": 7, "misses": 0}
    assert json.dumps(first.folds) == json.dumps(again.folds)


def test_only_searches_known_up_front_take_the_upfront_path():
    params, ds = _tiny({"strategy": "grid", "space": {"optim.lr": [0.003, 0.01]}})
    for search, expected in (({}, True), ({"strategy": "bayes"}, False), ({"pruning": "median"}, False),
                             ({"stop_when": 0.9}, False), ({"strategy": "random", "n_trials": 2}, True)):
        p = parse_params({**params.model_dump(by_alias=True),
                          "search": {**params.search.model_dump(), **search}})
        assert NestedCV(None, ds.y, None, [], p.search, p.cv, 0, {}).upfront() is expected, search


def test_the_cache_key_names_the_device_actually_used(monkeypatch):
    """compute.device: auto on a machine without a GPU is a CPU fit: the same key as device cpu; the same
    config on a GPU is another key (its numbers differ in the last bits)."""
    import torch

    from dlrig.select.scorers import TorchScorer
    from dlrig.train.fit import resolve_device

    params, ds = _tiny({"strategy": "grid", "space": {"optim.lr": [0.003]}})
    base = params.fit_config()
    jobs = [({}, np.arange(60), np.arange(60, 91), 0)]

    def key(device):
        return TorchScorer(ds.X, ds.y, 3, base, "accuracy", device=device).jobs_key("cv", jobs)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert key("auto") == key("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda _dev=None: "Some GPU")
    assert resolve_device("auto").type == "cuda"
    assert key("auto") == key("cuda") != key("cpu")
