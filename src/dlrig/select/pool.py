"""Work shared between this process and worker processes, one task at a time (:func:`shared`).

A fresh worker process spends seconds importing torch before its first fit; this process has it loaded and
starts at once. So this process works too, and nobody is handed work ahead of time: the tasks wait in one
queue, a worker is handed the next one from the front each time it finishes one (never more than one
ahead, so nothing is stuck behind a busy or still-starting worker), this process takes them from the back.
A small run then ends in this process before a worker would have paid its start-up, and a large one keeps
every core busy. Where a task runs changes no result: the callers' tasks derive their seeds from their own
keys, and a stacked fit's bits do not depend on its stack mates.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

_WATCHDOG: list[threading.Thread] = []


def exit_with_parent() -> None:
    """In a worker process: exit as soon as the process that started it is gone.

    ``kill -9`` of the stage leaves loky's workers running their task to the end (tens of seconds of CPU
    for nothing). A daemon thread polls the parent's pid; when the worker is re-parented, it exits.
    """
    if _WATCHDOG:
        return
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    _WATCHDOG.append(threading.Thread(target=watch, name="dlrig-exit-with-parent", daemon=True))
    _WATCHDOG[0].start()


def ready() -> bool:
    """Sent to a worker before any task (``shared(..., warm_up=True)``): answers once torch is imported."""
    import torch  # noqa: F401

    return True


def shared(tasks: list, here: Callable[[Any], Any], there: Callable[[Any], Any], executor: Any,
           n_workers: int, *, warm_up: bool = False) -> Iterator[tuple[int, Any]]:
    """Yield ``(index, result)`` for every task, as each finishes: ``there(task)`` in the ``executor``'s
    worker processes (``n_workers`` of them, each handed one task at a time from the front of the queue),
    ``here(task)`` in this process (from the back). A caller that stops early (an error here, or the
    generator closed) hands the workers nothing more.

    ``warm_up`` (for an executor whose workers outlive the call, loky's reusable one: a call that ends
    before they answer does not wait for them): a worker is handed its first task only once it has
    answered :func:`ready` (torch imported), and once this process has no task left it also runs the
    tasks workers still hold, the last handed first, and yields its own result (a task's result must then
    not depend on the process that computes it: a stacked fit's bytes at one torch thread do not; the
    worker's copy is dropped, its work uncounted). Without them a CNN search stacked up front took 4.5 s
    in two processes against 3.3 s in one: a starting worker held its first sub-stack through seconds of
    imports and first-call set-up while this process ran out of work and waited."""
    from concurrent.futures import as_completed

    waiting, lock, futures = deque(enumerate(tasks)), threading.Lock(), {}

    def hand_one(_finished=None) -> None:
        with lock:  # the pop and the entry together: once the queue is empty, `futures` is complete
            if not waiting:
                return
            index, task = waiting.popleft()
            future = executor.submit(there, task)
            futures[future] = index
        future.add_done_callback(hand_one)  # outside the lock: a finished future calls back at once

    try:
        for _ in range(n_workers):
            if warm_up:
                executor.submit(ready).add_done_callback(hand_one)
            else:
                hand_one()
        while True:
            with lock:
                item = waiting.pop() if waiting else None
            if item is None:
                break
            yield item[0], here(item[1])
        with lock:
            handed = dict(futures)
        ours = set()
        if warm_up:  # out of work here while workers still run theirs: run those here too (below)
            for future in sorted(handed, key=handed.get, reverse=True):  # the last handed first
                if not future.done():
                    ours.add(future)
                    yield handed[future], here(tasks[handed[future]])
        for future in as_completed([f for f in handed if f not in ours]):  # a dropped copy is not awaited
            yield handed[future], future.result()
    finally:
        with lock:
            waiting.clear()


__all__ = ["exit_with_parent", "shared"]
