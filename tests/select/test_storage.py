"""search.storage: a Bayesian search on shared storage (an Optuna journal file) that several processes add to."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from dlrig.params import SearchParams

# One process's search: a fake evaluate (no training), its trials written to `out` as JSON.
_PROCESS = textwrap.dedent("""
    import json, sys
    from dlrig.params import SearchParams
    from dlrig.select.search import Trial, run_search
    from dlrig.select.space import Dimension

    storage, out = sys.argv[1], sys.argv[2]
    dims = [Dimension("optim.lr", "float", None, low=1e-4, high=1e-1, log=True),
            Dimension("model.dropout", "float", None, low=0.0, high=0.5)]

    def evaluate(configs, pruner):
        return [Trial(0, c, [1.0 - abs(c["model.dropout"] - 0.2)], [10]) for c in configs]

    params = SearchParams(strategy="bayes", n_trials=4, storage=storage)
    result = run_search(dims, params, evaluate, seed=7, start={})
    json.dump([t.config for t in result.trials], open(out, "w"))
""")


def _dims():
    from dlrig.select.space import Dimension

    return [Dimension("optim.lr", "float", None, low=1e-4, high=1e-1, log=True),
            Dimension("model.dropout", "float", None, low=0.0, high=0.5)]


def test_two_processes_share_one_journal_study(tmp_path):
    import json

    import optuna

    from dlrig.select.search import _storage, study_name

    journal = str(tmp_path / "study.journal")
    script = tmp_path / "one.py"
    script.write_text(_PROCESS)
    procs = [subprocess.Popen([sys.executable, str(script), journal, str(tmp_path / f"out{i}.json")])
             for i in range(2)]
    try:
        assert [p.wait(timeout=50) for p in procs] == [0, 0]
    finally:
        for p in procs:
            p.kill()
    mine = [json.loads((tmp_path / f"out{i}.json").read_text()) for i in range(2)]
    study = optuna.load_study(study_name=study_name(_dims(), 4, 7), storage=_storage(journal))
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 8  # the union: each process's 4 trials, in one study
    def key(config):  # the search rounds a proposal to 6 significant digits (Dimension.cast)
        return sorted((k, float(f"{v:.6g}")) for k, v in config.items())

    assert len(mine[0]) == len(mine[1]) == 4
    assert sorted(key(c) for c in mine[0] + mine[1]) == sorted(key(t.params) for t in done)


def test_in_memory_search_is_unchanged_and_reproducible():
    from dlrig.select.search import Trial, run_search

    def evaluate(configs, pruner):
        return [Trial(0, c, [1.0 - abs(c["model.dropout"] - 0.2)], [10]) for c in configs]

    params = SearchParams(strategy="bayes", n_trials=4)
    runs = [run_search(_dims(), params, evaluate, seed=7, start={}) for _ in range(2)]
    assert [t.config for t in runs[0].trials] == [t.config for t in runs[1].trials]


def test_storage_is_refused_when_empty_and_named_in_the_params():
    with pytest.raises(ValueError, match="storage"):
        SearchParams(storage=" ")
    assert SearchParams(storage="sqlite:///x.db").storage == "sqlite:///x.db"
