"""The fit loop: one model, one training set, one seed. A fold of cross-validation is just a call.

Everything fitted on data -- the standardisation statistics and the early-stopping decision -- sees only
the rows passed in as training data; the early-stopping split is carved from those rows, and the scaler
is fitted on the part that is left for gradient steps, as are the class weights, the resampling and the
noise filter (:mod:`dlrig.train.infold`). Augmentation and mixup/cutmix (:mod:`dlrig.train.augment`)
transform only the gradient batches; a distillation teacher (:mod:`dlrig.train.distill`) scores only the
gradient rows.

The loop can be watched and stopped at every step by callbacks (:mod:`dlrig.train.callbacks`); early
stopping is one of them. A run whose training loss stops being finite ends there (``info["diverged"]``,
:func:`failure_reason`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch import nn

from dlrig.models import build_model
from dlrig.params import FitConfig, TrainParams
from dlrig.train import work
from dlrig.train.augment import build_augmenter, hard_labels
from dlrig.train.callbacks import Callback, EarlyStopping, EpochFunction, FitState, overrides
from dlrig.train.distill import distillation_loss, teacher_logits
from dlrig.train.infold import drop_label_issues, resample_indices, training_loss
from dlrig.train.optim import build_optimizer, build_scheduler
from dlrig.train.transfer import apply_transfer

# The older per-epoch hook: called with each epoch's record; returning False stops the run (pruning).
# New code passes a Callback instead.
EpochCallback = Callable[[dict[str, float]], bool | None]


@dataclass
class FitResult:
    model: nn.Sequential
    history: list[dict[str, float]]
    best_epoch: int
    stopped_early: bool
    train_index: np.ndarray  # rows (of the X passed to fit) that took gradient steps
    val_index: np.ndarray  # rows held out for early stopping (empty when it is off)
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Batches an epoch of ``n`` rows takes: a last batch of one sample joins the one before (batch norm
    cannot normalise a batch of size 1). Every trainer steps by this rule."""
    bs = min(batch_size, n)
    return max(1, n // bs if n % bs == 1 else math.ceil(n / bs))


def deterministic_kernels() -> None:
    """``torch.use_deterministic_algorithms(True, warn_only=True)`` minus its import of the compiler's
    config: the public function also sets ``torch._inductor.config.deterministic`` (for compiled code), and
    that import pulls in ``torch._dynamo``, about 1 s of a stage's start-up. dlrig compiles nothing, so the
    eager flag is all it needs; if the compiler is loaded already, the public function runs."""
    import sys

    if "torch._inductor.config" in sys.modules or not hasattr(torch._C, "_set_deterministic_algorithms"):
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch._C._set_deterministic_algorithms(True, warn_only=True)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        from dlrig.errors import UserError

        raise UserError(
            "params.yaml: compute.device is 'cuda' but no CUDA device is available (use cpu or auto)"
        )
    return torch.device(name)


def fit_standardizer(X: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scale over samples; features with (near) zero spread keep scale 1 instead of exploding."""
    if mode == "none":
        shape = X.shape[1:]
        return np.zeros(shape, np.float32), np.ones(shape, np.float32)
    if mode == "global":
        mean, std = float(X.mean()), float(X.std())
        shape = X.shape[1:]
        return np.full(shape, mean, np.float32), np.full(shape, std if std > 1e-6 else 1.0, np.float32)
    mean = X.mean(axis=0)
    std = X.std(axis=0)
    return mean.astype(np.float32), np.where(std > 1e-6, std, 1.0).astype(np.float32)


def early_stopping_split(
    y: np.ndarray, cfg: TrainParams, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (fit, val) inside the given training rows; stratified when every class can spare a sample."""
    index = np.arange(len(y))
    if cfg.early_stopping is None:
        return index, index[:0]
    counts = np.bincount(y)
    stratify = y if counts[counts > 0].min() >= 2 else None
    n_val = max(1, int(round(cfg.early_stopping.val_fraction * len(y))))
    if stratify is not None:
        n_val = max(n_val, int((counts > 0).sum()))
    fit_idx, val_idx = train_test_split(index, test_size=n_val, random_state=seed, stratify=stratify)
    return np.sort(fit_idx), np.sort(val_idx)


def l1_penalty(model: nn.Module) -> torch.Tensor:
    """Sum of |w| over weight matrices and kernels (not biases, norms or the scaler buffers)."""
    return sum(
        (p.abs().sum() for name, p in model.named_parameters() if name.endswith("weight") and p.dim() > 1),
        torch.zeros(()),
    )


@torch.no_grad()
def _evaluate(model: nn.Module, X: torch.Tensor, y: torch.Tensor, loss_fn: nn.Module) -> tuple[float, float]:
    model.eval()
    logits = model(X)
    loss = float(loss_fn(logits, y))
    acc = float((logits.argmax(1) == y).float().mean())
    model.train()
    return loss, acc


def fit(
    X: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    config: FitConfig,
    seed: int,
    *,
    device: str = "cpu",
    callbacks: Sequence[Callback] = (),
    on_epoch: EpochCallback | None = None,
) -> FitResult:
    """Train one model on (X, y). Early stopping (if on) uses a split of these rows only.

    ``callbacks`` see the events of :mod:`dlrig.train.callbacks` in list order (``on_epoch``, the older
    per-epoch function, runs after them); ``train.early_stopping`` adds :class:`EarlyStopping` last.
    ``info["stop_reason"]`` says why the run ended early (None when it ran every epoch).
    """
    start = time.perf_counter()
    tcfg = config.train
    torch.manual_seed(seed)
    rng = torch.Generator().manual_seed(seed)
    dev = resolve_device(device)

    fit_idx, val_idx = early_stopping_split(y, tcfg, seed)
    info: dict[str, Any] = {}
    if tcfg.noise_filter == "drop":
        fit_idx, info["noise_filter"] = drop_label_issues(X, y, fit_idx, n_classes, config, seed, device)
    mean, scale = fit_standardizer(X[fit_idx], tcfg.standardize)
    loss_fn = training_loss(y[fit_idx], n_classes, tcfg)
    # Resampling draws from the gradient rows only (never the early-stopping or any held-out rows), after
    # the scaler was fitted on them as they are.
    step_idx = fit_idx
    if tcfg.resample != "none":
        step_idx = fit_idx[resample_indices(y[fit_idx], n_classes, tcfg.resample, seed)]
        info["resampled_rows"] = int(len(step_idx))

    model = build_model(config.model, X.shape[1:], n_classes)
    model[0].mean.copy_(torch.from_numpy(mean))
    model[0].scale.copy_(torch.from_numpy(scale))
    # train.transfer: the pretrained body (checked against this model first), frozen blocks, body lr scale
    transfer = apply_transfer(model, config, n_classes)
    if transfer is not None:
        callbacks = [*callbacks, *transfer.callbacks]
    model.to(dev)

    X_fit = torch.as_tensor(X[step_idx], device=dev)
    y_fit = torch.as_tensor(y[step_idx], device=dev)
    X_val = torch.as_tensor(X[val_idx], device=dev)
    y_val = torch.as_tensor(y[val_idx], device=dev)
    # Augmentation / mixing (dlrig.train.augment) touches only the gradient batches below, never X_val; the
    # teacher (dlrig.train.distill) scores only the gradient rows, once, before training.
    augmenter = build_augmenter(tcfg, X.shape[1:], n_classes, seed)
    dcfg = tcfg.distill
    soft_teacher = teacher_logits(dcfg, X_fit, n_classes) if dcfg.teacher is not None else None

    n = len(step_idx)
    batch_size = min(tcfg.batch_size, n)
    steps = steps_per_epoch(n, batch_size)
    optimizer = build_optimizer(model, config.optim, transfer.lr_scales if transfer is not None else None)
    scheduler = build_scheduler(optimizer, config.schedule, config.optim.lr, tcfg.epochs, steps)
    eval_loss = nn.CrossEntropyLoss()  # validation loss is the plain loss, comparable across settings
    l1 = config.optim.l1

    es = tcfg.early_stopping
    early = EarlyStopping(es) if es is not None else None
    hooks = [*callbacks, *([EpochFunction(on_epoch)] if on_epoch is not None else []),
             *([early] if early is not None else [])]
    # Step events are dispatched only to the callbacks that define them: none listening, no cost.
    after_backward = [cb for cb in hooks if overrides(cb, "on_after_backward")]
    step_end = [cb for cb in hooks if overrides(cb, "on_step_end")]
    watched = bool(after_backward or step_end)
    history: list[dict[str, float]] = []
    state = FitState(model=model, optimizer=optimizer, scheduler=scheduler, config=config,
                     steps_per_epoch=steps, history=history)
    for cb in hooks:
        cb.on_fit_start(state)

    model.train()
    total_loss = 0.0
    # train.shuffle: "epoch" draws a new order every epoch, "once" draws the first epoch's and keeps it,
    # "none" keeps the rows' own order (the first epoch of "once" is the first epoch of "epoch").
    order = torch.arange(n) if tcfg.shuffle == "none" else None
    for epoch in range(1, tcfg.epochs + 1):
        if state.stop:  # asked for by on_fit_start
            break
        state.epoch = epoch
        if order is None or tcfg.shuffle == "epoch":
            order = torch.randperm(n, generator=rng)
        perm = order.to(dev)
        total_loss, total_correct, seen = 0.0, 0, 0
        for step in range(steps):
            idx = perm[step * batch_size : (step + 1) * batch_size]
            if step == steps - 1:
                idx = perm[step * batch_size :]
            xb, yb = X_fit[idx], y_fit[idx]
            if augmenter is not None:
                xb, yb = augmenter(xb, yb)  # soft targets [B, K] when mixing: the CE loss takes them as is
            logits = model(xb)
            loss = loss_fn(logits, yb)
            if soft_teacher is not None:
                loss = distillation_loss(logits, soft_teacher[idx], loss, dcfg.temperature, dcfg.alpha)
            objective = loss + l1 * l1_penalty(model) if l1 > 0 else loss
            optimizer.zero_grad(set_to_none=True)
            objective.backward()
            batch_loss = float(loss.detach())
            if watched:
                state.step, state.global_step, state.loss = step, state.global_step + 1, batch_loss
                for cb in after_backward:
                    cb.on_after_backward(state)
                if state.stop:
                    break
            if tcfg.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
            lr = optimizer.param_groups[0]["lr"] if step_end else math.nan
            optimizer.step()
            scheduler.step()
            total_loss += batch_loss * len(idx)
            # Mixed targets count against their argmax: the class most of the mixed input shows.
            total_correct += int((logits.detach().argmax(1) == hard_labels(yb)).sum())
            seen += len(idx)
            if step_end:
                state.lr = lr
                for cb in step_end:
                    cb.on_step_end(state)
                if state.stop:
                    break
        if not math.isfinite(total_loss):
            history.append({"epoch": epoch, "train_loss": float("nan")})
            state.stop, state.stop_reason = True, f"diverged: non-finite training loss in epoch {epoch}"
            break
        if state.stop:  # a callback ended the run in the middle of this epoch: no record for it
            break
        record = {
            "epoch": epoch,
            "lr": optimizer.param_groups[0]["lr"],
            "train_loss": total_loss / seen,
            "train_accuracy": total_correct / seen,
        }
        if len(val_idx):
            record["val_loss"], record["val_accuracy"] = _evaluate(model, X_val, y_val, eval_loss)
        history.append(record)
        for cb in hooks:
            cb.on_epoch_end(state, record)
        if state.stop:
            break

    for cb in hooks:
        cb.on_fit_end(state)
    model.eval()
    best_epoch = early.best_epoch if early is not None and early.best_epoch is not None else tcfg.epochs
    work.add_fit(model, X.shape[1:], len(X_fit), len(history))  # the cost report's fits and FLOPs
    return FitResult(
        model=model.cpu(),
        history=history,
        best_epoch=best_epoch if es else len(history),
        stopped_early=state.stop,
        train_index=fit_idx,
        val_index=val_idx,
        seconds=time.perf_counter() - start,
        info={
            **info,
            "steps_per_epoch": steps,
            "diverged": not math.isfinite(total_loss),
            "pruned": state.pruned,
            "stop_reason": state.stop_reason,
        },
    )


# A fit whose epoch-mean training loss exceeds this many times the loss of a uniform guess (log K) has blown
# up: its true-class probabilities are 0 in float32 long before that (a loss above ~100 already is), and no
# run that trains reaches it. Adam at lr 1e3 gives 1e6..1e13 here without ever producing inf or NaN, so the
# non-finite test alone misses it. The fit loop does not stop on it (its numbers, and the stacked trainer's,
# stay as they are); the search reads it through failure_reason.
EXPLODED_LOSS_FACTOR = 1e4


def failure_reason(result: FitResult, n_classes: int | None = None) -> str | None:
    """Why a fit's result is not a usable trial (None when it is): it diverged -- its training loss stopped
    being finite (``info["diverged"]``) or an epoch's exceeded ``EXPLODED_LOSS_FACTOR * log(n_classes)``
    (``n_classes``: the model's outputs when not given).

    Reads only ``info``, the history and the model's width, so it serves :func:`fit` and the stacked
    trainer alike.
    """
    bad = [int(r["epoch"]) for r in result.history if not math.isfinite(r.get("train_loss", math.nan))]
    if result.info.get("diverged") or bad:
        where = f" in epoch {bad[0]}" if bad else ""
        return f"diverged: non-finite training loss{where}"
    if n_classes is None:
        n_classes = getattr(result.model[-1], "out_features", None)
        if n_classes is None:
            return None
    limit = EXPLODED_LOSS_FACTOR * math.log(max(n_classes, 2))
    for r in result.history:
        if r["train_loss"] > limit:
            return (f"diverged: training loss {r['train_loss']:.3g} in epoch {int(r['epoch'])}, over "
                    f"{EXPLODED_LOSS_FACTOR:g} x the loss of a uniform guess (log {n_classes}); a learning "
                    f"rate too high (or inputs far off scale)")
    return None


__all__ = ["FitResult", "deterministic_kernels", "failure_reason", "fit", "fit_standardizer",
           "resolve_device"]
