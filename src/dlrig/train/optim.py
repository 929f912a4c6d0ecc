"""Optimizers and learning-rate schedules from ``params.optim`` / ``params.schedule``.

Schedules step once per batch, so warm-up and decay are smooth whatever the batch size.

The one definition of these semantics for both trainers: ``fit()`` runs them through torch
(:func:`build_optimizer`, :func:`build_scheduler`); the stacked trainer (``dlrig.train.batched``), which
updates many models as rows of one tensor, reads the same rules from here: :func:`decays` (which
parameters weight decay and L1 touch), :func:`schedule_at` (the lr and cycled momentum
:func:`build_scheduler`'s scheduler sets at a step) and the per-row update rules
:func:`add_weight_decay`, :func:`sgd_update`, :func:`adam_coefficients` / :func:`adam_update`
(torch.optim's single-tensor arithmetic with one set of scalars per row). tests/train/test_optim.py holds
each of them to torch's scheduler and optimizers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from dlrig.params import OptimParams, ScheduleParams


def decays(name: str, p: torch.Tensor) -> bool:
    """Whether weight decay (and L1) applies to parameter ``name``: weight matrices and kernels only --
    decaying biases and norm gains only hurts."""
    return name.endswith("weight") and p.dim() > 1


def _param_groups(model: nn.Module, weight_decay: float, lr_scales: Mapping[str, float] | None = None,
                  lr: float = 1.0) -> list[dict]:
    """Decayed / not decayed parameters; with ``lr_scales`` (name -> multiplier of ``lr``) one such pair per
    scale, the unscaled pair first (so ``param_groups[0]["lr"]`` stays the base rate the history logs)."""
    scales = lr_scales or {}
    groups: dict[tuple[float, bool], list] = {(1.0, True): [], (1.0, False): []}
    for name, p in model.named_parameters():
        if not p.requires_grad and name not in scales:  # frozen; a named one may be unfrozen later
            continue
        groups.setdefault((float(scales.get(name, 1.0)), decays(name, p)), []).append(p)
    if not scales:
        return [{"params": groups[(1.0, True)], "weight_decay": weight_decay},
                {"params": groups[(1.0, False)], "weight_decay": 0.0}]
    return [{"params": ps, "weight_decay": weight_decay if decay else 0.0, "lr": lr * scale,
             "lr_scale": scale} for (scale, decay), ps in groups.items() if ps or scale == 1.0]


def build_optimizer(
    model: nn.Module, cfg: OptimParams, lr_scales: Mapping[str, float] | None = None
) -> torch.optim.Optimizer:
    """The torch optimizer ``cfg.name`` with every knob of its own from ``cfg``: ``eps`` reaches each one
    that has it (all but sgd); keys an optimizer lacks (``rho`` for adam, ...) are not used."""
    # lr_scales: parameter name -> multiplier of cfg.lr (transfer learning's body rate, dlrig.train.transfer)
    groups = _param_groups(model, cfg.weight_decay, lr_scales, cfg.lr)
    betas = (cfg.beta1, cfg.beta2)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, dampening=cfg.dampening,
                               nesterov=cfg.nesterov)
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=betas, eps=cfg.eps, amsgrad=cfg.amsgrad)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=betas, eps=cfg.eps, amsgrad=cfg.amsgrad)
    if cfg.name == "nadam":
        return torch.optim.NAdam(groups, lr=cfg.lr, betas=betas, eps=cfg.eps,
                                 momentum_decay=cfg.momentum_decay)
    if cfg.name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=cfg.lr, alpha=cfg.alpha, eps=cfg.eps, momentum=cfg.momentum,
                                   centered=cfg.centered)
    if cfg.name == "adagrad":
        return torch.optim.Adagrad(groups, lr=cfg.lr, eps=cfg.eps, lr_decay=cfg.lr_decay,
                                   initial_accumulator_value=cfg.initial_accumulator_value)
    if cfg.name == "adadelta":
        return torch.optim.Adadelta(groups, lr=cfg.lr, rho=cfg.rho, eps=cfg.eps)
    raise ValueError(f"unknown optimizer {cfg.name!r}")  # pragma: no cover - params refuse it


def lr_factor(cfg: ScheduleParams, step: int, epochs: int, steps_per_epoch: int) -> float:
    """Multiplier of the base learning rate after ``step`` optimizer steps (warm-up, then the decay)."""
    warmup = cfg.warmup_epochs * steps_per_epoch
    if step < warmup:
        return (step + 1) / warmup
    epoch = (step - warmup) / steps_per_epoch  # fractional epochs since the end of warm-up
    total = max(epochs - cfg.warmup_epochs, 1)
    floor = cfg.min_lr_ratio
    if cfg.name == "constant":
        return 1.0
    if cfg.name == "step":
        return max(cfg.gamma ** int(epoch // cfg.step_size), floor)
    if cfg.name == "exponential":
        return max(cfg.gamma**epoch, floor)
    if cfg.name == "cosine":
        progress = min(epoch / total, 1.0)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule {cfg.name!r}")  # pragma: no cover


def _onecycle_pct_start(cfg: ScheduleParams, epochs: int, steps_per_epoch: int) -> float:
    """OneCycle's warm-up share: warmup_epochs (at least 1 step, at most half) of the run; 0.3 without."""
    if not cfg.warmup_epochs:
        return 0.3
    return min(max(cfg.warmup_epochs / epochs, 1 / (epochs * steps_per_epoch)), 0.5)


