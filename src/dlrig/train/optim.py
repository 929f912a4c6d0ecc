"""Optimizers and learning-rate schedules from ``params.optim`` / ``params.schedule``.

Schedules step once per batch, so warm-up and decay are smooth whatever the batch size.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dlrig.params import OptimParams, ScheduleParams


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """L2 on weight matrices and kernels only: decaying biases and norm gains only hurts."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if name.endswith("weight") and p.dim() > 1 else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, cfg: OptimParams) -> torch.optim.Optimizer:
    groups = _param_groups(model, cfg.weight_decay)
    betas = (cfg.beta1, cfg.beta2)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=betas, eps=cfg.eps)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=betas, eps=cfg.eps)
    if cfg.name == "nadam":
        return torch.optim.NAdam(groups, lr=cfg.lr, betas=betas, eps=cfg.eps)
    if cfg.name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=cfg.lr, alpha=cfg.alpha, eps=cfg.eps, momentum=cfg.momentum)
    if cfg.name == "adagrad":
        return torch.optim.Adagrad(groups, lr=cfg.lr, eps=cfg.eps)
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


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: ScheduleParams, lr: float, epochs: int, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    if cfg.name == "onecycle":
        # max_lr is params.optim.lr; the warm-up share is warmup_epochs (at least 1 step) of the run.
        total = epochs * steps_per_epoch
        pct = min(max(cfg.warmup_epochs / epochs, 1 / total), 0.5) if cfg.warmup_epochs else 0.3
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=lr, total_steps=total, pct_start=pct,
            cycle_momentum="momentum" in optimizer.defaults or "betas" in optimizer.defaults,
        )
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(cfg, step, epochs, steps_per_epoch)
    )
