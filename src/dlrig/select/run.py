"""Run the whole selection for the ``train`` stage: nested CV on the training split, then the final choice.

Outer folds (and the final selection on all training rows) are independent jobs: they run in parallel in
``compute.n_jobs`` processes, one torch thread each, or on an existing Dask cluster
(``compute.backend: dask``, see :mod:`dlrig.select.cluster`). Every trained config is cached on disk
(``compute.cache_dir``), so a run killed mid-way resumes where it stopped, with identical results.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from dlrig.data.dataset import Dataset
from dlrig.params import ComputeParams, Params
from dlrig.progress import Progress
from dlrig.seeds import derive_seed
from dlrig.select.nested import NestedCV, Selection, summarise
from dlrig.select.pool import exit_with_parent, shared
from dlrig.select.scorers import ResultCache, TorchScorer
from dlrig.select.space import build_space, describe_space


@dataclass
class SelectionReport:
    folds: list[dict[str, Any]]
    summary: dict[str, Any]
    final: Selection
    space: dict[str, Any]
    cache: dict[str, int]
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per task: timings, not results


def _start_values(params: Params, names: list[str]) -> dict[str, Any]:
    raw = params.fit_config().model_dump()
    out = {}
    for name in names:
        node: Any = raw
        for part in name.split("."):
            node = node[part]
        out[name] = node
    return out


def _perform(driver: NestedCV, task: tuple) -> tuple[tuple, Any]:
    """``(key, value)`` of a task: an outer fold's record, or the final selection."""
    if task[0] == "outer":
        _, k, train, test = task
        return task[:2], driver.outer_fold(k, train, test)
    return ("final",), driver.select(task[1], ("final",))


def _run_task(driver: NestedCV, task: tuple, worker: bool = False) -> tuple[tuple, Any]:
    """One outer fold, or the final selection; runs in a worker process (one torch thread)."""
    import torch

    from dlrig.train import work

    if worker:
        exit_with_parent()
    done = work.snapshot()
    torch.set_num_threads(1)
    start = time.perf_counter()
    cache = driver.scorer.cache
    before = (cache.hits, cache.misses)
    key, value = _perform(driver, task)
    seconds = time.perf_counter() - start
    # the fits trained here: merged into the stage's cost record (a worker's tally dies with it)
    return key, value, (cache.hits - before[0], cache.misses - before[1]), seconds, work.since(done)


def select_config(
    params: Params, train: Dataset, *, log=None, progress: bool | None = None
) -> SelectionReport:
    """Nested CV (``cv.depth``) with the configured search; returns per-fold records and the final pick.

    A progress bar counts the fits on stderr (``progress``: None follows :func:`dlrig.progress.show_progress`,
    the terminal / ``CI`` / ``DLRIG_QUIET`` rule). Worker processes count into it through its tally file.
    ``log`` (default: print, above the bar) gets one line per finished outer fold.
    """
    base = params.fit_config()
    dims = build_space(params.search.space, base)
    cache = ResultCache(_cache_dir(params.compute))
    scorer = TorchScorer(
        train.X,
        train.y,
        train.n_classes,
        base,
        params.search.metric,
        device=params.compute.device,
        cache=cache,
    )
    driver = NestedCV(
        scorer,
        train.y,
        train.groups,
        dims,
        params.search,
        params.cv,
        params.seed,
        start=_start_values(params, [d.name for d in dims]),
    )
    rows = np.arange(len(train.y))
    with Progress(driver.planned_fits(), "train: nested CV" if params.cv.depth > 1 else "train: CV",
                  enabled=progress) as bar:
        scorer.progress = bar.tally  # pickled with the driver: workers count into the bar too
        return _select(params, driver, cache, rows, log or bar.write)


