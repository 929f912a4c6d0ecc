"""The nested-CV driver against scikit-learn (the oracle), and its depth semantics."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from dlrig.errors import UserError
from dlrig.params import CvParams, SearchParams
from dlrig.select.nested import NestedCV, summarise
from dlrig.select.scorers import SklearnScorer
from dlrig.select.space import Dimension


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X[:600].astype(np.float32), y[:600]


def test_nested_cv_matches_sklearn_cross_val_score_of_grid_search(digits):
    X, y = digits
    estimator = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300))
    grid = {"logisticregression__C": [0.001, 0.01, 0.1, 1.0]}
    seed = 7
    outer = StratifiedKFold(5, shuffle=True, random_state=seed)
    inner = StratifiedKFold(3, shuffle=True, random_state=seed + 1)
    expected = cross_val_score(GridSearchCV(estimator, grid, cv=inner), X, y, cv=outer)

    dims = [Dimension("logisticregression__C", "float", tuple(grid["logisticregression__C"]))]
    driver = NestedCV(SklearnScorer(estimator, X, y), y, None, dims, SearchParams(strategy="grid"),
                      CvParams(depth=2, outer_folds=5, inner_folds=3), seed, start={})
    rows = np.arange(len(y))
    records = [driver.outer_fold(k, tr, te) for k, (tr, te) in enumerate(driver.outer_folds(rows))]
    assert np.allclose([r["outer_score"] for r in records], expected, atol=1e-12)
    # And the config chosen in each outer fold is the one GridSearchCV chooses there.
    for record, (tr, _) in zip(records, outer.split(X, y), strict=True):
        gs = GridSearchCV(estimator, grid, cv=inner).fit(X[tr], y[tr])
        assert record["best_config"] == gs.best_params_
        assert record["best_inner_score"] == pytest.approx(gs.best_score_, abs=1e-6)


def test_depth_one_is_plain_cv_and_labelled_optimistic(digits):
    X, y = digits
    estimator = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300))
    grid = [0.001, 0.01, 0.1, 1.0]
    dims = [Dimension("logisticregression__C", "float", tuple(grid))]
    driver = NestedCV(SklearnScorer(estimator, X, y), y, None, dims, SearchParams(),
                      CvParams(depth=1, outer_folds=4), 3, start={})
    records, chosen = driver.plain_cv(np.arange(len(y)))
    gs = GridSearchCV(estimator, {"logisticregression__C": grid},
                      cv=StratifiedKFold(4, shuffle=True, random_state=3)).fit(X, y)
    assert chosen.config == gs.best_params_
    assert np.mean([r["outer_score"] for r in records]) == pytest.approx(gs.best_score_, abs=1e-6)
    summary = summarise(records, "accuracy", depth=1)
    assert summary["optimistic"] is True and summary["optimism"] is None


def test_depth_three_chooses_between_candidates_inside_each_outer_fold(digits):
    X, y = digits
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import SVC

    class Switch:  # a tiny estimator that picks a family by name, so candidates can differ
        def __init__(self, family="svc", C=1.0):
            self.family, self.C = family, C

        def get_params(self, deep=False):
            return {"family": self.family, "C": self.C}

        def set_params(self, **kw):
            for k, v in kw.items():
                setattr(self, k, v)
            return self

        def fit(self, X, y):
            self.model_ = (SVC(C=self.C) if self.family == "svc" else KNeighborsClassifier(50)).fit(X, y)
            return self

        def score(self, X, y):
            return self.model_.score(X, y)

    dims = [Dimension("C", "float", (0.1, 10.0))]
    cv = CvParams(depth=3, outer_folds=3, middle_folds=2, inner_folds=2,
                  candidates={"knn": {"family": "knn"}, "svc": {"family": "svc"}})
    driver = NestedCV(SklearnScorer(Switch(), X, y), y, None, dims, SearchParams(), cv, 0, start={})
    rows = np.arange(len(y))
    records = [driver.outer_fold(k, tr, te) for k, (tr, te) in enumerate(driver.outer_folds(rows))]
    for r in records:
        assert set(r["candidates"]) == {"knn", "svc"}
        assert r["candidate"] == max(r["candidates"], key=r["candidates"].get)
        assert r["best_config"]["family"] == r["candidate"]
    assert all(r["candidate"] == "svc" for r in records)  # SVC beats a 50-NN on digits


def test_summary_optimism_by_hand():
    records = [{"outer_score": 0.90, "best_inner_score": 0.95}, {"outer_score": 0.80, "best_inner_score": 0.81}]
    summary = summarise(records, "accuracy", depth=2)
    assert summary["mean"] == pytest.approx(0.85) and summary["optimism"] == pytest.approx(0.03)
    assert summary["optimism_per_fold"] == pytest.approx([0.05, 0.01])


def test_a_selection_where_every_trial_failed_names_its_place(digits):
    """Failed trials never win; when nothing else is left, the error says which selection and why."""
    from dlrig.select.search import Trial

    X, y = digits

    class Failing:
        metric = "accuracy"

        def cv_trials(self, configs, folds, pruner, seed):
            return [Trial(-1, c, [], [len(te) for _, te in folds], state="failed",
                          reason="diverged: non-finite training loss in epoch 2 (fold 1 of 3)") for c in configs]

        def holdout(self, config, train, test, seed):  # pragma: no cover - never reached
            raise AssertionError

    dims = [Dimension("C", "float", (0.1, 1.0))]
    driver = NestedCV(Failing(), y, None, dims, SearchParams(strategy="grid"),
                      CvParams(depth=2, outer_folds=3, inner_folds=3), 0, start={})
    train, test = driver.outer_folds(np.arange(len(y)))[1]
    with pytest.raises(UserError, match=r"^outer fold 1: search: every trial failed \(2 failed, 0 pruned\): "
                                        r"diverged: non-finite training loss in epoch 2 \(fold 1 of 3\) "
                                        r"\(trials \[0, 1\]\)"):
        driver.outer_fold(1, train, test)
