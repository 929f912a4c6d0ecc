"""Score the tuned model and its baselines on the designs the comparisons need: the nested-CV outer folds,
the held-out test split, and Dietterich's 5x2 splits of the training split.

Every fit sees only its own training rows (scikit-learn pipelines standardise inside the fit; dlrig models
carry their in-fold scaler).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dlrig.data.dataset import Dataset
from dlrig.evaluate.compare import (
    compare_fold_scores,
    compare_predictions,
    five_by_two_splits,
    five_by_two_test,
    make_sklearn_baseline,
)
from dlrig.evaluate.features import FEATURE_BASELINES, make_feature_baseline
from dlrig.params import FitConfig, Params
from dlrig.progress import NO_PROGRESS, Tally
from dlrig.seeds import derive_seed
from dlrig.select.scorers import TorchScorer
from dlrig.train.predict import score_proba


class _Model:
    """Fit on rows, score on rows, predict the test split: a dlrig config or a scikit-learn pipeline."""

    def __init__(self, train: Dataset, params: Params, base: FitConfig, config: dict[str, Any],
                 sklearn: Any = None, progress: Tally = NO_PROGRESS) -> None:
        self.train, self.config, self.sklearn, self.params = train, config, sklearn, params
        self.progress = progress
        self.scorer = TorchScorer(train.X, train.y, train.n_classes, base, params.search.metric,
                                  device=params.compute.device, progress=progress)

    def scores(self, splits: list[tuple[np.ndarray, np.ndarray]], tag: str) -> list[dict[str, float]]:
        if self.sklearn is None:
            jobs = [(self.config, tr, te, derive_seed(self.params.seed, tag, i))
                    for i, (tr, te) in enumerate(splits)]
            return [r["metrics"] for r in self.scorer.fit_score(jobs, None)]
        from sklearn.base import clone

        X, y, k = self.train.X, self.train.y, self.train.n_classes
        out = []
        for tr, te in splits:
            model = clone(self.sklearn).fit(X[tr], y[tr])
            out.append(_label_metrics(y[te], model.predict(X[te]), k))
            self.progress.fits(1)
        return out

    def predict_test(self, test: Dataset, final_model: Any = None) -> np.ndarray:
        if self.sklearn is None:
            from dlrig.train import predict_proba

            return predict_proba(final_model, test.X).argmax(1)
        from sklearn.base import clone

        pred = clone(self.sklearn).fit(self.train.X, self.train.y).predict(test.X)
        self.progress.fits(1)
        return pred


def _label_metrics(y: np.ndarray, pred: np.ndarray, n_classes: int) -> dict[str, float]:
    onehot = np.eye(n_classes)[pred]
    return score_proba(y, onehot, n_classes)


def _metric_of(scores: list[dict[str, float]], metric: str) -> list[float]:
    return [s[metric] for s in scores]


def planned_fits(params: Params, folds: list[dict[str, Any]]) -> int:
    """The fits :func:`compare_with_baselines` trains (a progress bar's total): per baseline its outer
    folds, one fit for the test split and the 5x2 splits; the tuned config on the 5x2 splits."""
    five_by_two = 10 if params.compare.five_by_two else 0
    return five_by_two + len(params.compare.baselines) * (len(folds) + 1 + five_by_two)


def compare_with_baselines(params: Params, train: Dataset, test: Dataset, folds: list[dict[str, Any]],
                           tuned: FitConfig, final_model: Any, *, reference: str = "tuned",
                           log=print, progress: Tally = NO_PROGRESS) -> dict[str, Any]:
    """Every comparison the ``compare`` stage reports, as JSON.

    ``tuned`` is the config the final model was trained with (from its checkpoint): the tuned model is
    refit from it on other splits, and a ``dlrig`` baseline is it with the baseline's overrides. The
    training sections of params.yaml are not read here: the checkpoint is what was tuned.
    """
    cfg = params.compare
    metric = params.search.metric
    # Label-only baselines (an SVM without probabilities) cannot give a log loss: compare accuracy then.
    fold_metric = "accuracy" if metric == "neg_log_loss" else metric
    outer = [(np.asarray(f["train_index"]), np.asarray(f["test_index"])) for f in folds]
    ours_folds = [f["outer_metrics"][fold_metric] for f in folds]
    n_train = float(np.mean([len(tr) for tr, _ in outer]))
    n_test = float(np.mean([len(te) for _, te in outer]))
    ours = _Model(train, params, tuned, {}, progress=progress)
    ours_test = ours.predict_test(test, final_model)
    splits52 = [s for rep in five_by_two_splits(train.y, params.seed) for s in rep] if cfg.five_by_two else []
    ours52 = _metric_of(ours.scores(splits52, "5x2"), fold_metric) if splits52 else []

    results: dict[str, Any] = {}
    for name, spec in sorted(cfg.baselines.items()):
        if spec.estimator == "dlrig":
            model = _Model(train, params, tuned, dict(spec.overrides), progress=progress)
        else:
            make = make_feature_baseline if spec.estimator in FEATURE_BASELINES else make_sklearn_baseline
            model = _Model(train, params, tuned, {}, make(spec.estimator, spec.params, params.seed),
                           progress=progress)
        labels = (reference, name)
        base_folds = _metric_of(model.scores(outer, f"outer-{name}"), fold_metric)
        entry: dict[str, Any] = {
            "estimator": spec.estimator,
            "folds": compare_fold_scores(ours_folds, base_folds, n_train, n_test, labels=labels,
                                         alpha=cfg.alpha, rope=cfg.rope),
        }
        if spec.estimator == "dlrig":
            # Trained as its fold fits were (fit_many: the stacked trainer where the config allows it).
            from dlrig.train.batched import FitJob, fit_many

            job = FitJob(np.arange(len(train.y)), tuned.with_overrides(model.config), params.seed)
            fitted = fit_many(train.X, train.y, train.n_classes, [job], device=params.compute.device)[0]
            progress.fits(1)
            base_test = model.predict_test(test, fitted.model)
        else:
            base_test = model.predict_test(test)
        entry["test"] = compare_predictions(test.y, ours_test, base_test, labels=labels, alpha=cfg.alpha)
        entry["test_accuracy"] = {reference: round(float((ours_test == test.y).mean()), 6),
                                  name: round(float((base_test == test.y).mean()), 6)}
        if splits52:
            base52 = _metric_of(model.scores(splits52, "5x2"), fold_metric)
            entry["five_by_two"] = five_by_two_test(np.reshape(ours52, (5, 2)), np.reshape(base52, (5, 2)),
                                                    labels=labels, alpha=cfg.alpha)
        results[name] = entry
        log(f"  {name}: {fold_metric} {np.mean(base_folds):.4f} vs {reference} {np.mean(ours_folds):.4f}; "
            f"{entry['folds']['corrected_t']['verdict']}")
    return {"metric": fold_metric, "reference": reference, "n_train": n_train, "n_test": n_test,
            "baselines": results}
