"""Failed trials: a fit that diverges or raises a UserError is a trial with state ``failed`` and its reason;
the search goes on, the trial is never chosen, it is cached like any result and written to reports/cv."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dlrig.errors import UserError
from dlrig.params import CvParams, SearchParams, parse_params
from dlrig.select.nested import NestedCV
from dlrig.select.scorers import ResultCache, TorchScorer
from dlrig.select.space import build_space


@pytest.fixture(scope="module")
def tiny():
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 1.5, size=(3, 6))
    y = rng.integers(0, 3, 150)
    X = (centers[y] + rng.normal(0, 1, (150, 6))).astype(np.float32)
    return X, y


# SGD at lr 1e3 reaches inf/NaN within a few epochs; Adam (the default) at lr 1e3 only blows the loss up
# to ~1e6 without ever leaving the floats: both are divergence.
SGD = {"model": {"hidden": 16, "depth": 1}, "optim": {"name": "sgd"}, "train": {"epochs": 6, "batch_size": 16}}
ADAM = {"model": {"hidden": 16, "depth": 1}, "train": {"epochs": 4, "batch_size": 32}}


def select(X, y, params, space, *, batched, cache=None, cv=None):
    base = parse_params(params).fit_config()
    scorer = TorchScorer(X, y, 3, base, "accuracy", batched=batched, cache=cache)
    driver = NestedCV(scorer, y, None, build_space(space, base), SearchParams(strategy="grid"),
                      cv or CvParams(depth=2, outer_folds=3, inner_folds=2), 0, start={})
    return driver.select(np.arange(len(y)), ("final",)), scorer


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "per-fit"])
@pytest.mark.parametrize(("params", "says"), [(SGD, "diverged: non-finite training loss in epoch"),
                                              (ADAM, "diverged: training loss")], ids=["sgd", "adam"])
def test_a_diverging_lr_is_a_failed_trial_and_the_search_goes_on(tiny, batched, params, says):
    X, y = tiny
    chosen, _ = select(X, y, params, {"optim.lr": [1e-4, 1e3]}, batched=batched)
    low, high = chosen.search.trials
    assert high.config == {"optim.lr": 1e3} and high.state == "failed" and high.failed
    assert high.reason.startswith(says) and high.score is None and high.scores == []
    assert low.state == "complete" and low.reason is None and low.score is not None
    assert chosen.config == {"optim.lr": 1e-4} and chosen.search.best is low  # worst: never chosen
    # reports/cv/*.json carry the state and the reason.
    row = json.loads(json.dumps(chosen.search.to_json()))["trials"][1]
    assert row["state"] == "failed" and row["reason"] == high.reason
    assert row["score"] is None and row["pruned"] is False and row["metrics"] == {}


def test_a_failed_trial_is_cached_and_replayed(tiny, tmp_path):
    X, y = tiny
    first, scorer = select(X, y, SGD, {"optim.lr": [1e-4, 1e3]}, batched=True, cache=ResultCache(tmp_path))
    again, rerun = select(X, y, SGD, {"optim.lr": [1e-4, 1e3]}, batched=True, cache=ResultCache(tmp_path))
    assert scorer.cache.misses == 1 and rerun.cache.hits == 1 and rerun.cache.misses == 0
    assert again.search.to_json() == first.search.to_json()
    entry = json.loads(next(tmp_path.rglob("*.json")).read_text())["value"]
    assert [r["failed"] for r in entry] == [False, False, True, True]  # (config, fold) in order
    assert all("non-finite" in r["reason"] for r in entry[2:])


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "per-fit"])
def test_a_user_error_in_a_fit_is_a_failed_trial(tiny, batched):
    """A CNN on table data raises a UserError inside fit: that config fails, the MLP is chosen."""
    X, y = tiny
    chosen, _ = select(X, y, ADAM, {"model.name": ["cnn", "mlp"]}, batched=batched)
    by_name = {t.config["model.name"]: t for t in chosen.search.trials}
    assert by_name["cnn"].state == "failed"
    assert by_name["cnn"].reason.startswith("error: model.name=cnn needs image data")
    assert by_name["cnn"].info["epochs"] == [0, 0]
    assert by_name["mlp"].state == "complete" and chosen.config == {"model.name": "mlp"}


def test_every_trial_failed_is_a_user_error_naming_the_reason(tiny):
    X, y = tiny
    with pytest.raises(UserError) as err:
        select(X, y, SGD, {"optim.lr": [1e3, 3e3]}, batched=False)
    message = str(err.value)
    assert message.startswith("final selection on all training rows: search: every trial failed (2 failed")
    assert "diverged: non-finite training loss" in message and "trials [0]" in message


def test_the_winner_failing_its_refit_is_a_clear_error(tiny):
    """Outside the search (a refit, a baseline) a fit with nothing to score is a UserError, not a trial."""
    X, y = tiny
    base = parse_params(SGD).fit_config()
    scorer = TorchScorer(X, y, 3, base, "accuracy", batched=False)
    rows = np.arange(len(y))
    # Early stopping on: the best epoch before the divergence is restored and scored, as before.
    assert scorer.holdout({"optim.lr": 1e3}, rows[:100], rows[100:], seed=0)["accuracy"] >= 0
    # Off: the weights are NaN, nothing to score.
    with pytest.raises(UserError, match=r"on 100 rows \(seed 0\) failed: diverged: non-finite training loss"):
        scorer.holdout({"optim.lr": 1e3, "train.early_stopping": None}, rows[:100], rows[100:], seed=0)
    with pytest.raises(UserError, match="model.name=cnn needs image data"):
        scorer.fit_score([({"model.name": "cnn"}, rows[:100], rows[100:], 0)], None)


def test_analysis_counts_failed_trials_apart(tiny):
    """select.analysis excludes failed trials from every mean and counts them (it reads score/pruned)."""
    from dlrig.select.analysis import analyze_search

    X, y = tiny
    chosen, _ = select(X, y, ADAM, {"optim.lr": [1e-4, 1e-2, 1e3]}, batched=True)
    trials = chosen.search.to_json()["trials"]
    space = {"optim.lr": {"type": "float", "values": [1e-4, 1e-2, 1e3], "log": True}}
    result = analyze_search(trials, space, "accuracy")
    assert result["counts"] == {"trials": 3, "complete": 2, "pruned": 0, "failed": 1}
    assert any("failed" in w for w in result["warnings"])
    assert all(r["trial"] != 2 for r in result["ranking"])


def test_pruned_is_a_state_too_and_replays_from_the_cache(tiny, tmp_path):
    X, y = tiny
    base = parse_params({**ADAM, "train": {"epochs": 6, "batch_size": 32}}).fit_config()
    lrs = [1e-2, 3e-3, 1e-3, 3e-4, 1e-4]  # best first: the later, worse ones get pruned

    def run():
        scorer = TorchScorer(X, y, 3, base, "accuracy", cache=ResultCache(tmp_path))
        driver = NestedCV(scorer, y, None, build_space({"optim.lr": lrs}, base),
                          SearchParams(strategy="grid", pruning="median", prune_after=2),
                          CvParams(depth=2, outer_folds=3, inner_folds=2), 0, start={})
        return driver.select(np.arange(len(y)), ("final",)).search

    search = run()
    pruned = [t for t in search.trials if t.pruned]
    assert pruned and all(t.state == "pruned" and t.score is None for t in pruned)
    assert all(t.reason.startswith("pruned (median) at epoch") for t in pruned)
    assert all(t.to_json()["pruned"] is True for t in pruned)
    assert search.best.state == "complete"
    assert run().to_json() == search.to_json()  # from the cache: the pruner's curves are replayed


def test_train_stage_writes_the_failed_trial_to_reports_cv(tmp_path):
    """The issue's bar: a space with optim.lr [1e-4, 1e3] finishes; 1e3 is failed (diverged) in reports/cv."""
    import yaml
    from tests.stages.test_stages import TINY, complete, stage

    params = {**TINY, "search": {"space": {"optim.lr": [1e-4, 1e3]}}, "compute": {"n_jobs": 1, "cache_dir": None}}
    p, raw, meta = str(tmp_path / "params.yaml"), str(tmp_path / "raw.npz"), str(tmp_path / "meta.json")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(complete(params)))
    stage("prepare")(["--params", p, "--out", raw, "--meta", meta])
    stage("validate")(["--params", p, "--data", raw, "--meta", meta, "--out", str(tmp_path / "v.json"),
                       "--summary", str(tmp_path / "v.md")])
    stage("split")(["--params", p, "--data", raw, "--meta", meta, "--validation", str(tmp_path / "v.json"),
                    "--train", str(tmp_path / "train.npz"), "--test", str(tmp_path / "test.npz"),
                    "--report", str(tmp_path / "split.json")])
    stage("train")(["--params", p, "--train", str(tmp_path / "train.npz"), "--meta", meta,
                    "--model", str(tmp_path / "model.pt"), "--logdir", str(tmp_path / "train"),
                    "--cvdir", str(tmp_path / "cv"), "--run-info", str(tmp_path / "run.json")])
    summary = json.loads((tmp_path / "cv/summary.json").read_text())
    folds = json.loads((tmp_path / "cv/folds.json").read_text())
    searches = [summary["final"]["search"]] + [f["search"] for f in folds]
    for search in searches:
        by_lr = {t["config"]["optim.lr"]: t for t in search["trials"]}
        assert by_lr[1e3]["state"] == "failed" and by_lr[1e3]["reason"].startswith("diverged: training loss")
        assert by_lr[1e3]["score"] is None and by_lr[1e-4]["state"] == "complete"
        assert search["best_config"] == {"optim.lr": 1e-4}
    assert summary["analysis"]["counts"]["failed"] == 1
    assert (tmp_path / "model.pt").is_file()