def _select(params: Params, driver: NestedCV, cache: ResultCache, rows: np.ndarray, log) -> SelectionReport:
    start = time.perf_counter()
    timings: dict[str, float] = {}
    if params.cv.depth == 1:
        folds, final = driver.plain_cv(rows)
        hits, misses = cache.hits, cache.misses
    else:
        tasks: list[tuple] = [("outer", k, tr, te) for k, (tr, te) in enumerate(driver.outer_folds(rows))]
        tasks.append(("final", rows))
        results: dict[tuple, Any] = {}
        hits = misses = 0
        # wider stacks (every selection's fits together) where they pay: known up front, or in lock-step
        wider = (params.compute.backend != "dask" and isinstance(driver.scorer, TorchScorer)
                 and (driver.upfront() or driver.lockstep())
                 and _bigger_stacks_pay(params.compute.device, driver.scorer.base, driver.scorer.X.shape[1:],
                                        driver.scorer.n_classes))
        if wider:
            before, tick = (cache.hits, cache.misses), time.perf_counter()
            if driver.upfront():
                _train_upfront(driver, tasks, params.compute.n_jobs)
                outputs = (_run_task(driver, t) for t in tasks)  # every fit is ready: the searches replay
            else:
                outputs = _lockstep(driver, tasks, params.compute.n_jobs)
            timings["upfront" if driver.upfront() else "lockstep"] = round(time.perf_counter() - tick, 3)
            hits, misses = cache.hits - before[0], cache.misses - before[1]
        elif params.compute.backend == "dask":
            outputs = _on_cluster(params.compute, driver, tasks, log)
        elif params.compute.n_jobs > 1:
            outputs = _with_workers(driver, tasks, params.compute.n_jobs)
        else:
            outputs = (_run_task(driver, t) for t in tasks)
        from dlrig.train import work

        in_process = params.compute.backend != "dask" and (params.compute.n_jobs == 1 or wider)
        for key, value, (h, m), seconds, done in outputs:
            if not in_process:
                work.merge(done)  # counted in a worker process (none for a task run here): add it here
            results[key] = value
            timings["-".join(map(str, key))] = round(seconds, 3)
            hits, misses = hits + h, misses + m
            _log_task(log, key, value, start)
        folds = [results[("outer", k)] for k in range(len(tasks) - 1)]
        final = results[("final",)]
    summary = summarise(folds, params.search.metric, params.cv.depth)
    timings["total"] = round(time.perf_counter() - start, 3)
    cache_counts = {"hits": hits, "misses": misses}
    return SelectionReport(folds, summary, final, describe_space(driver.dims), cache_counts, timings)


def _with_workers(driver: NestedCV, tasks: list[tuple], n_jobs: int):
    """Yield every task's output, trained by ``n_jobs - 1`` worker processes and by this one, one task at a
    time each (:func:`dlrig.select.pool.shared`). Results do not depend on where a task ran: each task
    derives its seeds from its own key, and a stacked fit's bits do not depend on its stack mates."""
    from joblib.externals.loky import ProcessPoolExecutor

    def here(task: tuple) -> tuple:
        key, value, counts, seconds, _done = _run_task(driver, task)
        return key, value, counts, seconds, {}  # counted in this process's tally already

    # Its own executor, not loky's process-wide reusable one: joblib (the stacked shares in scorers, the
    # studies' map_jobs) reuses that one and expects its own attributes on it.
    with ProcessPoolExecutor(max_workers=n_jobs - 1) as executor:
        for _, output in shared(tasks, here, partial(_run_task, driver, worker=True), executor, n_jobs - 1):
            yield output


