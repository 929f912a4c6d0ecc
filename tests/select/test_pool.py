"""select.pool.shared: this process and workers take tasks from one queue; with warm_up, a worker that is
still starting holds nothing up -- this process runs what the workers hold and the call ends without them."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from dlrig.select.pool import shared


def test_every_task_once_here_from_the_back_there_from_the_front():
    tasks = list(range(6))
    release = threading.Event()

    def there(t):
        release.wait(10)
        return ("there", t)

    def here(t):
        if t == 3:
            release.set()  # the worker finishes its task while this process still has work
        return ("here", t)

    with ThreadPoolExecutor(1) as pool:
        out = dict(shared(tasks, here, there, pool, 1))
    assert sorted(out) == tasks and all(value[1] == index for index, value in out.items())
    assert out[0] == ("there", 0)  # the worker's first task is the front of the queue
    assert out[5] == ("here", 5)  # this process starts from the back


def test_a_starting_worker_holds_nothing_up():
    """The worker is slow to answer ready(): this process runs every task, those the worker was handed
    included, and the call ends without waiting for the worker's copies (dropped)."""
    tasks = list(range(4))
    gate, handed = threading.Event(), []

    def there(t):
        handed.append(t)
        gate.wait(10)
        return ("there", t)

    def here(t):
        if t == 2:  # by now the worker has answered ready() and holds task 0
            for _ in range(200):
                if handed:
                    break
                threading.Event().wait(0.01)
        return ("here", t)

    with ThreadPoolExecutor(1) as pool:
        out = dict(shared(tasks, here, there, pool, 1, warm_up=True))
        finished_while_worker_blocked = not gate.is_set()
        gate.set()
    assert finished_while_worker_blocked
    assert handed == [0]  # handed one task at a time, and only after ready()
    assert out == {t: ("here", t) for t in tasks}  # its copy of task 0 was run here and the worker's dropped
