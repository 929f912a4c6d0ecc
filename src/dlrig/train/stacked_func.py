"""Many fits at once through ``torch.func``: the families the hand-written MLP stack
(:mod:`dlrig.train.batched`) does not cover -- CNNs first -- trained as one vmapped model.

Nested cross-validation trains a few configs on many (fold, seed) pairs. Models of one architecture can be
stacked: ``vmap(grad(functional_call))`` computes every model's gradient on its own batch in one call, over
the models' parameters stacked ``[M, ...]`` (``torch.func.stack_module_state`` for the scalers). The
stacked forward and backward are where the time goes, and they are shared; the update is not: each model
keeps fit()'s own optimizer and scheduler (``build_optimizer`` / ``build_scheduler`` on its own module),
so models of a stack may differ in every ``optim`` and ``schedule`` key (a grid over lr and weight decay
is one stack), and the update arithmetic is fit()'s, tensor for tensor.

Same training as :func:`dlrig.train.fit` for the subset supported here, step for step: the initial weights
(``build_model`` under ``torch.manual_seed(seed)``), the scaler (fitted on the job's rows), the batch order
(a generator seeded like fit's), the last-batch rule, the loss (cross-entropy with label smoothing, as
``training_loss`` builds it for these settings: the mean over the batch) and the epoch records. Models of a
stack with different row counts get padded batches whose padding is masked out of the loss. Held to fit()
to float tolerance by tests/train/test_stacked_func.py; the last bits of a model's weights may depend on
its stack-mates (the padded width changes how a convolution's reductions are blocked).

Supported (:func:`stack_key` is None otherwise, and the job trains with fit()): any config whose built
model has only the layers listed in ``_LAYERS`` (no dropout, batch norm or recurrent layers: their random
masks and running statistics are per-model state this stack does not carry), every ``train`` key at its
default but epochs, batch_size, standardize and label_smoothing (shared by a stack), and no early
stopping. Models of a stack share the architecture, the ``train`` section and the steps per epoch.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from functools import cache
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, stack_module_state, vmap

from dlrig.models import Standardize, build_model
from dlrig.params import FitConfig
from dlrig.train import work
from dlrig.train.batched import FitJob
from dlrig.train.fit import FitResult, fit, fit_standardizer, resolve_device
from dlrig.train.optim import build_optimizer, build_scheduler

# may differ from the default (early_stopping: must be None, checked on its own)
_TRAIN_KEYS = ("epochs", "batch_size", "standardize", "label_smoothing", "early_stopping")
_LAYERS = (Standardize, nn.Flatten, nn.Identity, nn.Linear, nn.Conv1d, nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d,
           nn.ReLU, nn.GELU, nn.Tanh, nn.Sigmoid, nn.SiLU, nn.ELU, nn.LeakyReLU, nn.LayerNorm, nn.Sequential)

ManyEpochCallback = Callable[[int, dict[str, float]], bool | None]


@cache
def _default_train() -> dict[str, Any]:
    return {k: v for k, v in FitConfig().train.model_dump().items() if k not in _TRAIN_KEYS}


def _layers_supported(model: nn.Module) -> bool:
    for mod in model.modules():
        if isinstance(mod, nn.Dropout) and mod.p == 0:
            continue
        if type(mod) not in _LAYERS:
            return False
        if getattr(mod, "inplace", False):
            return False
    return True


@cache
def _family_supported(model_json: str, sample_shape: tuple[int, ...], n_classes: int) -> bool:
    config = FitConfig.model_validate({"model": json.loads(model_json)})
    return _layers_supported(build_model(config.model, sample_shape, n_classes))


def stack_key(config: FitConfig, sample_shape: Sequence[int], n_classes: int) -> str | None:
    """What jobs must share to train as one stack here: the architecture and the ``train`` section (each
    model keeps its own optimizer and schedule); None: not supported, train with fit()."""
    if config.train.early_stopping is not None:
        return None
    train = {k: v for k, v in config.train.model_dump().items() if k not in _TRAIN_KEYS}
    if train != _default_train():
        return None
    model_json = config.model.model_dump_json()
    if not _family_supported(model_json, tuple(sample_shape), n_classes):
        return None
    return json.dumps([model_json, config.train.model_dump_json()])


def fit_stacked(
    X: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    jobs: Sequence[FitJob],
    *,
    device: str = "cpu",
    on_epoch: ManyEpochCallback | None = None,
) -> list[FitResult]:
    """Train every job; results in job order, each as ``fit(X[job.train_index], ...)`` returns it (indices
    mapped back to rows of X, as :func:`dlrig.train.batched.fit_many` does). Jobs with the same
    :func:`stack_key` and steps per epoch train as one stack; the others with fit()."""
    X, y = np.asarray(X), np.asarray(y)
    results: list[FitResult | None] = [None] * len(jobs)
    groups: dict[tuple, list[int]] = {}
    for i, job in enumerate(jobs):
        key = stack_key(job.config, X.shape[1:], n_classes)
        if key is None:
            rows = np.asarray(job.train_index)
            callback = None if on_epoch is None else (lambda record, i=i: on_epoch(i, record))
            result = fit(X[rows], y[rows], n_classes, job.config, job.seed, device=device, on_epoch=callback)
            result.train_index, result.val_index = rows[result.train_index], rows[result.val_index]
            result.info["stacked"] = False
            results[i] = result
        else:
            groups.setdefault((key, _steps(len(job.train_index), job.config.train.batch_size)), []).append(i)
    for members in groups.values():
        for i, result in zip(members, _train_stack(X, y, n_classes, [jobs[i] for i in members], members,
                                                    device, on_epoch), strict=True):
            results[i] = result
    return results  # type: ignore[return-value]


def _steps(n: int, batch_size: int) -> int:
    bs = min(batch_size, n)
    return max(1, n // bs if n % bs == 1 else math.ceil(n / bs))  # fit()'s last-batch rule


def _train_stack(X, y, n_classes, jobs: list[FitJob], positions: list[int], device: str,
                 on_epoch: ManyEpochCallback | None) -> list[FitResult]:
    start = time.perf_counter()
    dev = resolve_device(device)
    tcfg = jobs[0].config.train  # shared by the stack (stack_key)
    models, optimizers, schedulers, gens, rows = [], [], [], [], []
    n = len(jobs[0].train_index)
    steps, bs = _steps(n, tcfg.batch_size), min(tcfg.batch_size, n)
    for job in jobs:
        local, cfg = np.asarray(job.train_index), job.config
        torch.manual_seed(job.seed)  # as fit(): build_model draws the initial weights from it
        mean, scale = fit_standardizer(X[local], tcfg.standardize)
        model = build_model(cfg.model, X.shape[1:], n_classes)
        model[0].mean.copy_(torch.from_numpy(mean))
        model[0].scale.copy_(torch.from_numpy(scale))
        model.to(dev).train()
        # fit's own optimizer and scheduler, one per model: every model keeps its lr, decay, schedule
        optimizer = build_optimizer(model, cfg.optim)
        optimizers.append(optimizer)
        schedulers.append(build_scheduler(optimizer, cfg.schedule, cfg.optim.lr, tcfg.epochs, steps))
        models.append(model)
        gens.append(torch.Generator().manual_seed(job.seed))  # fit's batch order
        rows.append(local)
    M = len(models)
    _, buffers = stack_module_state(models)  # the scalers, [M, ...]: constant during training
    own = [dict(m.named_parameters()) for m in models]
    names = list(own[0])
    template = models[0]
    width = max(max(bs, len(r) - (steps - 1) * bs) for r in rows)  # widest batch (a merged last batch)
    Xt = torch.as_tensor(X, device=dev)
    yt = torch.as_tensor(y, device=dev)
    smoothing = tcfg.label_smoothing

    def loss_one(p, b, xb, yb, mask):
        logits = functional_call(template, (p, b), (xb,))
        per_row = nn.functional.cross_entropy(logits, yb, reduction="none", label_smoothing=smoothing)
        loss = (per_row * mask).sum() / mask.sum()  # the mean over the model's real rows, as fit's loss
        return loss, (loss, logits)

    step_grad = vmap(grad(loss_one, has_aux=True))
    histories: list[list[dict[str, float]]] = [[] for _ in range(M)]
    done: dict[int, FitResult] = {}
    for epoch in range(1, tcfg.epochs + 1):
        index, mask, counts = _plan(rows, gens, steps, bs, width)
        index, mask = index.to(dev), mask.to(dev)
        losses = torch.zeros(steps, M, dtype=torch.float64)
        correct = torch.zeros(steps, M, dtype=torch.int64)
        for s in range(steps):
            xb = Xt.index_select(0, index[s].reshape(-1)).view(M, width, *X.shape[1:])
            yb = yt.index_select(0, index[s].reshape(-1)).view(M, width)
            with torch.no_grad():
                stacked = {k: torch.stack([p[k] for p in own]) for k in names}
            grads, (loss, logits) = step_grad(stacked, buffers, xb, yb, mask[s])
            for r in range(M):
                if r in done:
                    continue
                for k in names:
                    own[r][k].grad = grads[k][r]
                optimizers[r].step()
                schedulers[r].step()
            losses[s] = loss.detach().double().cpu()
            correct[s] = ((logits.detach().argmax(-1) == yb) & (mask[s] > 0)).sum(1).cpu()
        for r in range(M):
            if r in done:
                continue
            # the same float64 sum, in the same order, as fit(): batch loss x batch rows
            total = sum(float(losses[s, r]) * counts[s][r] for s in range(steps))
            seen = sum(counts[s][r] for s in range(steps))
            if not math.isfinite(total):
                histories[r].append({"epoch": epoch, "train_loss": float("nan")})
                done[r] = _result(models[r], jobs[r], rows[r], histories[r], steps, M,
                                  f"diverged: non-finite training loss in epoch {epoch}")
                continue
            record = {"epoch": epoch, "lr": optimizers[r].param_groups[0]["lr"], "train_loss": total / seen,
                      "train_accuracy": int(correct[:, r].sum()) / seen}
            histories[r].append(record)
            if on_epoch is not None:
                on_epoch(positions[r], record)
        if len(done) == M:
            break
    out = []
    for r in range(M):
        result = done.get(r) or _result(models[r], jobs[r], rows[r], histories[r], steps, M, None)
        result.seconds = (time.perf_counter() - start) / M
        out.append(result)
    return out


def _plan(rows, gens, steps, bs, width):
    """This epoch's batches, fit()'s order per model: row ids [S, M, W], mask [S, M, W], real rows [S][M]."""
    M = len(rows)
    index = np.zeros((steps, M, width), np.int64)
    mask = np.zeros((steps, M, width), np.float32)
    counts = [[0] * M for _ in range(steps)]
    for r, (local, gen) in enumerate(zip(rows, gens, strict=True)):
        perm = local[torch.randperm(len(local), generator=gen).numpy()]
        for s in range(steps):
            part = perm[s * bs : (s + 1) * bs] if s < steps - 1 else perm[s * bs :]
            index[s, r, : len(part)] = part
            mask[s, r, : len(part)] = 1.0
            counts[s][r] = len(part)
    return torch.from_numpy(index), torch.from_numpy(mask), counts


def _result(model, job, rows, history, steps, M, stop_reason) -> FitResult:
    """Model ``r`` of the stack as fit() returns it (its own module: its parameters are what trained)."""
    import copy

    model = copy.deepcopy(model).cpu().eval()  # a copy: a diverged model's tensors stay in the running stack
    work.add_fit(model, tuple(model[0].mean.shape), len(rows), len(history))
    return FitResult(
        model=model,
        history=history,
        best_epoch=len(history),
        stopped_early=stop_reason is not None,
        train_index=np.asarray(rows),
        val_index=np.asarray(rows)[:0],
        seconds=0.0,
        info={"steps_per_epoch": steps, "diverged": stop_reason is not None, "pruned": False,
              "stop_reason": stop_reason, "batched": True, "stacked": "torch.func", "group_size": M},
    )


__all__ = ["fit_stacked", "stack_key"]
