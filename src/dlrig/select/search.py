"""Search strategies over a :mod:`dlrig.select.space`: grid (with refinement), quasi-random, Bayesian
(Optuna) and coordinate descent; a budget, a satisficing stop and pruning of bad trials.

``search.budget_minutes`` ends a random, bayes or coordinate search when its wall-clock time is up: the
budget is checked before each trial (never before the first), trials then run one at a time (as with
``stop_when``), and the record says ``stopped: budget`` with the trials reached and how to reproduce the
run without the clock (``n_trials`` = trials reached: random takes a prefix of the same Sobol sequence,
coordinate the same order, bayes the same proposals while its start-up count does not change). A grid is
never cut short -- its first points in product order are one corner of the space, not a sample of it --
so params refuse ``strategy: grid`` with a budget, and a depth-3 candidate's grid ignores it (and says
so). The budget is no part of any fit or cache key: a trial's numbers are those of its config trained
one at a time, whatever the budget (the cache finds them under the same keys with any budget); without a
budget, random and coordinate stack a batch of trials, which changes their numbers in the last bits (and
the dropout masks), so a reproduction keeps a budget it does not reach (the record's note says so).

A strategy never trains anything itself. It proposes configs and hands batches of them to ``evaluate``,
which returns one :class:`Trial` per config (scored on the folds the caller chose). So the same search
runs on a torch model, a scikit-learn estimator (the oracle test) or a fake.

A trial ends in one of three states: ``complete`` (scored), ``pruned`` (given up on early epochs) or
``failed`` (its fit diverged or raised a UserError; ``reason`` says which). The search goes on past a
failed trial; it scores worst -- never chosen while any trial is complete -- and stays in the results.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dlrig.errors import UserError
from dlrig.params import SearchParams
from dlrig.select.space import Dimension, config_key

TRIAL_STATES = ("complete", "pruned", "failed")
_clock = time.monotonic  # the budget's clock (tests replace it)


@dataclass
class Trial:
    number: int
    config: dict[str, Any]
    scores: list[float]  # the selection metric on each fold (empty unless complete)
    n_val: list[int]
    state: str = "complete"  # complete | pruned | failed
    metrics: dict[str, list[float]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None  # why a trial is failed (or pruned), in words

    def __post_init__(self) -> None:
        if self.state not in TRIAL_STATES:
            raise ValueError(f"trial state must be one of {TRIAL_STATES} (got {self.state!r})")

    @property
    def pruned(self) -> bool:
        return self.state == "pruned"

    @property
    def failed(self) -> bool:
        return self.state == "failed"

    @property
    def score(self) -> float | None:
        return None if self.state != "complete" or not self.scores else float(np.mean(self.scores))

    def to_json(self) -> dict[str, Any]:
        return {
            "trial": self.number,
            "config": self.config,
            "score": None if self.score is None else round(self.score, 6),
            "scores": [round(s, 6) for s in self.scores],
            "n_val": self.n_val,
            "state": self.state,
            "reason": self.reason,
            "pruned": self.pruned,  # kept beside state: readers of older results use it
            "metrics": {k: [round(v, 6) for v in vs] for k, vs in self.metrics.items()},
            **self.info,
        }


# evaluate(configs, pruner) -> one Trial per config (numbers assigned by the search)
Evaluate = Callable[[list[dict[str, Any]], "Pruner | None"], list[Trial]]


class Pruner:
    """Decides, epoch by epoch, whether a running trial is hopeless compared with the finished ones.

    ``median``: stop when the trial's validation score at epoch e is below the median of the finished
    trials at e (Optuna's MedianPruner rule). ``halving``: at rungs e = prune_after * 2^k keep only the top
    half of the trials that reached the rung (successive halving, asynchronous form). Scores come from
    the early-stopping split inside each training fold, never from the fold's validation rows.
    """

    def __init__(self, kind: str, after: int) -> None:
        self.kind, self.after = kind, after
        self.curves: list[dict[int, float]] = []  # per finished (fold-)run: epoch -> score

    def should_stop(self, epoch: int, score: float) -> bool:
        if epoch < self.after or len(self.curves) < 2:
            return False
        seen = [c[epoch] for c in self.curves if epoch in c]
        if len(seen) < 2:
            return False
        if self.kind == "median":
            return score < float(np.median(seen))
        rung = self.after
        while rung < epoch:
            rung *= 2
        if rung != epoch:
            return False
        return score < float(np.quantile(seen, 0.5))

    def record(self, curve: dict[int, float]) -> None:
        self.curves.append(curve)


@dataclass
class SearchResult:
    trials: list[Trial]
    best: Trial
    stopped_early: bool  # satisficing stop reached
    budget: dict[str, Any] | None = None  # with search.budget_minutes: what it did (_Runner.budget_record)

    def to_json(self) -> dict[str, Any]:
        # The budget keys appear only with a budget: without one the record is byte for byte as before.
        return {
            "trials": [t.to_json() for t in self.trials],
            "best_trial": self.best.number,
            "best_config": self.best.config,
            "best_score": round(self.best.score, 6),
            "stopped_by_target": self.stopped_early,
            **(self.budget or {}),
        }


class _Runner:
    """Keeps the trials, reuses configs already evaluated, enforces budget and the satisficing stop."""

    def __init__(self, evaluate: Evaluate, params: SearchParams, *, budget: bool = True) -> None:
        self.evaluate, self.params = evaluate, params
        self.trials: list[Trial] = []
        self.seen: dict[tuple, Trial] = {}
        self.pruner = Pruner(params.pruning, params.prune_after) if params.pruning != "none" else None
        self.done = False
        self.stopped: str | None = None  # "target" (stop_when reached) or "budget" (budget_minutes used up)
        minutes = params.budget_minutes if budget else None
        self.deadline = None if minutes is None else _clock() + 60.0 * minutes

    def out_of_time(self) -> bool:
        """The budget is used up (checked between trials; the first trial always runs)."""
        if self.deadline is None or not self.trials or _clock() < self.deadline:
            return False
        self.done, self.stopped = True, self.stopped or "budget"
        return True

    def run(self, configs: list[dict[str, Any]], *, check_budget: bool = True) -> list[Trial]:
        """Evaluate the configs not seen before (one by one when a stop rule needs the order);
        ``check_budget=False``: the caller has just checked :meth:`out_of_time`."""
        fresh = [c for c in dict.fromkeys(map(config_key, configs)) if c not in self.seen]
        sequential = self.params.stop_when is not None or self.pruner is not None or self.deadline is not None
        batches = [[c] for c in fresh] if sequential else [fresh] if fresh else []
        for batch in batches:
            if self.done or (check_budget and self.out_of_time()):
                break
            for key, trial in zip(batch, self.evaluate([dict(k) for k in batch], self.pruner), strict=True):
                trial.number = len(self.trials)
                self.trials.append(trial)
                self.seen[key] = trial
                target = self.params.stop_when
                if target is not None and trial.score is not None and trial.score >= target:
                    self.done, self.stopped = True, self.stopped or "target"
        return [self.seen[config_key(c)] for c in configs if config_key(c) in self.seen]

    def best(self) -> Trial:
        """The best complete trial; failed and pruned trials are never chosen."""
        complete = [t for t in self.trials if t.score is not None]
        if not complete:
            raise UserError(_none_complete(self.trials))
        if self.params.stop_when is not None:
            hits = [t for t in complete if t.score >= self.params.stop_when]
            if hits:
                return hits[0]  # satisficing: the first config that is good enough
        return max(complete, key=lambda t: (t.score, -t.number))  # ties: the earliest

    def budget_record(self, strategy: str, n_trials: int, sampler: str | None = None
                      ) -> dict[str, Any] | None:
        """What ``search.budget_minutes`` did, for the search record (None without a budget); ``sampler``:
        what :func:`bayes_search` returned."""
        minutes = self.params.budget_minutes
        if minutes is None:
            return None
        if strategy == "grid":
            return {"budget_minutes": minutes, "stopped": None,
                    "budget_note": "not applied: a grid runs all its points"}
        reached = len(self.trials)
        record = {"budget_minutes": minutes, "stopped": self.stopped, "trials_reached": reached}
        if self.stopped != "budget":
            return record
        note = f"to reproduce, set search.n_trials to {reached}"
        if sampler is not None and startup_trials(sampler, reached) != startup_trials(sampler, n_trials):
            note += (f" (not exact for bayes here: its sampler's start-up trials depend on n_trials, "
                     f"{startup_trials(sampler, n_trials)} at {n_trials}, "
                     f"{startup_trials(sampler, reached)} at {reached})")
        if strategy != "bayes" and self.params.stop_when is None and self.pruner is None:
            note += ("; keep a budget_minutes it does not reach: with a budget, trials are trained one at a "
                     "time, while without one they are stacked, which changes their numbers (dropout masks, "
                     "float rounding)")
        return {**record, "budget_note": note}


def _none_complete(trials: list[Trial]) -> str:
    """The error when no trial finished: each failure's reason (the same reason once), or the pruning."""
    failed = [t for t in trials if t.failed]
    if not failed:
        return (f"search: all {len(trials)} trials were pruned before any finished; loosen search.pruning "
                f"or raise search.prune_after")
    reasons: dict[str, list[int]] = {}
    for t in failed:
        reasons.setdefault(t.reason or "no reason recorded", []).append(t.number)
    said = "; ".join(f"{reason} (trials {numbers})" for reason, numbers in reasons.items())
    return (f"search: every trial failed ({len(failed)} failed, {len(trials) - len(failed)} pruned): {said}. "
            f"Narrow search.space (e.g. a lower optim.lr) or fix the params named")


def _grid(dims: list[Dimension], values: dict[str, list[Any]]) -> list[dict[str, Any]]:
    names = [d.name for d in dims]
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*(values[n] for n in names))]


