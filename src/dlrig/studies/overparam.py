"""Over-parameterisation and flat minima: the course's ladder (under-, well-, over-parameterised) measured.

One-hidden-layer MLPs of each width in ``widths`` are trained on the whole training split with each batch
size in ``batch_sizes``, the same epochs for all, no early stopping, dropout or weight decay. Each model
gets its parameter count, train and (clean) test accuracy, and the *sharpness* of the minimum it ended in:
the mean rise of the training loss when every weight row is moved by a random direction of ``rho`` times
that row's norm (:func:`sharpness`; filter-normalised as in Li et al. 2018, so that rescaling a layer does
not change the number). Keskar et al. (2017) report that large batches end in sharper minima; wide
networks are often said to end in flatter ones. The verdict says what these runs show, with the seeds'
min-max ranges deciding between "an effect" and "no clear effect".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from dlrig.data.dataset import Dataset
from dlrig.models import build_model, count_parameters
from dlrig.params import FitConfig, OverparamStudyParams, Params
from dlrig.seeds import derive_seed
from dlrig.train.batched import FitJob, fit_many


# ------------------------------------------------------------------------------------------ sharpness
def _direction(w: torch.Tensor, rho: float, gen: torch.Generator) -> torch.Tensor:
    """A Gaussian direction with each filter (row of a weight matrix / kernel; the whole tensor for a bias)
    scaled to ``rho`` times that filter's norm in ``w``."""
    r = torch.randn(w.shape, generator=gen, dtype=w.dtype)
    if w.dim() < 2:
        return r * (rho * w.norm() / r.norm().clamp_min(1e-12))
    dims = tuple(range(1, w.dim()))
    scale = rho * w.norm(dim=dims, keepdim=True) / r.norm(dim=dims, keepdim=True).clamp_min(1e-12)
    return r * scale


@torch.no_grad()
def sharpness(model: nn.Module, X: torch.Tensor, y: torch.Tensor, rho: float, directions: int, seed: int,
              loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
              ) -> dict[str, float]:
    """The mean rise of ``loss_fn(model(X), y)`` over ``directions`` random filter-normalised perturbations
    of relative size ``rho``, each applied as +d and -d.

    The +/- pair cancels the first-order (gradient) term exactly, so what is left is curvature: for a loss
    ``L(w) = ||w||^2`` the pair's mean rise is exactly ``rho^2 ||w||^2`` whatever the direction. Buffers
    (the input scaler) are not perturbed; the model is evaluated in eval mode and left unchanged.
    """
    model.eval()
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def loss(p: dict[str, torch.Tensor]) -> float:
        return float(loss_fn(functional_call(model, {**p, **buffers}, (X,)), y))

    base = loss(params)
    gen = torch.Generator().manual_seed(seed)
    rises = []
    for _ in range(directions):
        d = {k: _direction(v, rho, gen) for k, v in params.items()}
        plus = loss({k: v + d[k] for k, v in params.items()})
        minus = loss({k: v - d[k] for k, v in params.items()})
        rises.append((plus + minus) / 2 - base)
    return {"loss": base, "rise": float(np.mean(rises)), "rise_sd": float(np.std(rises))}


# ------------------------------------------------------------------------------------------ the study
# Per model; relative_sharpness = rise / training loss: near zero loss the cross-entropy of a confident
# model shrinks with its margins and so does any rise, so the absolute rise partly measures how far the
# run has fitted, not the shape of the minimum. The ratio takes that level out (to first order).
METRICS = ("train_accuracy", "test_accuracy", "train_loss", "sharpness", "relative_sharpness")
def config(cfg: OverparamStudyParams, width: int, batch_size: int, n_rows: int) -> FitConfig:
    """One run's config; a large batch takes few steps per epoch, so it gets more epochs, up to
    ``min_steps`` optimizer steps (else it would be compared before it has converged)."""
    steps_per_epoch = math.ceil(n_rows / min(batch_size, n_rows))
    epochs = max(cfg.epochs, math.ceil(cfg.min_steps / steps_per_epoch))
    return FitConfig().with_overrides({
        "model.name": "mlp", "model.depth": 1, "model.hidden": width, "model.dropout": 0.0,
        "optim.name": "adam", "optim.lr": cfg.lr, "optim.weight_decay": 0.0, "schedule.name": "constant",
        "train.early_stopping": None, "train.epochs": epochs, "train.batch_size": batch_size,
    })


def run(params: Params, train: Dataset, test: Dataset) -> dict[str, Any]:
    return run_study(params.studies.overparam, train, test, seed=params.seed)


