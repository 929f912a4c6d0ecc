"""The label-noise / imbalance study: measured against the truth (a clean, untouched test split).

- noise sweep: test accuracy vs symmetric noise rate for plain cross-entropy and the robust options;
- imbalance sweep: test balanced accuracy vs imbalance ratio for no handling, class weights, resampling
  and logit adjustment;
- detection: confident-learning precision/recall/F1 against the injected flip mask;
- wrong vs right: oversampling *before* splitting into folds (duplicates leak into validation folds) vs
  inside each training fold, side by side with the test score that tells which estimate was honest.

Every fit is an independent job (joblib processes, one torch thread each); seeds are derived.
``run(params, train, test)`` is the study; ``markdown`` renders its results as the stage's table.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dlrig.data.dataset import Dataset
from dlrig.data.folds import make_folds
from dlrig.labels.detect import detection_scores, find_label_issues
from dlrig.labels.imbalance import induce_imbalance
from dlrig.labels.noise import inject_noise
from dlrig.params import ComputeParams, FitConfig, Params
from dlrig.seeds import derive_seed
from dlrig.select.cluster import map_jobs
from dlrig.train.infold import resample_indices
from dlrig.train.predict import score_proba

# Plain cross-entropy trains to the last epoch (no early stopping), so it memorises the flipped labels;
# every other column is one way of handling noise. The robust losses fit more slowly than CE (GCE with
# q=0.7 behaves partly like MAE), so they get a 10x learning rate; with early stopping monitoring the
# (noisy) validation CE they stop too soon, so they train to the end like plain CE.
_NO_ES = {"train.early_stopping": None}
NOISE_OPTIONS = {
    "ce": _NO_ES,
    "ce + early stopping": {},
    "ce + label smoothing 0.3": {**_NO_ES, "train.label_smoothing": 0.3},
    "gce (lr x10)": {**_NO_ES, "train.loss.name": "gce", "optim.lr_scale": 10.0},
    "sce (lr x10)": {**_NO_ES, "train.loss.name": "sce", "optim.lr_scale": 10.0},
    "ce + filter": {**_NO_ES, "train.noise_filter": "drop"},
}


def _with(base: FitConfig, overrides: dict[str, Any]) -> FitConfig:
    overrides = dict(overrides)
    scale = overrides.pop("optim.lr_scale", None)
    if scale is not None:
        overrides["optim.lr"] = base.optim.lr * scale
    return base.with_overrides(overrides)
IMBALANCE_OPTIONS = {
    "none": {},
    "class weights": {"train.class_weight": "balanced"},
    "oversample": {"train.resample": "oversample"},
    "logit adjusted": {"train.loss.name": "logit_adjusted"},
}


def _job(X: np.ndarray, y: np.ndarray, rows: np.ndarray, X_eval: np.ndarray, y_eval: np.ndarray,
         n_classes: int, config: FitConfig, seed: int) -> dict[str, float]:
    import torch

    from dlrig.train import fit, predict_proba

    torch.set_num_threads(1)
    model = fit(X[rows], y[rows], n_classes, config, seed).model
    return score_proba(y_eval, predict_proba(model, X_eval), n_classes)


def _run(jobs: list[tuple], compute: ComputeParams) -> list[dict[str, float]]:
    return map_jobs(compute, _job, jobs)


def run(params: Params, train: Dataset, test: Dataset) -> dict[str, Any]:
    """The study as ``params.studies.labels`` sets it up: fits on ``train``, scores on the clean ``test``."""
    cfg = params.studies.labels
    return run_study(train, test, params.fit_config(), seed=params.seed, noise_rates=cfg.noise_rates,
                     ratios=cfg.ratios, detect_rate=cfg.detect_rate, wrong_right_ratio=cfg.wrong_right_ratio,
                     folds=cfg.folds, compute=params.compute)


def run_study(train: Dataset, test: Dataset, base: FitConfig, *, seed: int, noise_rates: list[float],
              ratios: list[float], detect_rate: float, wrong_right_ratio: float, folds: int,
              compute: ComputeParams) -> dict[str, Any]:
    K, X, y = train.n_classes, train.X, train.y
    all_rows = np.arange(len(y))
    jobs, keys = [], []

    noisy = {r: inject_noise(y, K, "symmetric", r, seed + 1)[0] if r > 0 else y for r in noise_rates}
    for rate in noise_rates:
        for name, overrides in NOISE_OPTIONS.items():
            keys.append(("noise", rate, name))
            jobs.append((X, noisy[rate], all_rows, test.X, test.y, K, _with(base, overrides),
                         derive_seed(seed, "noise", rate)))
    for ratio in ratios:
        kept = induce_imbalance(y, K, "step", ratio, seed) if ratio > 1 else all_rows
        for name, overrides in IMBALANCE_OPTIONS.items():
            keys.append(("imbalance", ratio, name))
            jobs.append((X, y, kept, test.X, test.y, K, _with(base, overrides),
                         derive_seed(seed, "imbalance", ratio)))

    # Wrong vs right, on a step-imbalanced training set.
    kept = induce_imbalance(y, K, "step", wrong_right_ratio, seed)
    Xi, yi = X[kept], y[kept]
    over = resample_indices(yi, K, "oversample", seed)  # the wrong way: before any split
    Xo, yo = Xi[over], yi[over]
    plain, inside = base, base.with_overrides({"train.resample": "oversample"})
    for k, (tr, va) in enumerate(make_folds(yo, None, np.arange(len(yo)), folds, seed)):
        keys.append(("wrong", k))
        jobs.append((Xo, yo, tr, Xo[va], yo[va], K, plain, derive_seed(seed, "wrong", k)))
    for k, (tr, va) in enumerate(make_folds(yi, None, np.arange(len(yi)), folds, seed)):
        keys.append(("right", k))
        jobs.append((Xi, yi, tr, Xi[va], yi[va], K, inside, derive_seed(seed, "right", k)))
    keys.append(("wrong", "test"))
    jobs.append((Xo, yo, np.arange(len(yo)), test.X, test.y, K, plain, derive_seed(seed, "wrong-test")))
    keys.append(("right", "test"))
    jobs.append((Xi, yi, np.arange(len(yi)), test.X, test.y, K, inside, derive_seed(seed, "right-test")))

    scores = dict(zip(keys, _run(jobs, compute), strict=True))

    def r6(v: float) -> float:
        return round(float(v), 6)

    noise_table = [{"rate": rate, **{name: r6(scores[("noise", rate, name)]["accuracy"])
                                     for name in NOISE_OPTIONS}} for rate in noise_rates]
    imbalance_table = [{"ratio": ratio, **{name: r6(scores[("imbalance", ratio, name)]["balanced_accuracy"])
                                           for name in IMBALANCE_OPTIONS}} for ratio in ratios]
    wrong_cv = [scores[("wrong", k)]["balanced_accuracy"] for k in range(folds)]
    right_cv = [scores[("right", k)]["balanced_accuracy"] for k in range(folds)]
    wrong_right = {
        "ratio": wrong_right_ratio, "folds": folds, "metric": "balanced_accuracy",
        "wrong": {"cv": r6(np.mean(wrong_cv)), "test": r6(scores[("wrong", "test")]["balanced_accuracy"])},
        "right": {"cv": r6(np.mean(right_cv)), "test": r6(scores[("right", "test")]["balanced_accuracy"])},
    }
    for way in ("wrong", "right"):
        wrong_right[way]["optimism"] = r6(wrong_right[way]["cv"] - wrong_right[way]["test"])

    detection = detect_noise(train, base, detect_rate, seed, folds, compute)
    return {"noise": {"kind": "symmetric", "metric": "test accuracy", "table": noise_table},
            "imbalance": {"profile": "step", "metric": "test balanced accuracy", "table": imbalance_table},
            "detection": detection, "wrong_vs_right": wrong_right}


def detect_noise(train: Dataset, base: FitConfig, rate: float, seed: int, folds: int,
                 compute: ComputeParams) -> dict[str, Any]:
    """Inject ``rate`` symmetric noise, find it again from out-of-fold probabilities, score the finding."""
    K = train.n_classes
    y_noisy, flipped = inject_noise(train.y, K, "symmetric", rate, seed + 1)
    parts = make_folds(y_noisy, None, np.arange(len(y_noisy)), folds, seed + 3)
    jobs = [(train.X, y_noisy, tr, train.X[te], y_noisy[te], K, base, derive_seed(seed, "detect", k))
            for k, (tr, te) in enumerate(parts)]
    oof = np.zeros((len(y_noisy), K))
    probas = map_jobs(compute, _oof_job, jobs)
    for (_, te), proba in zip(parts, probas, strict=True):
        oof[te] = proba
    issues = find_label_issues(y_noisy, oof, K)
    return {"rate": rate, "realised_rate": round(float(flipped.mean()), 6),
            "estimated_rate": issues["summary"]["noise_rate"],
            **detection_scores(issues["issue_mask"], flipped)}


def _oof_job(X, y, rows, X_eval, y_eval, n_classes, config, seed) -> np.ndarray:
    import torch

    from dlrig.train import fit, predict_proba

    torch.set_num_threads(1)
    return predict_proba(fit(X[rows], y[rows], n_classes, config, seed).model, X_eval)


def markdown(study: dict[str, Any]) -> str:
    def table(rows: list[dict[str, Any]], first: str) -> str:
        cols = [c for c in rows[0] if c != first]
        head = f"| {first} | " + " | ".join(cols) + " |\n|---|" + "---|" * len(cols) + "\n"
        return head + "".join(
            f"| {r[first]} | " + " | ".join(f"{r[c]:.4f}" for c in cols) + " |\n" for r in rows
        )

    d, w = study["detection"], study["wrong_vs_right"]
    return (
        "# Label noise and class imbalance on this data set\n\n"
        f"## Test accuracy vs symmetric label noise (training labels only; the test split is clean)\n\n"
        f"{table(study['noise']['table'], 'rate')}\n"
        f"## Test balanced accuracy vs imbalance ratio (step profile)\n\n"
        f"{table(study['imbalance']['table'], 'ratio')}\n"
        f"## Detecting {d['rate']:.0%} injected noise (confident learning, out-of-fold)\n\n"
        f"estimated noise rate {d['estimated_rate']:.3f} (realised {d['realised_rate']:.3f}); "
        f"precision {d['precision']:.3f}, recall {d['recall']:.3f}, F1 {d['f1']:.3f}\n\n"
        "## Oversampling before the folds (wrong) vs inside each training fold (right), "
        f"ratio {w['ratio']:g}\n\n"
        "| way | CV balanced accuracy | test balanced accuracy | optimism (CV - test) |\n|---|---|---|---|\n"
        f"| wrong: oversample, then split | {w['wrong']['cv']:.4f} | {w['wrong']['test']:.4f} | "
        f"{w['wrong']['optimism']:+.4f} |\n"
        f"| right: split, oversample inside | {w['right']['cv']:.4f} | {w['right']['test']:.4f} | "
        f"{w['right']['optimism']:+.4f} |\n"
    )