def _bigger_stacks_pay(device: str, base: Any = None, sample_shape: tuple = (), n_classes: int = 0) -> bool:
    """Whether to stack every selection's fits together (:func:`_train_upfront`, :func:`_lockstep`). On a
    GPU, where a wider stack fills the device. On a CPU for a family :mod:`dlrig.train.stacked_func` trains
    (CNNs, recurrent nets, transformers; ``base`` is the search's starting config): the 41 CNN fits of
    bench/cnn_stacked.py ran 2.8x the per-fit loop up front vs 2.1x one selection at a time (the outer refits
    stack too, instead of five lone fits). Not for the MLP stack on a CPU: bench/nested_cv.py on 2 quiet
    cores timed the grid workload at 9.4 s up front vs 8.4 s with one selection's fits per stack (60 models'
    weights and Adam moments, ~25 MB, outgrow the CPU's cache; 12 models' fit in it). Every way gives the
    same bytes (tests/select/test_upfront.py): a stacked fit does not depend on its stack mates.
    """
    from dlrig.train.fit import resolve_device
    from dlrig.train.stacked_func import stacks_here, trains_stacked

    if resolve_device(device).type == "cuda":
        return True
    return base is not None and stacks_here(device) and trains_stacked(base, sample_shape, n_classes)


def _train_upfront(driver: NestedCV, tasks: list[tuple], n_jobs: int) -> None:
    """Train every selection's first search batch, then every outer refit, each as one stack per shape.

    Grid and random searches know their configs before any fit (:meth:`NestedCV.upfront`), so the fits of
    all outer folds and the final selection -- (outer fold x inner fold x config) -- go to fit_many at once:
    one stack per model shape instead of one per selection. The searches then replay from memory, choose
    each fold's config, and the outer refits train together too.

    With ``compute.n_jobs`` > 1 the search stacks are cut into that many shares, trained in as many
    processes (each pays seconds of imports: see bench/nested_cv.py for when it pays); the few refits train
    here. Processes, not intra-op threads: two torch threads on the stack were 19x slower on a loaded
    2-core machine (OpenMP threads spin-waiting for a core).
    """
    scorer = driver.scorer
    _prefetch_searches(scorer, [(t[0], driver.first_batch(t[2], t[:2]) if t[0] == "outer"
                                 else driver.first_batch(t[1], ("final",))) for t in tasks], n_jobs)
    refits = []
    for _, k, train, test in (t for t in tasks if t[0] == "outer"):
        chosen = driver.select(train, ("outer", k))  # replays the prefetched trials
        refits.append((chosen.config, train, test, derive_seed(driver.seed, "outer-refit", k)))
    scorer.prefetch([], refits)


def _prefetch_searches(scorer: TorchScorer, calls: list[tuple[str, tuple]], n_jobs: int) -> None:
    """Train the ``(task kind, cv_trials call)`` fits of several selections together. The outer folds'
    selections fit on (k-1)/k of an outer-train, the final selection on (k-1)/k of all rows: more steps per
    epoch. In one stack the outer folds' models would sit idle (masked) through the final's extra steps,
    so the two train as two stacks."""
    for kind in ("outer", "final"):
        group = [call for where, call in calls if where == kind]
        if group:
            scorer.prefetch(group, n_jobs=n_jobs)


class _Cancelled(BaseException):
    """Raised in a lock-step selection's thread when the run stops before the selection ends."""


