"""The learning-rate range test (Smith 2017, "Cyclical learning rates"; fastai's ``lr_find``).

One short run on the training rows with the learning rate growing exponentially, step by step, from
``start_lr`` to ``end_lr``: the loss is flat while the lr is too small to matter, falls once it starts to
help and blows up when it is too large. Where it falls fastest is a good lr to train with.

The run *is* :func:`dlrig.train.fit` -- the same model, initialisation, optimizer, loss, class weights,
standardisation and batch order as the pipeline's -- with a :class:`LrSweep` callback that sets the
optimizer's lr before every step and records the batch loss. What the sweep changes in the config, and
why, is listed in :data:`SWEEP_OVERRIDES`; a result says which of them differed from the config given.

The loss is smoothed as fastai does (an exponential moving average with its start-up bias corrected) and
the run stops once the smoothed loss exceeds ``diverge`` times its minimum or stops being finite. Two
suggestions are read off the smoothed curve, as fastai reads them: ``steepest`` (the most negative slope
of loss against log lr) and ``valley`` (the middle of the longest descending stretch).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from dlrig.params import FitConfig
from dlrig.train.callbacks import Callback, FitState

# The sweep's own settings, and why each one: the lr is the callback's (a constant schedule starting at
# start_lr, so torch's scheduler leaves the callback's value alone); every row passed in takes gradient
# steps (no early-stopping split: the test reads the training loss only); the noise filter's sub-fits
# would train at the config's lr with the sweep's settings, so it is off; epochs only bound the run (the
# callback ends it after ``steps`` steps; a constant schedule does not depend on them).
SWEEP_OVERRIDES = ("schedule.name", "schedule.warmup_epochs", "train.early_stopping", "train.noise_filter")


def sweep_config(config: FitConfig, start_lr: float, steps: int) -> tuple[FitConfig, list[str]]:
    """The config the sweep trains, and a note for every pipeline setting it had to change."""
    notes = []
    if config.schedule.name != "constant" or config.schedule.warmup_epochs:
        notes.append(f"schedule {config.schedule.name} (warm-up {config.schedule.warmup_epochs} epochs) "
                     "replaced by the sweep's lr")
    if config.train.early_stopping is not None:
        notes.append("no early-stopping split: every training row takes gradient steps")
    if config.train.noise_filter != "none":
        notes.append(f"train.noise_filter {config.train.noise_filter} not applied (its sub-fits would train "
                     "with the sweep's settings)")
    swept = config.with_overrides({
        "optim.lr": start_lr, "schedule.name": "constant", "schedule.warmup_epochs": 0,
        "train.early_stopping": None, "train.noise_filter": "none", "train.epochs": steps,
    })
    return swept, notes


class LrSweep(Callback):
    """Sets lr_k = start_lr * factor**k (factor = (end_lr / start_lr) ** (1 / (steps - 1))) before step k
    and records each step's lr and batch loss; stops after ``steps`` steps or when the smoothed loss blows
    up (over ``diverge`` x its minimum, or not finite).

    The smoothed loss is fastai's AvgSmoothLoss: ``avg = beta * avg + (1 - beta) * loss`` from 0, divided
    by ``1 - beta**k`` so the first steps are not pulled towards 0.
    """

    def __init__(self, start_lr: float, end_lr: float, steps: int, *, beta: float = 0.98,
                 diverge: float = 4.0) -> None:
        if not (0 < start_lr < end_lr and steps >= 2 and 0 <= beta < 1 and diverge > 1):
            raise ValueError(f"bad sweep: {start_lr=}, {end_lr=}, {steps=}, {beta=}, {diverge=}")
        self.start_lr, self.end_lr, self.steps = start_lr, end_lr, steps
        self.beta, self.diverge = beta, diverge
        self.factor = (end_lr / start_lr) ** (1 / (steps - 1))
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.smoothed: list[float] = []
        self.stop_reason: str | None = None
        self._avg = 0.0
        self._scales: list[float] = []

    def lr_at(self, k: int) -> float:
        return self.start_lr * self.factor**k

    def _set_lr(self, state: FitState, lr: float) -> None:
        for group, scale in zip(state.optimizer.param_groups, self._scales, strict=True):
            group["lr"] = lr * scale

    def on_fit_start(self, state: FitState) -> None:
        # Each parameter group's share of optim.lr (built as start_lr): 1, unless a setting such as
        # train.transfer's body lr scale gives a group its own; the sweep keeps those ratios.
        self._scales = [group["lr"] / self.start_lr for group in state.optimizer.param_groups]
        self._set_lr(state, self.lr_at(0))

    def on_step_end(self, state: FitState) -> None:
        # the lr is optim.lr's equivalent this step used; state.loss: its batch loss (before the step)
        self.lrs.append(self.lr_at(len(self.lrs)))
        self.losses.append(float(state.loss))
        k = len(self.losses)
        self._avg = self.beta * self._avg + (1 - self.beta) * float(state.loss)
        smooth = self._avg / (1 - self.beta**k)
        self.smoothed.append(smooth)
        best = min(self.smoothed)
        if not math.isfinite(smooth):
            self.stop_reason = f"diverged: smoothed loss not finite at step {k} (lr {self.lrs[-1]:.3g})"
        elif smooth > self.diverge * best:
            self.stop_reason = (f"diverged: smoothed loss {smooth:.3g} > {self.diverge:g} x its minimum "
                                f"{best:.3g} at step {k} (lr {self.lrs[-1]:.3g})")
        elif k >= self.steps:
            state.request_stop("lr sweep finished")
            return
        if self.stop_reason is not None:
            state.request_stop(self.stop_reason)
            return
        # torch's constant schedule has just reset the lr to start_lr: set the next step's
        self._set_lr(state, self.lr_at(k))


def valley_index(losses: Sequence[float]) -> int:
    """fastai's ``valley``: the longest decreasing run of losses (not necessarily adjacent), then the
    point halfway along it (start + 1/3 + 1/6 of its length, fastai's arithmetic)."""
    loss = np.asarray(losses, dtype=float)
    n = len(loss)
    lds = np.ones(n, dtype=int)  # lds[i]: length of the longest decreasing sequence ending at i
    max_end = 0
    for i in range(1, n):
        earlier = lds[:i][loss[:i] > loss[i]]
        if len(earlier):
            lds[i] = max(lds[i], int(earlier.max()) + 1)
        if lds[max_end] < lds[i]:
            max_end = i
    max_start = max_end - int(lds[max_end])
    sections = (max_end - max_start) / 3
    return max(max_start + int(sections) + int(sections / 2), 0)


def steepest_index(lrs: Sequence[float], losses: Sequence[float]) -> int:
    """fastai's ``steep``: the point where d loss / d log lr (forward difference) is most negative."""
    slope = np.diff(np.asarray(losses, float)) / np.diff(np.log(np.asarray(lrs, float)))
    return int(np.argmin(slope))


def suggest(lrs: Sequence[float], smoothed: Sequence[float], *, skip_start: int, skip_end: int = 5
            ) -> dict[str, float | None]:
    """The suggestions from a smoothed curve: ``steepest``, ``valley`` and ``minimum`` (the lr of the lowest
    smoothed loss). Like fastai, the first ``skip_start`` points (the smoothing's start-up) and the last
    ``skip_end`` (the blow-up) are not considered; None when fewer than 3 points are left."""
    end = len(lrs) - skip_end
    lrs_, loss = list(lrs)[skip_start:end], list(smoothed)[skip_start:end]
    pairs = [(lr, v) for lr, v in zip(lrs_, loss, strict=True) if math.isfinite(v)]
    if len(pairs) < 3:
        return {"steepest": None, "valley": None, "minimum": None}
    lr_, v_ = [p[0] for p in pairs], [p[1] for p in pairs]
    return {"steepest": lr_[steepest_index(lr_, v_)], "valley": lr_[valley_index(v_)],
            "minimum": lr_[int(np.argmin(v_))]}


def _sig(x: float, digits: int = 2) -> float:
    return float(f"{x:.{digits - 1}e}")


def search_range(valley: float | None, minimum: float | None) -> dict[str, Any] | None:
    """A ``search.space`` entry for ``optim.lr`` around the valley: a decade below it up to the lr of the
    lowest smoothed loss (past it the loss rises; a decade above the valley when that is not higher),
    on a log scale, 2 significant digits."""
    if valley is None:
        return None
    high = minimum if minimum is not None and minimum > valley * 1.5 else valley * 10
    return {"low": _sig(valley / 10), "high": _sig(high), "log": True, "count": 4}


def space_yaml(space: dict[str, Any]) -> str:
    """The range as a line to paste under ``search.space:`` in params.yaml."""
    return (f"search:\n  space:\n    optim.lr: {{low: {space['low']:g}, high: {space['high']:g}, "
            f"log: true, count: {space['count']}}}   # from dlrig lr-range")


@dataclass
class RangeTest:
    """One sweep: what each step used and measured, why it stopped, and the suggestions."""

    seed: int
    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    stop_reason: str | None  # None: it ran every step
    suggestions: dict[str, float | None]
    space: dict[str, Any] | None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def lr_range_test(
    X: np.ndarray, y: np.ndarray, n_classes: int, config: FitConfig, seed: int, *,
    start_lr: float = 1e-6, end_lr: float = 10.0, steps: int = 100, beta: float = 0.98,
    diverge: float = 4.0, device: str = "cpu",
) -> RangeTest:
    """Sweep the lr over ``steps`` steps of one run on (X, y) -- training rows only -- with ``config``'s
    model, optimizer and training settings (see :data:`SWEEP_OVERRIDES`)."""
    from dlrig.train.fit import fit

    sweep = LrSweep(start_lr, end_lr, steps, beta=beta, diverge=diverge)
    swept, notes = sweep_config(config, start_lr, steps)
    fit(X, y, n_classes, swept, seed, device=device, callbacks=[sweep])
    found = suggest(sweep.lrs, sweep.smoothed, skip_start=steps // 10)
    return RangeTest(seed=seed, lrs=sweep.lrs, losses=sweep.losses, smoothed=sweep.smoothed,
                     stop_reason=sweep.stop_reason, suggestions=found,
                     space=search_range(found["valley"], found["minimum"]), notes=notes)


__all__ = ["LrSweep", "RangeTest", "lr_range_test", "search_range", "space_yaml", "steepest_index", "suggest",
           "valley_index"]
