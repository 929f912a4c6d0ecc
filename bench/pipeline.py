"""Time the default pipeline: each stage as dvc.yaml runs it, and ``dvc repro -f`` as a user runs it.

Run by hand from the repo root after `make setup`:  .venv/bin/python bench/pipeline.py [--repeats 3]
Prints a table and writes bench/results/pipeline.json. Never part of the test suite. The bar (issue 14):
``dvc repro -f`` from scratch in <= 45 s on 2 cores.

Each round runs every stage of dvc.yaml once, in the file's order (each stage's ``cmd``, with this
interpreter's directory first on PATH), then ``dvc repro -f``, ``dvc repro`` (nothing changed) and a bare
``import torch``. Per stage it reports the wall time of the command, and from the stage's own cost record
(reports/run/<stage>.json, written by dlrig.stage.record_cost): the seconds inside ``main`` and the part of
the process before it (interpreter start-up and imports), the fits it trained and its peak memory.
Use ``--stages-only`` to leave dvc out. Each round starts from an empty fit cache (``compute.cache_dir`` is
removed before the stages and again before ``dvc repro -f``), as on a fresh machine: every fit is trained.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "DLRIG_QUIET": "1"}


def timed(cmd: str | list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=env(), check=True, capture_output=True, shell=isinstance(cmd, str))
    return time.perf_counter() - start


def stages() -> dict[str, str]:
    """``{stage: cmd}`` of dvc.yaml, in its order."""
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    return {name: stage["cmd"] for name, stage in spec["stages"].items()}


def clear_fit_cache() -> None:
    """Remove the fit cache, so the next run trains every fit (what ``make run`` on a new machine does)."""
    cache = yaml.safe_load((ROOT / "params.yaml").read_text()).get("compute", {}).get("cache_dir")
    if cache:
        shutil.rmtree(ROOT / cache, ignore_errors=True)


def cost(stage: str) -> dict:
    try:
        return json.loads((ROOT / f"reports/run/{stage}.json").read_text()).get("cost") or {}
    except (OSError, ValueError):
        return {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--stages-only", action="store_true", help="time the stages, not dvc repro")
    args = ap.parse_args()

    cmds = stages()
    rows: dict[str, list[float]] = {f"stage {s}": [] for s in cmds}
    detail: dict[str, list[dict]] = {s: [] for s in cmds}
    if not args.stages_only:
        rows.update({"dvc repro -f (all stages)": [], "dvc repro (nothing changed)": []})
    rows["python -c 'import torch'"] = []
    for _ in range(args.repeats):  # rounds: load drift hits every row alike
        clear_fit_cache()
        for stage, cmd in cmds.items():
            rows[f"stage {stage}"].append(timed(cmd))
            detail[stage].append(cost(stage))
        if not args.stages_only:
            clear_fit_cache()
            rows["dvc repro -f (all stages)"].append(timed(["dvc", "repro", "-f"]))
            rows["dvc repro (nothing changed)"].append(timed(["dvc", "repro"]))
        rows["python -c 'import torch'"].append(timed([sys.executable, "-c", "import torch"]))
    print(f"{'what':34s} {'median s':>9s} {'min s':>7s} {'main s':>7s} {'start-up s':>10s} {'fits':>5s} "
          f"{'peak MB':>8s}")
    for name, values in rows.items():
        c = detail.get(name.removeprefix("stage "), [{}])[-1]
        main_s, process = c.get("seconds"), c.get("process_seconds")
        main_txt = "" if main_s is None else f"{main_s:7.2f}"
        startup = "" if main_s is None or process is None else f"{process - main_s:10.2f}"
        print(f"{name:34s} {statistics.median(values):9.2f} {min(values):7.2f} {main_txt:>7s} {startup:>10s} "
              f"{c.get('fits', ''):>5} {c.get('peak_memory_mb', ''):>8}")
    total = sum(min(v) for k, v in rows.items() if k.startswith("stage "))
    print(f"sum of the stages (best of each): {total:.1f} s; load average {os.getloadavg()[0]:.1f}")
    metrics = json.loads((ROOT / "reports/metrics.json").read_text())["test"]
    print(f"test accuracy {metrics['accuracy']:.4f}")
    out = ROOT / "bench/results/pipeline.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(), "load_average_after": os.getloadavg()},
        "repeats": args.repeats,
        "seconds": {k: {"median": statistics.median(v), "min": min(v)} for k, v in rows.items()},
        "stage_costs": {s: d[-1] if d else {} for s, d in detail.items()},
        "sum_of_stages_min": total,
        "test_accuracy": metrics["accuracy"],
    }, indent=2) + "\n")


if __name__ == "__main__":
    main()
