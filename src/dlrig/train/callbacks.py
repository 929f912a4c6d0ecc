"""Training hooks: watch (or stop) :func:`dlrig.train.fit` at every step without copying its loop.

A callback subclasses :class:`Callback` and overrides only the events it needs; ``fit(..., callbacks=[...])``
calls them in list order with one shared :class:`FitState`. The events, in the order they happen:

``on_fit_start(state)``
    The model (weights initialised, scaler set), optimizer and scheduler are built; nothing trained yet.
``on_after_backward(state)``
    Every step, right after ``backward()``: each ``state.model.parameters()`` has this batch's ``.grad``
    (raw: before ``train.grad_clip`` clips it); ``state.loss`` is the batch's training loss (without the
    L1 term), ``state.epoch`` / ``state.step`` / ``state.global_step`` say where the step is.
``on_step_end(state)``
    Every step, after ``optimizer.step()`` and ``scheduler.step()``: the weights are updated; ``state.lr``
    is the learning rate this step used.
``on_epoch_end(state, record)``
    After every finished epoch, with its history record (``epoch``, ``lr``, ``train_loss``,
    ``train_accuracy`` and, with early stopping on, ``val_loss``, ``val_accuracy``). Not called for an
    epoch whose training loss was not finite: the run has diverged and stops there.
``on_fit_end(state)``
    The loop is over (``state.stop_reason`` says why, None when it ran every epoch). Early stopping, which
    fit appends last, restores the best epoch's weights here.

Stopping: a callback sets ``state.stop = True`` and a ``state.stop_reason`` (or calls
:meth:`FitState.request_stop`). The run ends as soon as the event returns: after ``on_after_backward`` the
optimizer step is not taken, after ``on_step_end`` no further step runs -- either way the epoch it
happened in gets no history record and no ``on_epoch_end`` -- and after ``on_epoch_end`` no further epoch
starts; ``on_fit_end`` always runs. Every callback still sees the event
in which the stop was asked. ``state.pruned = True`` marks the run as given up on (search pruning): its
result is then not a finished trial.

Step events cost nothing unless a callback overrides them: fit checks once, before training.

Example -- per-layer gradient norms at every step::

    class GradNorms(Callback):
        def __init__(self):
            self.rows = []

        def on_after_backward(self, state):
            for name, p in state.model.named_parameters():
                if p.grad is not None:
                    self.rows.append((state.global_step, name, float(p.grad.norm())))

    fit(X, y, n_classes, config, seed, callbacks=[GradNorms()])

This module imports nothing from the rest of dlrig, so any area (and any study) can use it.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass
class FitState:
    """What fit shares with its callbacks. Read anything; write only ``stop``, ``stop_reason``, ``pruned``."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    config: Any  # the FitConfig being trained
    steps_per_epoch: int
    epoch: int = 0  # 1-based once training starts
    step: int = 0  # 0-based position of the step in its epoch
    global_step: int = 0  # 1-based number of the current step over the whole run (step events)
    loss: float = math.nan  # the current batch's training loss (step events)
    lr: float = math.nan  # the learning rate the current step used (on_step_end)
    history: list[dict[str, float]] = field(default_factory=list)  # the finished epochs' records
    stop: bool = False
    stop_reason: str | None = None
    pruned: bool = False

    def request_stop(self, reason: str, *, pruned: bool = False) -> None:
        """End the run when the current event returns (the first reason asked is kept)."""
        if not self.stop:
            self.stop, self.stop_reason = True, reason
        self.pruned = self.pruned or pruned


class Callback:
    """No-op hooks: override the events you need (see the module docstring)."""

    def on_fit_start(self, state: FitState) -> None:
        pass

    def on_after_backward(self, state: FitState) -> None:
        pass

    def on_step_end(self, state: FitState) -> None:
        pass

    def on_epoch_end(self, state: FitState, record: dict[str, float]) -> None:
        pass

    def on_fit_end(self, state: FitState) -> None:
        pass


def overrides(callback: Callback, event: str) -> bool:
    """Whether ``callback`` does something at ``event`` (fit skips step events nobody listens to)."""
    return getattr(type(callback), event, None) is not getattr(Callback, event)


