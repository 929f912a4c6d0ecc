"""Lock-step selections (select.run._lockstep): the outer folds' and the final selection's searches step
side by side, each round's fits trained together, and the record is byte for byte the one of one selection
at a time."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from tests.select.test_upfront import _record, _tiny

from dlrig.errors import UserError
from dlrig.params import parse_params
from dlrig.select import run
from dlrig.select.nested import NestedCV
from dlrig.select.run import select_config

BAYES = {"strategy": "bayes", "n_trials": 4, "space": {"optim.lr": {"low": 1e-3, "high": 1e-1, "log": True},
                                                      "model.hidden": [6, 10]}}


@pytest.mark.parametrize("search", [
    BAYES,
    {"strategy": "random", "n_trials": 4, "stop_when": 0.9,
     "space": {"optim.lr": {"low": 1e-3, "high": 1e-1, "log": True}}},
])
def test_lockstep_gives_the_selection_of_one_selection_at_a_time(monkeypatch, search):
    params, ds = _tiny(search)
    rounds: list[list[int]] = []
    prefetch = run.TorchScorer.prefetch

    def counting(self, calls, holdouts=(), n_jobs=1):
        rounds.append([len(c) * len(f) for c, f, _ in calls] + [1] * len(holdouts))
        return prefetch(self, calls, holdouts, n_jobs)

    monkeypatch.setattr(run.TorchScorer, "prefetch", counting)
    monkeypatch.setattr(run, "_bigger_stacks_pay", lambda *_args: True)  # as on a GPU
    together = select_config(params, ds, progress=False, log=lambda _line: None)
    assert "lockstep" in together.seconds
    # the first round: one trial (x 2 inner folds) of each of the 3 outer selections in one stack, then the
    # final selection's in another; the last round: the 3 outer refits together
    assert rounds[0] == [2, 2, 2] and rounds[1] == [2]
    assert rounds[-1] == [1, 1, 1]
    params.compute.n_jobs = 2  # each round's stacks cut into shares, this process and a worker
    shared = select_config(params, ds, progress=False, log=lambda _line: None)
    assert "lockstep" in shared.seconds and _record(shared) == _record(together)
    params.compute.n_jobs = 1
    monkeypatch.setattr(NestedCV, "lockstep", lambda self: False)
    alone = select_config(params, ds, progress=False, log=lambda _line: None)
    assert "lockstep" not in alone.seconds
    assert _record(together) == _record(alone)
    assert not [t for t in threading.enumerate() if t.name.startswith("dlrig-lockstep")]


def test_a_failing_selection_stops_the_run_and_leaves_no_thread(monkeypatch):
    params, ds = _tiny({**BAYES, "space": {"optim.lr": {"low": 1e6, "high": 1e7, "log": True}}})
    monkeypatch.setattr(run, "_bigger_stacks_pay", lambda *_args: True)
    with pytest.raises(UserError, match="every trial failed"):
        select_config(params, ds, progress=False, log=lambda _line: None)
    assert not [t for t in threading.enumerate() if t.name.startswith("dlrig-lockstep")]


def test_only_searches_that_ask_step_by_step_take_the_lockstep_path():
    ds_y = np.arange(12) % 2
    for search, expected in [
        ({"strategy": "bayes"}, True),
        ({"strategy": "grid"}, False),  # known up front: _train_upfront
        ({"strategy": "random"}, False),
        ({"strategy": "random", "stop_when": 0.9}, True),
        ({"strategy": "bayes", "pruning": "median"}, False),
        ({"strategy": "bayes", "budget_minutes": 1.0}, False),
        ({"strategy": "bayes", "storage": "journal.log"}, False),
    ]:
        p = parse_params({"search": search, "cv": {"depth": 2}})
        assert NestedCV(None, ds_y, None, [], p.search, p.cv, 0, {}).lockstep() is expected, search
