"""Progress of long stages: fits done out of fits planned, with an ETA, as a tqdm bar on stderr.

The unit is the fit (one model trained on one fold), the thing users wait on; the epochs of running fits
move the bar between whole fits, so a stack of 40 fits trained together does not sit at 0 for a minute.

The bar shows when stderr is a terminal. It stays off when stderr is not one (logs, ``dvc repro > log``),
when ``CI`` is set, with ``DLRIG_QUIET=1`` or a stage's ``--quiet``; ``DLRIG_PROGRESS=1`` turns it on
anyway. It only draws: it never touches results, seeds or output files (a test checks the outputs are the
same bytes with it on and off), and with it off no counting code runs at all.

Worker processes (loky, one per outer fold) count into their parent's bar through a *tally file*: a
:class:`Tally` is a path, it pickles with the work, and counting appends one byte per tick to the file
(``O_APPEND``, never created by a worker). The parent's bar polls the file's size. No server process, so
nothing is left running when the stage is killed; a worker that cannot reach the file (another machine)
simply does not count.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

TICKS = 100  # one fit in tally ticks: a fit's epochs advance the bar by a share of TICKS
_FLUSH_EVERY = 0.25  # seconds between appends to the tally file (the bar polls at the same pace)


def show_progress(quiet: bool = False, stream: TextIO | None = None) -> bool:
    """Whether a bar should be drawn: never with ``quiet`` / ``DLRIG_QUIET``, always with
    ``DLRIG_PROGRESS``, never under ``CI``, else when ``stream`` (stderr) is a terminal."""
    if quiet or _flag("DLRIG_QUIET"):
        return False
    if _flag("DLRIG_PROGRESS"):
        return True
    if _flag("CI"):
        return False
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


class Tally:
    """Where finished work is counted. Picklable (just the path), so worker processes count into the
    parent's bar; ``Tally(None)`` (:data:`NO_PROGRESS`) counts nothing and costs nothing."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path
        self._pending = 0
        self._last = 0.0

    def __bool__(self) -> bool:
        return self.path is not None

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path}  # ticks not yet flushed stay with the process that counted them

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"])

    def advance(self, ticks: int) -> None:
        """Count ``ticks`` (``TICKS`` per fit); appended to the file at most every quarter second."""
        if self.path is None or ticks <= 0:
            return
        self._pending += int(ticks)
        if time.monotonic() - self._last >= _FLUSH_EVERY:
            self.flush()

    def fits(self, n: int) -> None:
        """Count ``n`` whole fits at once (cache hits, scikit-learn baselines) and flush."""
        self.advance(n * TICKS)
        self.flush()

    def flush(self) -> None:
        if self.path is None or not self._pending:
            return
        self._last = time.monotonic()
        try:  # no O_CREAT: a worker whose parent's bar has closed (or is elsewhere) writes nothing
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        except OSError:
            self._pending = 0
            return
        try:
            os.write(fd, b"." * self._pending)
        except OSError:
            pass
        finally:
            os.close(fd)
        self._pending = 0

    def jobs(self, epochs: Sequence[int]) -> JobCounter | None:
        """A counter for fits with these epoch budgets, or None when nothing is counted (so callers pass
        no epoch callback at all to the trainer, exactly as without a bar)."""
        return JobCounter(self, epochs) if self.path is not None else None


NO_PROGRESS = Tally(None)


class JobCounter:
    """Ticks for a batch of fits: each epoch of fit ``i`` moves it to ``epoch / epochs[i]`` of a fit;
    :meth:`done` tops every fit up to a whole one (early stopping and pruning end fits before their
    budget). A fit that is trained again (a failed stack retried one fit at a time) never counts twice."""

    def __init__(self, tally: Tally, epochs: Sequence[int]) -> None:
        self.tally = tally
        self.epochs = [max(int(e), 1) for e in epochs]
        self.sent = [0] * len(self.epochs)

    def on_epoch(self, i: int, record: dict[str, Any]) -> None:
        """``fit_many``'s ``on_epoch(i, record)``; returns None (False would prune the fit)."""
        target = min(TICKS * int(record.get("epoch", 0)) // self.epochs[i], TICKS - 1)
        if target > self.sent[i]:
            self.tally.advance(target - self.sent[i])
            self.sent[i] = target

    def callback(self, i: int) -> Callable[[dict[str, Any]], None]:
        """``fit``'s ``on_epoch(record)`` for fit ``i``."""
        return lambda record: self.on_epoch(i, record)

    def done(self) -> None:
        self.tally.advance(sum(TICKS - s for s in self.sent))
        self.sent = [TICKS] * len(self.sent)
        self.tally.flush()


class Progress:
    """A bar for ``total`` fits (None: unknown, no ETA) while the ``with`` block runs.

    ``tally`` is what the work counts into (hand it to scorers and worker processes); ``write`` prints a
    log line above the bar. With the bar off, ``tally`` is :data:`NO_PROGRESS` and ``write`` is ``print``.
    On a clean exit the bar ends at 100%: ``total`` is an upper bound when a search may stop early.
    """

    def __init__(self, total: int | None, desc: str, *, unit: str = "fit", quiet: bool = False,
                 enabled: bool | None = None, interval: float = _FLUSH_EVERY) -> None:
        self.total, self.desc, self.unit, self.interval = total, desc, unit, interval
        self.enabled = show_progress(quiet) if enabled is None else enabled
        self.tally = NO_PROGRESS
        self.bar: Any = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._seen = 0

    def __enter__(self) -> Progress:
        if not self.enabled:
            return self
        from tqdm import tqdm

        fd, path = tempfile.mkstemp(prefix="dlrig-progress-", suffix=".tally")
        os.close(fd)
        self.tally = Tally(path)
        known = self.total is not None
        fmt = ("{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total_fmt} {unit}s [{elapsed}<{remaining}, "
               "{rate_fmt}]" if known else "{desc}: {n:.0f} {unit}s [{elapsed}, {rate_fmt}]")
        # smoothing=0: the ETA from the average rate so far; stacks finish in bursts, a moving rate jumps.
        self.bar = tqdm(total=self.total, desc=self.desc, unit=self.unit, file=sys.stderr, smoothing=0,
                        dynamic_ncols=True, bar_format=fmt, leave=True)
        self._thread = threading.Thread(target=self._watch, name="dlrig-progress", daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            self._poll()

    def _poll(self) -> None:
        try:
            size = os.path.getsize(self.tally.path)
        except OSError:
            return
        with self._lock:
            if size > self._seen and self.bar is not None:
                self.bar.update((size - self._seen) / TICKS)
                self._seen = size

    def update(self, fits: int = 1) -> None:
        """Count whole fits done in this process."""
        self.tally.fits(fits)

    def write(self, line: str) -> None:
        if self.bar is None:
            print(line)
        else:
            self.bar.write(line, file=sys.stdout)

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.bar is None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.tally.flush()
        self._poll()
        with self._lock:
            self.bar.n = self._seen / TICKS  # exact, whatever the float sum of the updates came to
            if exc_type is None and self.bar.total is not None:
                self.bar.total = self._seen // TICKS  # a search that stopped early, or a low estimate
            self.bar.refresh()
            self.bar.close()
            self.bar = None
        try:
            os.unlink(self.tally.path)
        except OSError:
            pass
        self.tally = NO_PROGRESS