class _Turn:
    """One task of :func:`_lockstep`, in its own thread, with its own driver whose scorer is this object:
    each ``cv_trials`` / ``holdout`` call is posted as a request, the thread waits for the round's fits,
    then the real scorer replays them from memory. Only one thread (or the coordinator) runs at a time --
    a baton, not parallelism -- so the searches (Optuna's samplers included) run as they do alone."""

    def __init__(self, driver: NestedCV, task: tuple) -> None:
        import copy

        self.task, self.scorer = task, driver.scorer
        self.metric = self.scorer.metric
        self.driver = copy.copy(driver)
        self.driver.scorer = self
        self.go, self.back = threading.Semaphore(0), threading.Semaphore(0)
        self.request: tuple | None = None
        self.output: tuple | None = None
        self.error: BaseException | None = None
        self.cancelled = False
        self.thread = threading.Thread(target=self._main, name=f"dlrig-lockstep-{task[:2]}", daemon=True)

    # the coordinator's side
    def step(self) -> None:
        """Run the task until its next request or its end (the coordinator waits meanwhile)."""
        if self.thread.ident is None:  # not started yet
            self.thread.start()
        else:
            self.go.release()
        self.back.acquire()

    @property
    def done(self) -> bool:
        return self.output is not None or self.error is not None

    def cancel(self) -> None:
        if not self.done and self.thread.is_alive():
            self.cancelled = True
            self.go.release()
            self.thread.join()

    # the task's side
    def _main(self) -> None:
        try:
            start = time.perf_counter()
            key, value = _perform(self.driver, self.task)
            self.output = (key, value, (0, 0), time.perf_counter() - start, {})
        except _Cancelled:
            pass
        except BaseException as exc:  # noqa: BLE001 - handed to the coordinator, which raises it
            self.error = exc
        finally:
            self.request = None
            self.back.release()

    def _wait(self, request: tuple) -> None:
        self.request = request
        self.back.release()
        self.go.acquire()
        self.request = None
        if self.cancelled:
            raise _Cancelled

    def cv_trials(self, configs, folds, pruner, seed):
        self._wait(("cv", (configs, folds, seed)))
        return self.scorer.cv_trials(configs, folds, pruner, seed)

    def holdout(self, config, train, test, seed, *, refit_info=None):
        self._wait(("holdout", (config, train, test, seed)))
        return self.scorer.holdout(config, train, test, seed, refit_info=refit_info)


def _lockstep(driver: NestedCV, tasks: list[tuple], n_jobs: int):
    """Every task's output, the selections stepped side by side: each round, every selection still
    searching proposes its next trial(s) (a Bayesian search: one trial, from everything it has seen), and
    the round's fits -- (outer fold x inner fold) for the outer selections, the final selection's apart
    (more steps per epoch) -- train as one stack per shape; then each outer refit, all in one round.

    The searches, seeds and cache keys are those of one selection at a time, and a stacked fit's bytes do
    not depend on its stack mates, so the outputs are byte-identical to the per-task path
    (tests/select/test_lockstep.py); only the stacks are wider. With ``compute.n_jobs`` > 1 a round's stacks
    are cut into that many shares, as :func:`_train_upfront`'s.
    """
    import torch

    torch.set_num_threads(1)
    turns = [_Turn(driver, task) for task in tasks]
    scorer = driver.scorer
    try:
        live = list(turns)
        while live:
            for turn in live:
                turn.step()
                if turn.error is not None:
                    raise turn.error
            live = [t for t in live if not t.done]
            requests = [(t.task[0], t.request) for t in live]
            _prefetch_searches(scorer, [(where, r) for where, (what, r) in requests if what == "cv"], n_jobs)
            refits = [r for _, (what, r) in requests if what == "holdout"]
            if refits:
                scorer.prefetch([], refits)
    finally:
        for turn in turns:
            turn.cancel()
    return [turn.output for turn in turns]


def _cache_dir(compute: ComputeParams) -> str | None:
    """The cache directory; absolute for dask, so every worker opens the same (shared) path."""
    if compute.backend == "dask" and compute.cache_dir is not None:
        return os.path.abspath(compute.cache_dir)
    return compute.cache_dir


def _on_cluster(compute: ComputeParams, driver: NestedCV, tasks: list[tuple], log):
    """The tasks on the Dask cluster at ``compute.scheduler``; connects (and checks) before any work."""
    from dlrig.select.cluster import connect, run_jobs

    with connect(compute, log) as client:
        yield from run_jobs(client, _run_task, driver, tasks)


def _log_task(log, key: tuple, value: Any, start: float) -> None:
    elapsed = time.perf_counter() - start
    if key[0] == "outer":
        log(
            f"  outer fold {key[1]}: {value['outer_score']:.4f} (inner best {value['best_inner_score']:.4f}, "
            f"{value['best_config']}) [{elapsed:.0f}s]"
        )
    else:
        log(
            f"  final selection on all training rows: {value.config} "
            f"(inner {value.inner_score:.4f}) [{elapsed:.0f}s]"
        )