def _onecycle(step: int, total: int, pct_start: float, max_lr: float) -> tuple[float, float]:
    """torch.optim.lr_scheduler.OneCycleLR (cos, two phases, its default div factors and momenta) after
    ``step`` steps: (lr, momentum). The same float operations in the same order, so the same bits."""
    initial = max_lr / 25.0
    phases = [
        (float(pct_start * total) - 1, initial, max_lr, 0.95, 0.85),
        (total - 1, max_lr, initial / 1e4, 0.85, 0.95),
    ]
    start = 0.0
    for i, (end, lr0, lr1, m0, m1) in enumerate(phases):
        if step <= end or i == len(phases) - 1:
            pct = (step - start) / (end - start)
            cos_out = math.cos(math.pi * pct) + 1
            return lr1 + (lr0 - lr1) / 2.0 * cos_out, m1 + (m0 - m1) / 2.0 * cos_out
        start = end
    raise AssertionError("unreachable")  # pragma: no cover


def schedule_at(
    cfg: ScheduleParams, lr: float, step: int, epochs: int, steps_per_epoch: int
) -> tuple[float, float | None]:
    """The learning rate :func:`build_scheduler`'s scheduler sets after ``step`` optimizer steps, and the
    momentum (sgd) / beta1 (adam) that onecycle cycles with it (None: the optimizer keeps its own).

    For the stacked trainer, which has no torch scheduler per model; equal to the scheduler's values
    bit for bit (tests/train/test_optim.py, every schedule name over whole runs)."""
    if cfg.name != "onecycle":
        return lr * lr_factor(cfg, step, epochs, steps_per_epoch), None
    return _onecycle(step, epochs * steps_per_epoch, _onecycle_pct_start(cfg, epochs, steps_per_epoch), lr)


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: ScheduleParams, lr: float, epochs: int, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    if cfg.name == "onecycle":
        # max_lr is params.optim.lr
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[lr * g.get("lr_scale", 1.0) for g in optimizer.param_groups],  # body: scaled
            total_steps=epochs * steps_per_epoch,
            pct_start=_onecycle_pct_start(cfg, epochs, steps_per_epoch),
            cycle_momentum="momentum" in optimizer.defaults or "betas" in optimizer.defaults,
        )
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(cfg, step, epochs, steps_per_epoch)
    )