def run_study(cfg: OverparamStudyParams, train: Dataset, test: Dataset, *, seed: int) -> dict[str, Any]:
    K = train.n_classes
    rows = np.arange(len(train.y))
    X_train, y_train = torch.as_tensor(train.X), torch.as_tensor(train.y)
    X_test, y_test = torch.as_tensor(test.X), torch.as_tensor(test.y)
    table = []
    for width in cfg.widths:
        for batch in cfg.batch_sizes:
            fit_cfg = config(cfg, width, batch, len(rows))
            seeds = [derive_seed(seed, "overparam", "init", s) for s in range(cfg.seeds)]
            results = fit_many(train.X, train.y, K, [FitJob(rows, fit_cfg, s) for s in seeds])
            per_seed: dict[str, list[float]] = {k: [] for k in METRICS}
            for s, result in zip(seeds, results, strict=True):
                model = result.model.eval()
                per_seed["train_accuracy"].append(accuracy(model, X_train, y_train))
                per_seed["test_accuracy"].append(accuracy(model, X_test, y_test))
                sharp = sharpness(model, X_train, y_train, cfg.rho, cfg.directions,
                                  derive_seed(seed, "overparam", "directions", s))
                per_seed["train_loss"].append(sharp["loss"])
                per_seed["sharpness"].append(sharp["rise"])
                per_seed["relative_sharpness"].append(sharp["rise"] / max(sharp["loss"], 1e-12))
            table.append({"width": width, "batch_size": min(batch, len(rows)),
                          "epochs": fit_cfg.train.epochs,
                          "params": count_parameters(build_model(fit_cfg.model, train.sample_shape, K)),
                          **{k: spread(v) for k, v in per_seed.items()}})
    return {
        "settings": {"epochs": cfg.epochs, "min_steps": cfg.min_steps, "lr": cfg.lr, "optimizer": "adam",
                     "seeds": cfg.seeds, "rho": cfg.rho, "directions": cfg.directions,
                     "n_train": int(len(rows)),
                     "n_test": int(len(test.y))},
        "table": table,
        "verdict": verdict(table),
    }


@torch.no_grad()
def accuracy(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> float:
    return float((model(X).argmax(1) == y).float().mean())


def spread(values: list[float]) -> dict[str, float]:
    """Mean and min-max over seeds, to 6 significant digits (the JSON is compared byte for byte; loss rises
    of well-fitted models are ~1e-5, so fixed decimals would erase them)."""
    return {k: float(f"{f(values):.6g}") for k, f in (("mean", np.mean), ("min", np.min), ("max", np.max))}


def compare(a: dict[str, float], b: dict[str, float]) -> int:
    """+1 when ``a``'s seed range lies wholly above ``b``'s, -1 when wholly below, 0 when they overlap."""
    return 1 if a["min"] > b["max"] else -1 if a["max"] < b["min"] else 0


def _contrast(table: list[dict[str, Any]], vary: str, fixed: str, big: str, small: str) -> str:
    """One sentence: the largest vs the smallest ``vary`` at each ``fixed`` value, by sharpness; where one
    is sharper and also has the higher training loss, say so (near zero loss the rise scales with it)."""
    lo_v, hi_v = min(r[vary] for r in table), max(r[vary] for r in table)
    label = fixed.replace("_", " ")
    groups: dict[int, list[str]] = {1: [], -1: [], 0: []}
    confounded = []
    for f in sorted({r[fixed] for r in table}):
        cell = {r[vary]: r for r in table if r[fixed] == f}
        if lo_v not in cell or hi_v not in cell:
            continue
        hi, lo = cell[hi_v], cell[lo_v]
        sign = compare(hi["sharpness"], lo["sharpness"])
        groups[sign].append(f"{label} {f}: {hi['sharpness']['mean']:.3g} vs {lo['sharpness']['mean']:.3g}")
        if sign and compare(hi["train_loss"], lo["train_loss"]) == sign:
            rel = {1: f"{big} sharper", -1: f"{big} flatter", 0: "no clear difference"}[
                compare(hi["relative_sharpness"], lo["relative_sharpness"])]
            confounded.append(f"{label} {f}: {rel}, rise/loss {hi['relative_sharpness']['mean']:.3g} vs "
                              f"{lo['relative_sharpness']['mean']:.3g}")
    parts = []
    if groups[1]:
        parts.append(f"sharper with {big} than with {small} ({'; '.join(groups[1])})")
    if groups[-1]:
        parts.append(f"flatter with {big} than with {small} ({'; '.join(groups[-1])})")
    if groups[0]:
        parts.append(f"no clear effect of {vary.replace('_', ' ')}, the seed ranges overlap "
                     f"({'; '.join(groups[0])})")
    text = "; ".join(parts)
    if groups[1] and groups[-1]:
        text = f"no consistent effect of {vary.replace('_', ' ')}: " + text
    elif not groups[1] and not groups[-1]:
        text = f"no clear effect of {vary.replace('_', ' ')} anywhere: " + "; ".join(groups[0])
    if confounded:
        text += (" (where one is sharper it also has the higher training loss, so part of the rise is the "
                 f"loss level; per unit of loss: {'; '.join(confounded)})")
    return text


def verdict(table: list[dict[str, Any]]) -> str:
    """Sharpness (mean loss rise) of the largest vs the smallest batch at each width, and of the largest vs
    the smallest width at each batch size; "an effect" only where the seeds' min-max ranges do not overlap."""
    b_lo, b_hi = min(r["batch_size"] for r in table), max(r["batch_size"] for r in table)
    w_lo, w_hi = min(r["width"] for r in table), max(r["width"] for r in table)
    batch = _contrast(table, "batch_size", "width", f"batch {b_hi}", f"batch {b_lo}")
    width = _contrast(table, "width", "batch_size", f"width {w_hi}", f"width {w_lo}")
    return f"Loss rise under random perturbations -- batch size: {batch}. Width: {width}."
