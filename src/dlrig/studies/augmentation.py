"""The augmentation study: does augmenting (or mixing) the gradient batches pay, and where?

Clean test accuracy (the untouched test split) against the number of training rows per class, for three
arms trained on the same rows with the same seeds: no augmentation, image augmentation
(``studies.augmentation.augment``, i.e. ``train.augment.*``) and mixup (``train.mixup_alpha``). Each size is
drawn per seed (stratified, without replacement, from the training split), so the band -- min to max over
the seeds -- carries both the subset's and the initialisation's luck; every arm of one (size, seed) sees the
same subset and starts from the same weights.

The fits are the pipeline's own training config (``model``/``optim``/``schedule``/``train``) with early
stopping off (10 rows per class leave no validation set worth the name) for ``epochs`` epochs, or more
when that is fewer than ``min_steps`` gradient steps (a small set has few batches per epoch).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dlrig.data.dataset import Dataset
from dlrig.errors import UserError
from dlrig.params import ComputeParams, FitConfig, Params
from dlrig.seeds import derive_seed
from dlrig.select.cluster import map_jobs
from dlrig.studies import NO_EXTRAS

ARMS = ("none", "augment", "mixup")


def _job(X, y, rows, X_test, y_test, n_classes, config, seed) -> float:
    import torch

    from dlrig.train import fit, predict_proba

    torch.set_num_threads(1)
    model = fit(X[rows], y[rows], n_classes, config, seed).model
    return float((predict_proba(model, X_test).argmax(1) == y_test).mean())


def subsample(y: np.ndarray, n_classes: int, per_class: int | str, seed: int) -> np.ndarray:
    """Sorted rows with ``per_class`` rows of each class (all of a class that has fewer; "all": every row)."""
    if per_class == "all":
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    parts = [rng.choice(np.flatnonzero(y == c), size=min(per_class, int((y == c).sum())), replace=False)
             for c in range(n_classes) if (y == c).any()]
    return np.sort(np.concatenate(parts))


def arm_configs(base: FitConfig, params: Params) -> dict[str, FitConfig]:
    cfg = params.studies.augmentation
    # The arms differ in augmentation and mixing only: whatever the pipeline's train section switches on
    # (a robust loss, class weights, resampling, its own augmentation or mixing, a teacher) is off in all
    # three, so "none" means none and mixup's soft targets meet the plain cross-entropy they need.
    plain = base.with_overrides({
        "train.early_stopping": None, "train.loss.name": "ce", "train.class_weight": "none",
        "train.resample": "none", "train.noise_filter": "none", **NO_EXTRAS,
    })
    return {
        "none": plain,
        "augment": plain.with_overrides({"train.augment": cfg.augment.model_dump()}),
        "mixup": plain.with_overrides({"train.mixup_alpha": cfg.mixup_alpha}),
    }


def run(params: Params, train: Dataset, test: Dataset) -> dict[str, Any]:
    """The study as ``params.studies.augmentation`` sets it up."""
    return run_study(train, test, params.fit_config(), params, seed=params.seed, compute=params.compute)


def run_study(train: Dataset, test: Dataset, base: FitConfig, params: Params, *, seed: int,
              compute: ComputeParams) -> dict[str, Any]:
    cfg = params.studies.augmentation
    if train.X.ndim != 4:
        raise UserError(f"studies.augmentation: needs image data [N, C, H, W]; the training split has "
                        f"samples of shape {list(train.X.shape[1:])}")
    K, X, y = train.n_classes, train.X, train.y
    configs = arm_configs(base, params)
    keys, jobs, sizes = [], [], {}
    for n in cfg.per_class:
        for s in range(cfg.seeds):
            rows = subsample(y, K, n, derive_seed(seed, "augmentation", "rows", n, s))
            sizes[n] = len(rows)
            steps = max(1, math.ceil(len(rows) / min(base.train.batch_size, len(rows))))
            epochs = max(cfg.epochs, math.ceil(cfg.min_steps / steps))
            fit_seed = derive_seed(seed, "augmentation", "fit", n, s)
            for arm in ARMS:
                keys.append((n, s, arm))
                jobs.append((X, y, rows, test.X, test.y, K,
                             configs[arm].with_overrides({"train.epochs": epochs}), fit_seed))
    scores = dict(zip(keys, map_jobs(compute, _job, jobs), strict=True))

    table = []
    for n in cfg.per_class:
        row: dict[str, Any] = {"per_class": n, "rows": sizes[n]}
        for arm in ARMS:
            values = [scores[(n, s, arm)] for s in range(cfg.seeds)]
            row[arm] = {"mean": _r6(np.mean(values)), "min": _r6(min(values)), "max": _r6(max(values)),
                        "scores": [_r6(v) for v in values]}
        table.append(row)
    return {
        "metric": "test accuracy",
        "arms": {"none": "no augmentation", "augment": _describe(cfg.augment.model_dump()),
                 "mixup": f"mixup alpha {cfg.mixup_alpha:g}"},
        "seeds": cfg.seeds,
        "early_stopping": None,
        "epochs": cfg.epochs,
        "min_steps": cfg.min_steps,
        "table": table,
        "verdict": verdict(table),
    }


def _r6(v: float) -> float:
    return round(float(v), 6)


def _describe(augment: dict[str, Any]) -> str:
    defaults = {"rotation": 0.0, "translate": 0.0, "scale": [1.0, 1.0], "erasing": 0.0, "noise_std": 0.0,
                "hflip": False, "vflip": False}
    on = [f"{k} {v}" for k, v in augment.items() if v != defaults.get(k)]
    return "augment: " + (", ".join(on) if on else "nothing")


def _effect(delta: float) -> str:
    points = delta * 100
    if abs(points) < 0.05:
        return "changes nothing (±0.0 points)"
    return f"{'adds' if points > 0 else 'costs'} {abs(points):.1f} points"


def verdict(table: list[dict[str, Any]]) -> str:
    """A sentence from the mean test accuracies: each arm's gain over no augmentation at the smallest and the
    largest training set, and whether the gain shrinks with more data."""
    if not table:
        return "no training-set sizes were run"
    first, last = table[0], table[-1]

    def size(row: dict[str, Any]) -> str:
        n = row["per_class"]
        return "all rows" if n == "all" else f"{n} per class"

    parts = []
    for arm, name in (("augment", "augmentation"), ("mixup", "mixup")):
        d_small = first[arm]["mean"] - first["none"]["mean"]
        d_large = last[arm]["mean"] - last["none"]["mean"]
        text = f"{name} {_effect(d_small)} at {size(first)}"
        if last is not first:
            text += f" and {_effect(d_large)} at {size(last)}"
            if d_small > 0 and d_small > d_large:
                text += " (it helps most where data is scarce)"
            elif d_small <= 0 and d_large <= 0:
                text += " (it does not help at any size here)"
        parts.append(text)
    return "; ".join(parts) + f" (mean test accuracy over {len(first['none']['scores'])} seeds)."


__all__ = ["ARMS", "run", "subsample", "verdict"]
