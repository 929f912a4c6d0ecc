"""Run independent jobs on an existing Dask cluster (``compute.backend: dask``).

The client connects to ``compute.scheduler`` before any training and refuses, in one line, a scheduler that
does not answer, a cluster without workers, and a worker that runs another dlrig (version or code
fingerprint). Jobs are submitted with ``client.submit``; a worker that dies mid-job is replaced by the
scheduler, which reruns the job elsewhere (and the shared result cache keeps the fits it had finished).
Results are keyed by the job, never by the order they finish in, so a cluster run equals a local one.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from dlrig.errors import UserError
from dlrig.params import ComputeParams


def worker_identity() -> tuple[str, str]:
    """What a worker runs: the dlrig version and the fingerprint of its code and numeric libraries."""
    import dlrig
    from dlrig.select.scorers import code_fingerprint

    return dlrig.__version__, code_fingerprint()


@contextlib.contextmanager
def connect(compute: ComputeParams, log: Callable[[str], None] = print) -> Iterator[Any]:
    """A ``distributed.Client`` on ``compute.scheduler``, checked (workers there, same dlrig), then closed."""
    from distributed import Client

    where = f"params.yaml: compute.scheduler {compute.scheduler}"
    quiet = logging.getLogger("distributed")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # the failed-connection tracebacks: our one line says it all
    try:
        client = Client(compute.scheduler, timeout=compute.connect_timeout)
    except (OSError, TimeoutError) as exc:
        raise UserError(f"{where}: no scheduler answered within {compute.connect_timeout} s") from exc
    finally:
        quiet.setLevel(level)
    try:
        try:
            client.wait_for_workers(1, timeout=compute.connect_timeout)
        except (OSError, TimeoutError) as exc:
            raise UserError(f"{where}: no worker joined within {compute.connect_timeout} s "
                            f"(start one with `dask worker {compute.scheduler}`)") from exc
        check_workers(client, where)
        log(f"  dask: {len(client.scheduler_info(n_workers=-1)['workers'])} workers at {compute.scheduler}")
        yield client
    finally:
        client.close()


def check_workers(client: Any, where: str) -> None:
    """Refuse the run if any worker cannot import dlrig or runs other dlrig code than this process."""
    mine = worker_identity()
    answers = client.run(worker_identity, on_error="return")
    for worker, theirs in sorted(answers.items()):
        if isinstance(theirs, BaseException):
            raise UserError(f"{where}: worker {worker} cannot run dlrig ({type(theirs).__name__}: {theirs}); "
                            f"start workers from the same environment (pip install -r requirements.lock, "
                            f"then pip install -e .)")
        if tuple(theirs) != mine:
            raise UserError(f"{where}: worker {worker} runs dlrig {theirs[0]} (code {theirs[1][:12]}), "
                            f"this run dlrig {mine[0]} (code {mine[1][:12]}); install the same version there")


def run_jobs(client: Any, fn: Callable[..., Any], shared: Any, jobs: Iterable[Any]) -> Iterator[Any]:
    """``fn(shared, job)`` for every job on the cluster; yields results as they finish (any order).

    ``shared`` (the driver and its data) is sent to every worker once. The scheduler reruns the job of a
    worker that dies (up to its ``allowed-failures``); a job that raises re-raises here.
    """
    from distributed import KilledWorker, as_completed

    shared_future = client.scatter(shared, broadcast=True, hash=False)
    futures = [client.submit(fn, shared_future, job, pure=False) for job in jobs]
    try:
        for future in as_completed(futures):
            try:
                yield future.result()
            except KilledWorker as exc:
                # Every worker that took this job died (out of memory, killed): retrying elsewhere is over.
                last = getattr(exc.last_worker, "address", exc.last_worker)
                raise UserError(f"a Dask job ({exc.task}) killed every worker that ran it ({last} last): "
                                "check the workers' memory and logs; finished fits are in the cache, so a "
                                "rerun resumes") from None
    finally:
        client.cancel([*futures, shared_future])


def _counted(fn: Callable[..., Any], *job: Any) -> tuple[Any, dict[str, float]]:
    """``fn(*job)`` in another process, with the fits it trained there (the cost record's tally)."""
    from dlrig.train import work

    before = work.snapshot()
    return fn(*job), work.since(before)


def _merged(outputs: list[tuple[Any, dict[str, float]]]) -> list[Any]:
    from dlrig.train import work

    for _, done in outputs:
        work.merge(done)
    return [result for result, _ in outputs]


def map_jobs(compute: ComputeParams, fn: Callable[..., Any], jobs: list[tuple]) -> list[Any]:
    """``[fn(*job) for job in jobs]``, in order, where ``compute`` says: one process, ``compute.n_jobs``
    local processes (loky), or the Dask cluster at ``compute.scheduler``. Each job carries its own seed, so
    the results are the same wherever it runs (the studies' seeds go through here). The fits trained
    elsewhere are added to this process's work tally, so the stage's cost record counts them."""
    if compute.backend == "dask":
        from distributed import KilledWorker

        with connect(compute) as client:
            futures = [client.submit(_counted, fn, *job, pure=False) for job in jobs]
            try:
                return _merged(client.gather(futures))
            except KilledWorker as exc:
                raise UserError(f"a Dask job ({exc.task}) killed every worker that ran it: check the "
                                "workers' memory and logs") from None
            finally:
                client.cancel(futures)
    if compute.n_jobs > 1 and len(jobs) > 1:
        from joblib import Parallel, delayed

        return _merged(Parallel(n_jobs=compute.n_jobs, backend="loky")(delayed(_counted)(fn, *job)
                                                                         for job in jobs))
    return [fn(*job) for job in jobs]
