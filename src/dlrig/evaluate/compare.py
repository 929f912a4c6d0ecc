"""Statistical comparison of two models: on the same outer folds (corrected resampled t-test, Bayesian
correlated t-test, and the naive t-test for contrast), on the same held-out test predictions (McNemar),
and by Dietterich's 5x2cv when both models can be refit.

``compare_fold_scores`` is the library API; the ``compare`` stage and ``dlrig compare`` call it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dlrig.errors import UserError
from dlrig.evaluate.stats import (
    bayesian_correlated_ttest,
    corrected_resampled_ttest,
    mcnemar,
    naive_paired_ttest,
    paired_ttest_5x2cv,
)

SKLEARN_BASELINES = ("logistic_regression", "svm_rbf", "knn", "random_forest")


def make_sklearn_baseline(name: str, params: dict[str, Any], seed: int) -> Any:
    """A scikit-learn pipeline: flatten, standardise (fitted inside each fit), classify."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler
    from sklearn.svm import SVC

    estimators = {
        "logistic_regression": lambda: LogisticRegression(max_iter=2000),
        "svm_rbf": lambda: SVC(kernel="rbf"),
        "knn": lambda: KNeighborsClassifier(),
        "random_forest": lambda: RandomForestClassifier(random_state=seed),
    }
    estimator = estimators[name]()
    try:
        estimator.set_params(**params)
    except ValueError as exc:
        raise UserError(f"compare.baselines: {name}: {exc}") from None
    flatten = FunctionTransformer(lambda X: X.reshape(len(X), -1))
    return make_pipeline(flatten, StandardScaler(), estimator)


def compare_fold_scores(scores_a: list[float], scores_b: list[float], n_train: float, n_test: float, *,
                        labels: tuple[str, str], alpha: float = 0.05, rope: float = 0.01) -> dict[str, Any]:
    """Paired tests on per-fold scores of two models evaluated on the *same* folds."""
    a, b = np.asarray(scores_a, float), np.asarray(scores_b, float)
    if a.shape != b.shape or a.size < 2:
        raise UserError(f"comparison needs the same number (>= 2) of folds for both models "
                        f"(got {a.size} and {b.size})")
    k = a.size
    return {
        "scores": {labels[0]: a.round(6).tolist(), labels[1]: b.round(6).tolist()},
        "mean": {labels[0]: round(float(a.mean()), 6), labels[1]: round(float(b.mean()), 6)},
        "corrected_t": corrected_resampled_ttest(a, b, n_train, n_test, alpha=alpha, labels=labels).to_dict(),
        "naive_t": naive_paired_ttest(a, b, alpha=alpha, labels=labels).to_dict(),
        # Correlation of K-fold estimates: the share of data two training sets have in common, 1/K.
        "bayes": bayesian_correlated_ttest(a, b, rho=1 / k, rope=rope, labels=labels).to_dict(),
    }


def compare_predictions(y: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, *, labels: tuple[str, str],
                        alpha: float = 0.05) -> dict[str, Any]:
    return mcnemar(y, pred_a, pred_b, alpha=alpha, labels=labels).to_dict()


def five_by_two_splits(y: np.ndarray, seed: int) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """Dietterich's design: 5 replications of a stratified 2-fold split (seeded)."""
    from sklearn.model_selection import StratifiedKFold

    reps = []
    for r in range(5):
        folds = StratifiedKFold(2, shuffle=True, random_state=seed + r).split(np.zeros(len(y)), y)
        reps.append([(a, b) for a, b in folds])
    return reps


def five_by_two_test(scores_a: np.ndarray, scores_b: np.ndarray, *, labels: tuple[str, str],
                     alpha: float = 0.05) -> dict[str, Any]:
    """``scores_*`` are [5, 2]: replication x fold, each model trained on one half and scored on the other."""
    diffs = np.asarray(scores_a, float) - np.asarray(scores_b, float)
    return paired_ttest_5x2cv(diffs, alpha=alpha, labels=labels).to_dict()


def _t_cell(test: dict[str, Any]) -> str:
    """``t (p)``; with the same difference on every fold there is no spread, so no finite t."""
    t, p = test.get("statistic"), test.get("p_value")
    stat = "n/a" if t is None else f"{t:.2f}"
    return f"{stat} ({'n/a' if p is None else format(p, '.3g')})"


def markdown_table(results: dict[str, Any], reference: str, metric: str) -> str:
    """One row per baseline: means, the corrected t-test, the Bayesian test, McNemar, 5x2cv."""
    lines = [
        f"| baseline | {metric} (CV) | {reference} (CV) | corrected t (p) | naive t (p) | "
        f"P({reference} better) / P(rope) | McNemar p (test) | 5x2cv p | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        folds, test, five = r["folds"], r.get("test"), r.get("five_by_two")
        cells = [
            name,
            f"{folds['mean'][name]:.4f}",
            f"{folds['mean'][reference]:.4f}",
            _t_cell(folds["corrected_t"]),
            _t_cell(folds["naive_t"]),
            f"{folds['bayes']['p_a_better']:.2f} / {folds['bayes']['p_rope']:.2f}",
            f"{test['p_value']:.3g}" if test else "-",
            f"{five['p_value']:.3g}" if five else "-",
            folds["corrected_t"]["verdict"],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
