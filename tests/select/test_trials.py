"""reports/cv/trials.csv: every trial of every search as one flat table, the shape of scikit-learn's
``cv_results_`` (one row per outer-fold search and trial, plus the final search)."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from tests.report.report_files import cv_files

from dlrig.select.search import SearchResult, Trial
from dlrig.select.trials import trial_rows, trials_csv


def read(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


@pytest.mark.parametrize("depth", [2, 3])
def test_one_row_per_outer_fold_and_trial_plus_the_final_search(depth):
    summary, folds = cv_files(depth)
    rows = read(trials_csv(trial_rows(folds, summary["final"], list(summary["space"]))))
    n = len(summary["final"]["search"]["trials"])  # every search has the same grid here
    assert [r["search"] for r in rows] == [f"outer-{k}" for k in range(3) for _ in range(n)] + ["final"] * n
    assert [r["outer_fold"] for r in rows[:n]] == ["0"] * n and rows[-1]["outer_fold"] == ""
    for fold in folds:  # the row's numbers are the record's
        search = fold["search"]
        mine = [r for r in rows if r["search"] == f"outer-{fold['fold']}"]
        for row, trial in zip(mine, search["trials"], strict=True):
            assert float(row["mean_inner_score"]) == trial["score"]
            assert [float(row[f"split{k}_inner_score"]) for k in range(3)] == trial["scores"]
            assert float(row["param_optim.lr"]) == trial["config"]["optim.lr"]
            assert float(row["std_inner_score"]) == pytest.approx(np.std(trial["scores"]), abs=1e-6)
        chosen = [r for r in mine if r["chosen"] == "true"]
        assert len(chosen) == 1 and int(chosen[0]["trial"]) == search["best_trial"]
        assert chosen[0]["rank_inner_score"] == "1"
    assert ("candidate" in rows[0]) == (depth == 3)
    assert {r["state"] for r in rows} == {"complete"} and "seconds" not in ",".join(rows[0])


def test_depth_one_has_the_one_search():
    summary, folds = cv_files(1)
    rows = trial_rows(folds, summary["final"], list(summary["space"]))
    assert {r["search"] for r in rows} == {"final"} and len(rows) == len(summary["final"]["search"]["trials"])


def test_failed_and_pruned_trials_have_a_state_and_reason_but_no_rank():
    trials = [
        Trial(0, {"optim.lr": 0.1}, [0.8, 0.9], [10, 10]),
        Trial(1, {"optim.lr": 1.0}, [], [10, 10], state="failed", reason="diverged: loss is nan (fold 1 of 2)"),
        Trial(2, {"optim.lr": 0.01}, [0.9, 0.8], [10, 10]),  # ties with trial 0: both rank 1
        Trial(3, {"optim.lr": 0.001}, [], [10, 10], state="pruned", reason="median rule at epoch 5"),
        Trial(4, {"optim.lr": 0.3}, [0.5, 0.7], [10, 10]),
    ]
    search = SearchResult(trials, trials[0], False).to_json()
    rows = read(trials_csv(trial_rows([], {"search": search, "candidate": None}, ["optim.lr"])))
    assert [r["rank_inner_score"] for r in rows] == ["1", "", "1", "", "3"]
    assert [r["state"] for r in rows] == ["complete", "failed", "complete", "pruned", "complete"]
    assert rows[1]["reason"] == "diverged: loss is nan (fold 1 of 2)" and rows[1]["mean_inner_score"] == ""
    assert rows[3]["split0_inner_score"] == "" and rows[0]["reason"] == ""


def test_same_records_give_the_same_bytes():
    summary, folds = cv_files(2)
    again = json.loads(json.dumps([folds, summary]))  # as read back from the JSON files
    first = trials_csv(trial_rows(folds, summary["final"], list(summary["space"])))
    assert trials_csv(trial_rows(again[0], again[1]["final"], list(again[1]["space"]))) == first


def test_columns_match_gridsearchcv_cv_results_for_the_same_scores():
    """The same grid, scored by GridSearchCV, read through our rows: means, stds and ranks agree."""
    X, y = make_classification(60, 5, random_state=0)
    grid = GridSearchCV(LogisticRegression(), {"C": [0.001, 0.1, 10.0]}, cv=StratifiedKFold(3)).fit(X, y)
    res = grid.cv_results_
    trials = [Trial(i, {"C": res["param_C"][i]}, [float(res[f"split{k}_test_score"][i]) for k in range(3)],
                    [20, 20, 20]) for i in range(3)]
    best = max(trials, key=lambda t: (t.score, -t.number))
    rows = trial_rows([], {"search": SearchResult(trials, best, False).to_json()}, ["C"])
    assert [r["mean_inner_score"] for r in rows] == pytest.approx(list(res["mean_test_score"]), abs=1e-6)
    assert [r["std_inner_score"] for r in rows] == pytest.approx(list(res["std_test_score"]), abs=1e-6)
    assert [r["rank_inner_score"] for r in rows] == list(res["rank_test_score"])
