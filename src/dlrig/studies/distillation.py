"""The distillation study: does a small student learn more from a larger teacher than from the labels alone?

k-fold cross-validation on the training split (the test split is not touched). In each fold:

1. a teacher (the pipeline's training config with ``studies.distillation.teacher`` overrides, by default a
   CNN) is trained on that fold's training rows only and saved as a checkpoint in a temporary folder;
2. the student (``studies.distillation.student`` overrides, by default a one-layer MLP of 16 units) is
   trained twice on the same rows with the same seed: from the labels, and distilled from that fold's teacher
   (``train.distill``: ``alpha * T^2 * KL + (1 - alpha) * CE``);
3. all three are scored on the fold's held-out rows, which no teacher or student of that fold saw.

The paired per-fold accuracies (distilled - labels) go to the corrected resampled t-test (Nadeau & Bengio
2003, :func:`dlrig.evaluate.stats.corrected_resampled_ttest`): the k training sets overlap, so the plain
paired t-test would be too confident. The verdict is computed from its p-value and the mean difference.
Early stopping is off for every fit: all arms train for ``epochs`` epochs on all of their fold's rows.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from dlrig.data.dataset import Dataset
from dlrig.data.folds import make_folds
from dlrig.errors import UserError
from dlrig.evaluate.stats import corrected_resampled_ttest
from dlrig.params import ComputeParams, FitConfig, Params
from dlrig.seeds import derive_seed
from dlrig.select.cluster import map_jobs
from dlrig.studies import NO_EXTRAS


def _accuracy(model, X, y) -> float:
    from dlrig.train import predict_proba

    return float((predict_proba(model, X).argmax(1) == y).mean())


def _teacher_job(X, y, train_rows, test_rows, n_classes, config, seed, path) -> float:
    import torch

    from dlrig.io import immediate
    from dlrig.train import fit
    from dlrig.train.checkpoint import save_model

    torch.set_num_threads(1)
    model = fit(X[train_rows], y[train_rows], n_classes, config, seed).model
    with immediate():  # a scratch file the students read, not one of the stage's outputs
        save_model(path, model, config, sample_shape=list(X.shape[1:]),
                   classes=[str(k) for k in range(n_classes)], seed=seed, rows=X[train_rows])
    return _accuracy(model, X[test_rows], y[test_rows])


def _student_job(X, y, train_rows, test_rows, n_classes, config, seed) -> float:
    import torch

    from dlrig.train import fit

    torch.set_num_threads(1)
    return _accuracy(fit(X[train_rows], y[train_rows], n_classes, config, seed).model, X[test_rows],
                     y[test_rows])


def _config(base: FitConfig, overrides: dict[str, Any], epochs: int, key: str) -> FitConfig:
    try:
        # Teacher and students differ only in what the study sets: the pipeline's own mixing, augmentation
        # or teacher (which distillation refuses beside it) are off for all of them.
        return base.with_overrides({"train.early_stopping": None, "train.epochs": epochs, **NO_EXTRAS,
                                    **overrides})
    except UserError as exc:
        raise UserError(f"studies.distillation.{key}: {exc}") from None


def run(params: Params, train: Dataset) -> dict[str, Any]:
    """The study as ``params.studies.distillation`` sets it up, on the training split only."""
    return run_study(train, params.fit_config(), params, seed=params.seed, compute=params.compute)


def run_study(train: Dataset, base: FitConfig, params: Params, *, seed: int,
              compute: ComputeParams) -> dict[str, Any]:
    cfg = params.studies.distillation
    teacher_cfg = _config(base, cfg.teacher, cfg.epochs, "teacher")
    student_cfg = _config(base, cfg.student, cfg.epochs, "student")
    if teacher_cfg.train.distill.teacher is not None or student_cfg.train.distill.teacher is not None:
        raise UserError("studies.distillation: teacher / student overrides must not set train.distill (the "
                        "study sets it)")
    K, X, y = train.n_classes, train.X, train.y
    folds = make_folds(y, None, np.arange(len(y)), cfg.folds, derive_seed(seed, "distillation", "folds"))
    with tempfile.TemporaryDirectory(prefix="dlrig-distill-") as tmp:
        paths = [str(Path(tmp) / f"teacher{k}.pt") for k in range(len(folds))]
        teacher_scores = map_jobs(compute, _teacher_job, [
            (X, y, tr, te, K, teacher_cfg, derive_seed(seed, "distillation", "teacher", k), paths[k])
            for k, (tr, te) in enumerate(folds)])
        distilled_cfg = [student_cfg.with_overrides({"train.distill": {
            "teacher": path, "temperature": cfg.temperature, "alpha": cfg.alpha}}) for path in paths]
        jobs = []
        for k, (tr, te) in enumerate(folds):
            # both arms: the same rows, initial weights and batch order
            student_seed = derive_seed(seed, "distillation", "student", k)
            jobs.append((X, y, tr, te, K, student_cfg, student_seed))
            jobs.append((X, y, tr, te, K, distilled_cfg[k], student_seed))
        scores = map_jobs(compute, _student_job, jobs)
    labels, distilled = scores[0::2], scores[1::2]
    n_train = int(np.mean([len(tr) for tr, _ in folds]))
    n_test = int(np.mean([len(te) for _, te in folds]))
    test = corrected_resampled_ttest(distilled, labels, n_train, n_test, cfg.test_alpha,
                                     labels=("distilled", "labels"))

    def r6(v: float) -> float:
        return round(float(v), 6)

    return {
        "metric": "held-out fold accuracy",
        "folds": cfg.folds,
        "teacher": {"overrides": cfg.teacher, "scores": [r6(v) for v in teacher_scores],
                    "mean": r6(np.mean(teacher_scores))},
        "student": {"overrides": cfg.student},
        "distill": {"temperature": cfg.temperature, "alpha": cfg.alpha},
        "labels": {"scores": [r6(v) for v in labels], "mean": r6(np.mean(labels))},
        "distilled": {"scores": [r6(v) for v in distilled], "mean": r6(np.mean(distilled))},
        "test": {"name": test.test, "mean_difference": r6(test.mean_diff),
                 "t": r6(test.statistic) if np.isfinite(test.statistic) else None,
                 "p_value": r6(test.p_value), "alpha": cfg.test_alpha, "n_train": n_train, "n_test": n_test},
        "verdict": verdict(test.mean_diff, test.p_value, cfg.test_alpha, float(np.mean(teacher_scores))),
    }


def verdict(mean_diff: float, p_value: float, alpha: float, teacher_mean: float | None = None) -> str:
    """The sentence: did distillation change the student's held-out accuracy, by how much, and is that more
    than the fold-to-fold noise (the corrected resampled t-test at ``alpha``)?"""
    points = mean_diff * 100
    p = "p < 0.001" if p_value < 0.001 else f"p = {p_value:.3g}"
    teacher = f" (teacher: {teacher_mean:.1%})" if teacher_mean is not None else ""
    if p_value < alpha:
        way = "helps" if mean_diff > 0 else "hurts"
        return (f"distillation {way} the student: {points:+.2f} points of held-out accuracy over training "
                f"on the labels alone, a real difference ({p} < {alpha:g}, corrected resampled t-test)"
                f"{teacher}.")
    return (f"no real difference: the distilled student differs by {points:+.2f} points from the one trained "
            f"on the labels, within the fold-to-fold noise ({p} >= {alpha:g}, corrected resampled t-test)"
            f"{teacher}.")


__all__ = ["run", "verdict"]
