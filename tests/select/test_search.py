"""Strategies on a fake objective: what each proposes, budgets, refinement, satisficing and pruning."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dlrig.params import RangeSpec, SearchParams, parse_params
from dlrig.select.search import Pruner, Trial, run_search
from dlrig.select.space import build_space

BASE = parse_params({}).fit_config()


def objective(config):
    """Peaks at lr = 0.01 (log scale); hidden barely matters."""
    lr = config.get("optim.lr", 0.01)
    return 0.9 - 0.05 * (math.log10(lr) + 2) ** 2 + 0.001 * config.get("model.hidden", 0) / 256


def fake_evaluate(log):
    def evaluate(configs, pruner):
        log.append([dict(c) for c in configs])
        return [Trial(-1, dict(c), [objective(c)] * 3, [100] * 3) for c in configs]
    return evaluate


def space(**entries):
    return build_space(entries, BASE)


def test_log_range_points_and_int_keys():
    dims = space(**{"optim.lr": RangeSpec(low=1e-4, high=1e-1, log=True, count=4), "model.hidden": [32, 256]})
    assert [d.name for d in dims] == ["model.hidden", "optim.lr"]  # sorted, like ParameterGrid
    assert dims[1].grid() == [0.0001, 0.001, 0.01, 0.1]
    assert dims[0].kind == "int" and dims[0].log is False
    base2 = space(**{"optim.lr": RangeSpec(low=1, high=16, log=True, base=2, count=5)})
    assert base2[0].grid() == [1.0, 2.0, 4.0, 8.0, 16.0]
    ints = space(**{"model.hidden": RangeSpec(low=16, high=256, log=True, count=5)})
    assert ints[0].grid() == [16, 32, 64, 128, 256]


def test_grid_evaluates_every_point_once_in_one_batch():
    log = []
    dims = space(**{"optim.lr": RangeSpec(low=1e-4, high=1e-1, log=True, count=4), "model.hidden": [32, 256]})
    result = run_search(dims, SearchParams(strategy="grid"), fake_evaluate(log), seed=0, start={})
    assert len(log) == 1 and len(log[0]) == 8
    assert result.best.config == {"model.hidden": 256, "optim.lr": 0.01}


def test_grid_refinement_reuses_evaluated_points():
    log = []
    dims = space(**{"optim.lr": RangeSpec(low=1e-4, high=1.0, log=True, count=5, refine=1)})
    result = run_search(dims, SearchParams(strategy="grid"), fake_evaluate(log), seed=0, start={})
    first, second = log
    assert first == [{"optim.lr": v} for v in (0.0001, 0.001, 0.01, 0.1, 1.0)]
    refined = [c["optim.lr"] for c in second]
    assert all(0.001 < v < 0.1 for v in refined) and 0.01 not in refined  # 0.01 was reused, not re-run
    assert result.best.config == {"optim.lr": 0.01}
    assert len(result.trials) == 5 + len(refined)


def test_random_search_is_quasi_random_seeded_and_in_range():
    dims = space(**{"optim.lr": RangeSpec(low=1e-4, high=1e-1, log=True), "model.dropout": [0.0, 0.1, 0.2]})
    runs = [run_search(dims, SearchParams(strategy="random", n_trials=16), fake_evaluate([]), seed=s, start={})
            for s in (1, 1, 2)]
    lrs = [[t.config["optim.lr"] for t in r.trials] for r in runs]
    assert lrs[0] == lrs[1] and lrs[0] != lrs[2]
    assert len(lrs[0]) == 16 and all(1e-4 <= v <= 1e-1 for v in lrs[0])
    decades = np.floor(np.log10(lrs[0]))
    assert set(decades) == {-4, -3, -2}  # log-uniform: every decade is visited


def test_bayes_finds_the_peak_with_gp_on_ranges():
    dims = space(**{"optim.lr": RangeSpec(low=1e-4, high=1.0, log=True)})
    result = run_search(dims, SearchParams(strategy="bayes", n_trials=12), fake_evaluate([]), seed=0, start={})
    assert len(result.trials) <= 12
    assert abs(math.log10(result.best.config["optim.lr"]) + 2) < 0.5


def test_bayes_with_a_categorical_uses_tpe_and_respects_budget():
    dims = space(**{"optim.lr": RangeSpec(low=1e-4, high=1.0, log=True), "optim.name": ["adam", "sgd"]})
    result = run_search(dims, SearchParams(strategy="bayes", n_trials=10), fake_evaluate([]), seed=0, start={})
    assert len(result.trials) <= 10 and {t.config["optim.name"] for t in result.trials} <= {"adam", "sgd"}


def test_coordinate_moves_one_hyperparameter_at_a_time():
    log = []
    dims = space(**{"optim.lr": [0.0001, 0.001, 0.01, 0.1], "model.hidden": [32, 64, 256]})
    result = run_search(dims, SearchParams(strategy="coordinate", n_trials=20), fake_evaluate(log),
                        seed=0, start={"optim.lr": 0.001, "model.hidden": 64})
    hidden_sweep, lr_sweep = log
    assert {c["optim.lr"] for c in hidden_sweep} == {0.001}  # lr held while hidden moves
    assert {c["model.hidden"] for c in lr_sweep} == {256}  # then hidden held at its best
    assert result.best.config == {"model.hidden": 256, "optim.lr": 0.01}
    assert len(result.trials) == 3 + 3  # (64, 0.001) was not evaluated twice


def test_stop_when_takes_the_first_config_good_enough():
    log = []
    dims = space(**{"optim.lr": [0.0001, 0.001, 0.01, 0.1]})
    params = SearchParams(strategy="grid", stop_when=0.84)
    result = run_search(dims, params, fake_evaluate(log), seed=0, start={})
    assert result.stopped_early and result.best.config == {"optim.lr": 0.001}  # 0.85 >= 0.84, found 2nd
    assert len(result.trials) == 2 and all(len(batch) == 1 for batch in log)


def test_median_pruner_rule():
    pruner = Pruner("median", after=2)
    assert not pruner.should_stop(3, 0.1)  # nothing finished yet
    pruner.record({1: 0.5, 2: 0.6, 3: 0.7})
    pruner.record({1: 0.5, 2: 0.8, 3: 0.9})
    assert pruner.should_stop(3, 0.75) and not pruner.should_stop(3, 0.85)
    assert not pruner.should_stop(1, 0.0)  # before prune_after


def test_halving_pruner_only_cuts_at_rungs():
    pruner = Pruner("halving", after=2)
    for top in (0.5, 0.6, 0.7, 0.8):
        pruner.record({e: top for e in range(1, 9)})
    assert pruner.should_stop(2, 0.55) and pruner.should_stop(4, 0.55)
    assert not pruner.should_stop(3, 0.55)  # not a rung
    assert not pruner.should_stop(4, 0.75)


def test_search_params_validation_names_the_key():
    from dlrig.errors import UserError

    with pytest.raises(UserError, match="search.space.model.hiddn: not a key"):
        parse_params({"search": {"space": {"model.hiddn": [1, 2]}}})
    with pytest.raises(UserError, match=r"search.space.optim.lr.low must be > 0 with log: true"):
        parse_params({"search": {"space": {"optim.lr": {"low": 0, "high": 1, "log": True}}}})
    with pytest.raises(UserError, match="search.space.model.dropout: model.dropout must be < 1"):
        parse_params({"search": {"space": {"model.dropout": [0.1, 1.5]}}})


# ------------------------------------------------------------------------------------ trial states
def failing_evaluate(log, fails=lambda c: c.get("optim.lr", 0) > 0.05):
    """The fake objective, but configs with lr above 0.05 fail (as a diverged fit does)."""
    def evaluate(configs, pruner):
        log.append([dict(c) for c in configs])
        return [Trial(-1, dict(c), [], [100] * 3, state="failed", reason="diverged: non-finite training loss")
                if fails(c) else Trial(-1, dict(c), [objective(c)] * 3, [100] * 3) for c in configs]
    return evaluate


def test_trial_states_score_and_json():
    done = Trial(0, {"a": 1}, [0.5, 0.7], [10, 10])
    failed = Trial(1, {"a": 2}, [0.9], [10], state="failed", reason="diverged: non-finite training loss")
    pruned = Trial(2, {"a": 3}, [0.9], [10], state="pruned", reason="pruned (median) at epoch 5")
    assert (done.state, done.score, done.pruned, done.failed) == ("complete", 0.6, False, False)
    assert failed.score is None and failed.failed and not failed.pruned  # scores never count when failed
    assert pruned.score is None and pruned.pruned
    row = failed.to_json()
    assert (row["state"], row["reason"], row["pruned"], row["score"]) == (
        "failed", "diverged: non-finite training loss", False, None)
    assert done.to_json()["state"] == "complete" and done.to_json()["reason"] is None
    assert pruned.to_json()["pruned"] is True
    with pytest.raises(ValueError, match="trial state must be one of"):
        Trial(3, {}, [], [], state="crashed")


@pytest.mark.parametrize("strategy", ["grid", "random", "coordinate", "bayes"])
def test_failed_trials_are_kept_and_never_chosen(strategy):
    dims = space(**{"optim.lr": RangeSpec(low=1e-4, high=1.0, log=True, count=5)})
    params = SearchParams(strategy=strategy, n_trials=6)
    result = run_search(dims, params, failing_evaluate([]), seed=0, start={"optim.lr": 1e-3})
    failed = [t for t in result.trials if t.failed]
    assert failed and all(t.config["optim.lr"] > 0.05 for t in failed)
    assert result.best.state == "complete" and result.best.config["optim.lr"] <= 0.05
    assert [t.number for t in result.trials] == list(range(len(result.trials)))


def test_grid_refinement_goes_on_past_failed_trials():
    log = []
    dims = space(**{"optim.lr": RangeSpec(low=1e-4, high=1.0, log=True, count=5, refine=1)})
    result = run_search(dims, SearchParams(strategy="grid"), failing_evaluate(log), seed=0, start={})
    assert len(log) == 2 and result.best.config["optim.lr"] == pytest.approx(0.01, rel=0.5)
    assert sum(t.failed for t in result.trials) == 2  # 0.1 and 1.0


def test_every_trial_failed_names_the_reasons():
    from dlrig.errors import UserError

    dims = space(**{"optim.lr": [0.1, 1.0]})
    with pytest.raises(UserError, match=r"every trial failed \(2 failed, 0 pruned\): diverged: non-finite "
                                        r"training loss \(trials \[0, 1\]\)"):
        run_search(dims, SearchParams(strategy="grid"), failing_evaluate([]), seed=0, start={})


def test_every_trial_pruned_says_so():
    from dlrig.errors import UserError

    def evaluate(configs, pruner):
        return [Trial(-1, dict(c), [], [100], state="pruned") for c in configs]

    with pytest.raises(UserError, match="all 2 trials were pruned before any finished; loosen search.pruning"):
        run_search(space(**{"optim.lr": [0.1, 1.0]}), SearchParams(strategy="grid"), evaluate, seed=0, start={})