def grid_search(dims: list[Dimension], runner: _Runner) -> None:
    values = {d.name: d.grid() for d in dims}
    runner.run(_grid(dims, values))
    for _ in range(max((d.refine for d in dims), default=0)):
        if runner.done:
            return
        best = runner.best().config
        refined = {
            d.name: d.refine_around(best[d.name], max(len(d.grid()) - 2, 1))
            if d.refine and d.numeric and d.low is not None
            else [best[d.name]]
            for d in dims
        }
        for d in dims:
            d_values = refined[d.name]
            if d.refine:
                object.__setattr__(d, "values", tuple(sorted(set(d.grid()) | set(d_values))))
        runner.run(_grid(dims, refined))


def random_search(dims: list[Dimension], runner: _Runner, n_trials: int, seed: int) -> None:
    """Scrambled Sobol points: quasi-random covers the space more evenly than i.i.d. draws."""
    from scipy.stats import qmc

    sampler = qmc.Sobol(d=len(dims), scramble=True, seed=seed)
    points = sampler.random(2 ** math.ceil(math.log2(max(n_trials, 2))))[:n_trials]
    runner.run([{d.name: d.sample_unit(u) for d, u in zip(dims, row, strict=True)} for row in points])


def coordinate_search(dims: list[Dimension], runner: _Runner, start: dict[str, Any], n_trials: int) -> None:
    """One hyperparameter at a time, the others held at the best so far (assumes they don't interact)."""
    current = {
        d.name: start[d.name] if start[d.name] in d.grid() else d.grid()[len(d.grid()) // 2] for d in dims
    }
    for d in dims:
        if runner.done or len(runner.trials) >= n_trials:
            break
        room = n_trials - len(runner.trials)
        candidates = [{**current, d.name: v} for v in d.grid()]
        fresh = [c for c in candidates if config_key(c) not in runner.seen][:room]
        runner.run([c for c in candidates if config_key(c) in runner.seen] + fresh)
        scored = [runner.seen[config_key(c)] for c in candidates if config_key(c) in runner.seen]
        scored = [t for t in scored if t.score is not None]
        if scored:
            current = dict(max(scored, key=lambda t: (t.score, -t.number)).config)


def startup_trials(sampler: str, n_trials: int) -> int:
    """Random trials before :func:`bayes_search`'s sampler ("gp" or "tpe") starts modelling."""
    return min(5, max(n_trials // 2, 1)) if sampler == "gp" else min(5, n_trials)


def bayes_search(
    dims: list[Dimension], runner: _Runner, n_trials: int, seed: int, storage: str | None = None
) -> str:
    """Optuna: the GP sampler when every dimension is a numeric range, TPE otherwise.

    With ``storage`` (a journal file or an RDB URL) the study lives there, so several processes add trials
    to one study: each evaluates its own ``n_trials`` proposals and the sampler (TPE with a constant liar,
    so running trials are not proposed twice) learns from every process's trials.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists: dict[str, optuna.distributions.BaseDistribution] = {}
    for d in dims:
        if d.low is not None and d.kind == "int":
            dists[d.name] = optuna.distributions.IntDistribution(int(d.low), int(d.high), log=d.log)
        elif d.low is not None:
            dists[d.name] = optuna.distributions.FloatDistribution(d.low, d.high, log=d.log)
        else:
            dists[d.name] = optuna.distributions.CategoricalDistribution(d.grid())
    all_ranges = all(d.low is not None for d in dims) and storage is None
    if storage is not None:
        sampler: optuna.samplers.BaseSampler = optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=startup_trials("tpe", n_trials), constant_liar=True
        )
    elif all_ranges:
        sampler = optuna.samplers.GPSampler(
            seed=seed, n_startup_trials=startup_trials("gp", n_trials)
        )
    else:
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials("tpe", n_trials))
    if storage is None:
        study = optuna.create_study(direction="maximize", sampler=sampler)
    else:
        study = optuna.create_study(direction="maximize", sampler=sampler, storage=_storage(storage),
                                    study_name=study_name(dims, n_trials, seed), load_if_exists=True)
    asked = 0
    # The budget is checked before asking, so no asked trial is left untold in the study.
    while len(runner.trials) < n_trials and not runner.done and not runner.out_of_time():
        asked += 1
        ot = study.ask(dists)
        config = {d.name: d.cast(ot.params[d.name]) if d.low is not None else ot.params[d.name] for d in dims}
        trial = runner.run([config], check_budget=False)[0]  # a point proposed again reuses its evaluation
        if trial.failed:  # the sampler learns nothing from it (Optuna's FAIL), and never proposes it as best
            study.tell(ot, state=optuna.trial.TrialState.FAIL)
        elif trial.score is None:
            study.tell(ot, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(ot, trial.score)
        if asked >= 4 * n_trials:  # the sampler keeps proposing seen points: stop
            break
    return "gp" if all_ranges else "tpe"


def study_name(dims: list[Dimension], n_trials: int, seed: int) -> str:
    """One study per search: named by the search's seed (derived from its place) and its space."""
    import hashlib
    import json

    space = [(d.name, d.kind, d.low, d.high, d.log, [str(v) for v in d.grid()]) for d in dims]
    digest = hashlib.blake2b(json.dumps([space, n_trials, seed], default=str).encode(), digest_size=8)
    return f"dlrig-{seed}-{digest.hexdigest()}"


def _storage(storage: str):
    """An RDB URL (``sqlite:///study.db``, ``postgresql://...``) as it is; anything else is a journal file."""
    import optuna

    if "://" in storage:
        return storage
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(storage))


def run_search(
    dims: list[Dimension],
    params: SearchParams,
    evaluate: Evaluate,
    *,
    seed: int,
    start: dict[str, Any],
    strategy: str | None = None,
) -> SearchResult:
    """Run the configured strategy (or ``strategy``) and return every trial and the best one."""
    strategy = strategy or params.strategy
    runner = _Runner(evaluate, params, budget=strategy != "grid")  # a grid is never cut short
    sampler = None
    if not dims:
        runner.run([{}])
    elif strategy == "grid":
        grid_search([Dimension(**d.__dict__) for d in dims], runner)
    elif strategy == "random":
        random_search(dims, runner, params.n_trials, seed)
    elif strategy == "coordinate":
        coordinate_search(dims, runner, start, params.n_trials)
    elif strategy == "bayes":
        sampler = bayes_search(dims, runner, params.n_trials, seed, params.storage)
    else:  # pragma: no cover - params refuse it
        raise ValueError(f"unknown strategy {strategy!r}")
    return SearchResult(runner.trials, runner.best(), runner.stopped == "target",
                        runner.budget_record(strategy if dims else "none", params.n_trials, sampler))
