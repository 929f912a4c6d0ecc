import numpy as np
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, cross_val_score

from dlrig.params import parse_params
from dlrig.train import fit, predict_proba
from dlrig.train.sklearn import TorchClassifier


def test_sklearn_wrapper_clones_and_searches(blobs):
    X, y = blobs
    base = parse_params({"model": {"hidden": 16, "depth": 1}, "train": {"epochs": 30}}).fit_config()
    clf = TorchClassifier(base, seed=0, optim__lr=0.01)
    twin = clone(clf)
    assert twin.get_params()["optim__lr"] == 0.01 and not hasattr(twin, "model_")
    scores = cross_val_score(clf, X, y, cv=3)
    assert scores.mean() > 0.9
    search = GridSearchCV(clf, {"optim__lr": [0.001, 0.01]}, cv=2).fit(X, y)
    assert search.best_params_["optim__lr"] in (0.001, 0.01)


def test_wrapper_matches_the_fit_loop(blobs):
    X, y = blobs
    base = parse_params({"model": {"hidden": 16, "depth": 1}, "train": {"epochs": 5}}).fit_config()
    clf = TorchClassifier(base, seed=3, optim__lr=0.01).fit(X, y)
    direct = fit(X, y, 3, base.with_overrides({"optim.lr": 0.01}), seed=3).model
    assert np.array_equal(clf.predict_proba(X), predict_proba(direct, X))
