"""The door every stage script goes through: its outputs as one set, and its errors as one line.

A :class:`~dlrig.errors.UserError` is printed as one line (``error: ...``) with exit status 2 and no
traceback; Ctrl-C prints one line and exits 130; any other exception is a bug and keeps its traceback. In
every case the stage's outputs are either all renamed into place (success) or none are (see
:func:`dlrig.io.output_set`). Kept apart from :mod:`dlrig.cli` so a stage depends on this small module,
not on every command's imports.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from dlrig.errors import UserError
from dlrig.io import output_set


def run_stage(main: Callable[[Sequence[str] | None], None], argv: Sequence[str] | None = None) -> None:
    """Call a stage's ``main`` and turn user errors into one clean line and exit status 2."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    start = time.perf_counter()
    try:
        with output_set():  # all of the stage's outputs appear together, or none of them
            main(argv)
        record_cost(start)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: no output was changed by the unfinished step; rerun to resume "
              "(finished fits are cached)", file=sys.stderr)
        sys.exit(130)


RUN_DIR = "reports/run"  # what a run did besides its outputs: not DVC outputs (they vary run to run)
FLOPS_FORMULA = ("3 x forward FLOPs of one sample (matrix products and convolutions: dlrig.train.work) x "
                 "gradient rows x epochs, summed over the fits this process and its workers trained; "
                 "cached fits are not counted")


def record_cost(start: float, run_dir: str = RUN_DIR) -> dict | None:
    """Add this stage's cost to ``<run_dir>/<stage>.json``: wall seconds (main, and the whole process with
    its start-up), CPU seconds, peak memory, fits trained and their estimated FLOPs (dlrig.train.work).

    The stage is the script's name (stages/train.py -> train, stages/studies/x.py -> studies/x); a stage
    with a ``--run-info`` option (train) records into that file. Kept beside what the stage itself wrote
    there this run; a record left by an earlier run is replaced.
    """
    script = Path(sys.argv[0])
    if script.suffix != ".py" or script.parent.name not in ("stages", "studies"):
        return None  # not a stage script (a test calling run_stage): nothing to record
    name = f"studies/{script.stem}" if script.parent.name == "studies" else script.stem
    seconds = time.perf_counter() - start
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    work = sys.modules.get("dlrig.train.work")  # imported only by stages that train
    tally = dict(work.TALLY) if work is not None else {"fits": 0, "flops": 0.0, "samples": 0}
    cost = {
        "seconds": round(seconds, 3),
        "process_seconds": _round(_process_age()),
        "cpu_seconds": round(me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime, 3),
        # ru_maxrss is KiB on Linux: the largest of this process and its (finished) children
        "peak_memory_mb": round(max(me.ru_maxrss, kids.ru_maxrss) / 1024, 1),
        "fits": int(tally["fits"]),
        "flops": float(tally["flops"]),
        "samples": int(tally["samples"]),
        "flops_formula": FLOPS_FORMULA,
        "cpus": os.cpu_count(),
    }
    path = _run_info_option() or Path(run_dir) / f"{name}.json"
    record: dict = {}
    try:
        if path.stat().st_mtime >= time.time() - seconds - 1:  # the stage's own run info, written just now
            record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = {}
    record["cost"] = cost
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return cost


def _run_info_option() -> Path | None:
    """The stage's own ``--run-info`` file when it has that option (train): the cost joins it there."""
    args = sys.argv[1:]
    for i, arg in enumerate(args):
        if arg == "--run-info" and i + 1 < len(args):
            return Path(args[i + 1])
        if arg.startswith("--run-info="):
            return Path(arg.split("=", 1)[1])
    return None


def _process_age() -> float | None:
    """Seconds since this process started (Linux /proc; None elsewhere): start-up and imports included."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")
        return float(Path("/proc/uptime").read_text().split()[0]) - started
    except (OSError, ValueError, IndexError):
        return None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