class EarlyStopping(Callback):
    """``train.early_stopping``: stop after ``patience`` epochs without improving ``monitor`` by more than
    ``min_delta``, then restore the weights of the best epoch.

    An epoch on which another callback already stopped the run (a pruned trial) is not considered: the
    restored weights are the best of the epochs before it.
    """

    def __init__(self, params: Any) -> None:  # params: dlrig.params EarlyStopping section
        self.monitor, self.patience, self.min_delta = params.monitor, params.patience, params.min_delta
        self.best_value = -math.inf if self.monitor == "val_accuracy" else math.inf
        self.best_epoch: int | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.bad_epochs = 0

    def improved(self, value: float) -> bool:
        if self.monitor == "val_accuracy":
            return value > self.best_value + self.min_delta
        return value < self.best_value - self.min_delta

    def on_epoch_end(self, state: FitState, record: dict[str, float]) -> None:
        if state.stop:
            return
        value = record[self.monitor]
        if self.improved(value):
            self.best_value, self.best_epoch, self.bad_epochs = value, state.epoch, 0
            self.best_state = copy.deepcopy(state.model.state_dict())
        else:
            self.bad_epochs += 1
            if self.bad_epochs > self.patience:
                best = "" if self.best_epoch is None else f" (best epoch {self.best_epoch})"
                state.request_stop(
                    f"early stopping: {self.monitor} did not improve for {self.bad_epochs} epochs{best}"
                )

    def on_fit_end(self, state: FitState) -> None:
        if self.best_state is not None:
            state.model.load_state_dict(self.best_state)


class EpochFunction(Callback):
    """Adapter for the older ``on_epoch=fn`` argument: ``fn(record)`` returning False prunes the run."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def on_epoch_end(self, state: FitState, record: dict[str, float]) -> None:
        if self.fn(record) is False:
            state.request_stop(f"stopped by on_epoch after epoch {state.epoch}", pruned=True)


class GradientNorms(Callback):
    """The L2 norm of every Linear/Conv weight's gradient, input layer first, at the steps asked for.

    ``at_steps``: the 1-based global steps to record (None: every step); step 1 is the gradient at
    initialisation. ``stop_after``: end the run after that many steps (a step budget independent of the
    epoch length). Read ``norms`` (``{step: [norm per layer]}``) and ``layers`` (the modules' names)
    after the fit. The gradients are the raw ones: before ``train.grad_clip`` clips them.
    """

    def __init__(self, at_steps: Any = None, stop_after: int | None = None) -> None:
        self.at_steps = None if at_steps is None else {int(s) for s in at_steps}
        self.stop_after = stop_after
        self.layers: list[str] = []
        self.norms: dict[int, list[float]] = {}
        self._weights: list[tuple[str, torch.Tensor]] = []  # filled by on_fit_start

    def on_fit_start(self, state: FitState) -> None:
        self._weights = [(name, m.weight) for name, m in state.model.named_modules()
                         if isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d)]
        self.layers = [name for name, _ in self._weights]

    def on_after_backward(self, state: FitState) -> None:
        step = state.global_step
        if self.at_steps is None or step in self.at_steps:
            # in float64: squaring a vanished float32 gradient (1e-25) would underflow to a norm of 0
            self.norms[step] = [math.nan if w.grad is None else float(w.grad.detach().double().norm())
                                for _, w in self._weights]

    def on_step_end(self, state: FitState) -> None:
        if self.stop_after is not None and state.global_step >= self.stop_after:
            state.request_stop(f"step budget: {self.stop_after} steps")


class DVCLiveLogger(Callback):
    """Logs every epoch record to a ``dvclive.Live`` (``train_loss`` -> ``train/loss``), one step per epoch.

    Takes the ``Live`` object, so only the code that creates it imports dvclive.
    """

    def __init__(self, live: Any) -> None:
        self.live = live

    def on_epoch_end(self, state: FitState, record: dict[str, float]) -> None:
        self.log(record)

    def log(self, record: dict[str, float]) -> None:
        """One epoch's record (also ``fit_many``'s ``on_epoch``, which passes records, not fit states)."""
        for key, value in record.items():
            if key != "epoch":
                self.live.log_metric(key.replace("_", "/", 1), value)
        self.live.next_step()


__all__ = ["Callback", "DVCLiveLogger", "EarlyStopping", "EpochFunction", "FitState", "GradientNorms",
           "overrides"]