# ------------------------------------------------------------------------------ update rules, per row
# torch.optim's single-tensor arithmetic (the path fit()'s optimizers take on the CPU) for a stack of
# models: each row of ``param`` [M, P] is one model, and every scalar may be a tensor [M, 1] holding one
# value per row. The stacked trainer updates all its models with these; tests/train/test_optim.py holds
# them to torch.optim.SGD / Adam / AdamW row by row.


def add_weight_decay(grad: torch.Tensor, param: torch.Tensor, weight_decay: torch.Tensor | float) -> None:
    """L2 as torch's SGD and Adam apply it, in place: ``grad += weight_decay * param``. Pass only the
    entries :func:`decays` selects."""
    if torch.is_tensor(weight_decay):
        grad.addcmul_(param, weight_decay)
    else:
        grad.add_(param, alpha=weight_decay)


def sgd_update(
    param: torch.Tensor,
    grad: torch.Tensor,
    buf: torch.Tensor,
    momentum: torch.Tensor | float,
    neg_lr: torch.Tensor | float,
    *,
    nesterov: bool,
) -> None:
    """torch.optim.SGD's step (dampening 0, weight decay already in ``grad``), in place.

    ``buf`` starts at zeros: ``momentum * 0 + grad`` is the clone of grad torch takes on the first step,
    and momentum 0 leaves ``buf = grad``, torch's plain step. ``neg_lr`` is minus the learning rate; a row
    with ``momentum`` 1, ``neg_lr`` 0 and a zero grad is left as it is (a model without a batch)."""
    buf.mul_(momentum).add_(grad)
    param.add_((grad.add(buf * momentum) if nesterov else buf) * neg_lr)


def adam_coefficients(
    lr: float, beta1: float, beta2: float, eps: float, weight_decay: float, step: int
) -> tuple[float, float, float, float, float, float, float]:
    """The scalars of Adam's step number ``step`` (1-based), in double as torch computes them on the host:
    ``(1 - beta1, beta2, 1 - beta2, -lr / (1 - beta1**step), sqrt(1 - beta2**step), eps, 1 - lr * wd)``,
    the last one AdamW's decoupled decay factor. ``(0, 1, 0, 0, 1, 1, 1)`` is a step that changes
    nothing (a model without a batch)."""
    bias1, bias2 = 1 - beta1**step, 1 - beta2**step
    return 1 - beta1, beta2, 1 - beta2, -(lr / bias1), bias2**0.5, eps, 1 - lr * weight_decay


ADAM_NO_STEP = (0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0)  # adam_coefficients of a step that changes nothing


def adam_update(
    param: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    coefficients: tuple[torch.Tensor | float, ...],
) -> None:
    """torch.optim.Adam/AdamW's single-tensor step with :func:`adam_coefficients` (L2 already in ``grad``,
    AdamW's decay already applied to ``param``: :func:`add_weight_decay`, ``param *= coefficients[6]``),
    in place."""
    w1, beta2, one_minus_beta2, neg_step, bias2_sqrt, eps, _ = coefficients
    exp_avg.lerp_(grad, w1)
    exp_avg_sq.mul_(beta2).addcmul_(grad * one_minus_beta2, grad)
    denom = (exp_avg_sq.sqrt() / bias2_sqrt).add_(eps)
    param.addcdiv_(exp_avg * neg_step, denom)


def adam_rows(theta: torch.Tensor, grad: torch.Tensor, moments: list[torch.Tensor],
              coefficients: tuple[torch.Tensor, ...], l2: torch.Tensor | None, n_decayed: int,
              decoupled: bool) -> None:
    """One Adam (``decoupled``: AdamW) step of every row of ``theta [M, P]``, the stacked trainers' form:
    weight decay ``l2 [M, 1]`` on the weight columns ``[:n_decayed]`` only, then :func:`adam_update`."""
    if l2 is not None and decoupled:
        theta[:, :n_decayed].mul_(coefficients[6])  # param * (1 - lr * wd)
    elif l2 is not None:
        add_weight_decay(grad[:, :n_decayed], theta[:, :n_decayed], l2)
    adam_update(theta, grad, *moments, coefficients)
