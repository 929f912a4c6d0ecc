"""search.budget_minutes: a search ends when its time is up, says so, and can be reproduced without the clock.

The clock is faked (``dlrig.select.search._clock``): every evaluated trial advances it by one minute.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from dlrig.errors import UserError
from dlrig.params import RangeSpec, SearchParams, parse_params
from dlrig.select import search as search_mod
from dlrig.select.scorers import ResultCache, TorchScorer
from dlrig.select.search import Trial, run_search
from dlrig.select.space import build_space

BASE = parse_params({}).fit_config()
LR = RangeSpec(low=1e-4, high=1e-1, log=True, count=4)


class Clock:
    """Minutes pass only when a trial is evaluated."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(search_mod, "_clock", fake)
    return fake


def evaluator(log: list, clock: Clock | None = None):
    def evaluate(configs, pruner):
        log.append([dict(c) for c in configs])
        if clock is not None:
            clock.now += 60.0 * len(configs)  # one minute per trial
        lr = [c.get("optim.lr", 0.01) for c in configs]
        return [Trial(-1, dict(c), [0.9 - 0.05 * (math.log10(v) + 2) ** 2] * 3, [100] * 3)
                for c, v in zip(configs, lr, strict=True)]
    return evaluate


def dims(**entries):
    return build_space(entries or {"optim.lr": LR}, BASE)


def test_a_tiny_budget_stops_a_random_search_and_the_record_says_so(clock):
    log: list = []
    params = SearchParams(strategy="random", n_trials=8, budget_minutes=2.5)
    result = run_search(dims(), params, evaluator(log, clock), seed=3, start={})
    # checked before each trial: 0, 1, 2 minutes used -> runs; 3 >= 2.5 -> stops
    assert len(result.trials) == 3 and all(len(batch) == 1 for batch in log)
    record = result.to_json()
    assert record["stopped"] == "budget" and record["trials_reached"] == 3 and record["budget_minutes"] == 2.5
    assert record["budget_note"].startswith("to reproduce, set search.n_trials to 3")
    assert record["stopped_by_target"] is False

    # ... and it is reproduced with n_trials = trials reached (a budget that is not reached)
    again = run_search(dims(), SearchParams(strategy="random", n_trials=3, budget_minutes=1e6),
                       evaluator([], clock), seed=3, start={})
    assert [t.config for t in again.trials] == [t.config for t in result.trials]
    assert [t.scores for t in again.trials] == [t.scores for t in result.trials]
    assert again.to_json()["stopped"] is None and again.to_json()["trials_reached"] == 3


def test_without_a_budget_nothing_changes(clock):
    log: list = []
    result = run_search(dims(), SearchParams(strategy="random", n_trials=8), evaluator(log, clock), seed=3,
                        start={})
    assert len(result.trials) == 8 and len(log) == 1  # one batch, as before: stacked fits
    assert not {"stopped", "trials_reached", "budget_minutes", "budget_note"} & set(result.to_json())


def test_the_first_trial_always_runs(clock):
    clock.now = 1e9  # hopelessly late already
    result = run_search(dims(), SearchParams(strategy="random", n_trials=8, budget_minutes=0.001),
                        evaluator([], clock), seed=0, start={})
    assert len(result.trials) == 1 and result.best is result.trials[0] and result.to_json()["stopped"] == "budget"


def test_a_budget_stops_a_bayes_search_at_a_reproducible_point(clock):
    space = dims(**{"optim.lr": LR, "model.dropout": [0.0, 0.2]})  # a list: TPE, 5 start-up trials
    params = SearchParams(strategy="bayes", n_trials=8, budget_minutes=5.5)
    result = run_search(space, params, evaluator([], clock), seed=1, start={})
    assert len(result.trials) == 6 and result.to_json()["stopped"] == "budget"
    assert result.to_json()["budget_note"] == "to reproduce, set search.n_trials to 6"
    again = run_search(space, SearchParams(strategy="bayes", n_trials=6), evaluator([], clock), seed=1, start={})
    assert [t.config for t in again.trials] == [t.config for t in result.trials]


def test_a_bayes_note_says_when_n_trials_alone_does_not_reproduce_it(clock):
    params = SearchParams(strategy="bayes", n_trials=8, budget_minutes=2.5)  # GP: 4 start-up at 8, 1 at 3
    result = run_search(dims(), params, evaluator([], clock), seed=1, start={})
    assert len(result.trials) == 3
    assert "not exact for bayes here" in result.to_json()["budget_note"]


def test_a_coordinate_search_stops_too(clock):
    space = dims(**{"optim.lr": LR, "model.dropout": [0.0, 0.1, 0.2]})
    result = run_search(space, SearchParams(strategy="coordinate", n_trials=7, budget_minutes=3.5),
                        evaluator([], clock), seed=0, start={"optim.lr": 1e-3, "model.dropout": 0.1})
    assert len(result.trials) == 4 and result.to_json()["stopped"] == "budget"


def test_a_grid_is_refused_a_budget_and_never_cut_short(clock):
    with pytest.raises(UserError, match=r"search.budget_minutes applies to random, bayes and coordinate"):
        parse_params({"search": {"strategy": "grid", "budget_minutes": 1.0}})
    with pytest.raises(UserError, match=r"search.budget_minutes must be > 0"):
        parse_params({"search": {"strategy": "random", "budget_minutes": 0}})
    # a depth-3 candidate may switch the strategy to grid: the grid ignores the budget, and says so
    log: list = []
    params = SearchParams(strategy="random", budget_minutes=0.5)
    result = run_search(dims(), params, evaluator(log, clock), seed=0, start={}, strategy="grid")
    assert len(result.trials) == 4 and result.to_json()["stopped"] is None
    assert result.to_json()["budget_note"] == "not applied: a grid runs all its points"


def test_the_budget_is_no_part_of_a_trials_cache_key(clock, blobs, fast_config, tmp_path):
    """The budget run's trials are found in the cache by a run with another budget: same keys, same numbers."""
    X, y = blobs
    folds = [(np.arange(0, 120, 2), np.arange(1, 120, 2)), (np.arange(1, 120, 2), np.arange(0, 120, 2))]
    base = fast_config.with_overrides({"train.epochs": 2})
    cache = ResultCache(tmp_path / "cache")
    scorer = TorchScorer(X, y, 3, base, "accuracy", cache=cache)

    def evaluate(configs, pruner):
        clock.now += 60.0 * len(configs)
        return scorer.cv_trials(configs, folds, pruner, seed=7)

    first = run_search(dims(), SearchParams(strategy="random", n_trials=6, budget_minutes=1.5), evaluate,
                       seed=0, start={})
    assert len(first.trials) == 2 and cache.misses == 2
    second = run_search(dims(), SearchParams(strategy="random", n_trials=2, budget_minutes=600.0), evaluate,
                        seed=0, start={})
    assert cache.hits == 2 and cache.misses == 2  # every trial found under its key
    assert [t.scores for t in second.trials] == [t.scores for t in first.trials]
