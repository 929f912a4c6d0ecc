"""Stage start-up: how long each stage takes to reach ``--help`` and which heavy packages it imported.

Run by hand from the repo root:  .venv/bin/python bench/startup.py [--repeats 3] [--stages train,report]
Prints a table and writes bench/results/startup.json. Never part of the test suite.

``python -X importtime stages/<stage>.py --help`` imports everything the stage script imports at module level
and exits before any work: its wall time is the start-up a user waits for before the stage does anything
(the stage may import more later, inside the functions that need it). The heavy packages listed are the
ones a stage should import only when it uses them (torchvision: image sources and augmentation;
great_expectations: validate; sklearn, scipy, matplotlib, optuna, pandas, dvclive: where used).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["prepare", "validate", "split", "labels", "train", "evaluate", "compare", "detect", "report"]
HEAVY = ["torch", "torchvision", "great_expectations", "sklearn", "scipy", "matplotlib", "optuna", "pandas",
         "dvclive", "jinja2", "pydantic"]


def startup(stage: str) -> tuple[float, dict[str, float]]:
    """Wall seconds of ``stages/<stage>.py --help`` and the heavy packages it imported (cumulative s)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-X", "importtime", f"stages/{stage}.py", "--help"], cwd=ROOT,
                          env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:  # a stage that does not start (a tree being edited): say so, time nothing
        print(f"{stage}: exit {done.returncode}: {done.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return math.nan, {}
    heavy: dict[str, float] = {}
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = line.split("|")
        name = name.strip()
        if name in HEAVY:
            heavy[name] = max(heavy.get(name, 0.0), int(cumulative) / 1e6)
    return seconds, heavy


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--out", default="bench/results/startup.json")
    args = ap.parse_args()
    stages = [s for s in args.stages.split(",") if (ROOT / f"stages/{s}.py").is_file()]
    runs: dict[str, list[float]] = {s: [] for s in stages}
    heavy: dict[str, dict[str, float]] = {}
    baseline = []
    for _ in range(args.repeats):  # interleaved: load drift hits every stage alike
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        baseline.append(time.perf_counter() - start)
        for stage in stages:
            seconds, heavy[stage] = startup(stage)
            runs[stage].append(seconds)
    print(f"{'stage':10s} {'median s':>9s} {'min s':>7s}  heavy imports (cumulative import s)")
    for stage in stages:
        names = ", ".join(f"{n} {s:.2f}" for n, s in sorted(heavy[stage].items(), key=lambda kv: -kv[1]))
        print(f"{stage:10s} {statistics.median(runs[stage]):9.2f} {min(runs[stage]):7.2f}  {names}")
    # (nan: the stage did not start; its line on stderr says why)
    print(f"(bare python start-up: {min(baseline):.2f} s; load average {os.getloadavg()[0]:.1f})")
    out = ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "repeats": args.repeats, "load_average_after": os.getloadavg(), "python_start_s": min(baseline),
        "stages": {s: {"median_s": statistics.median(runs[s]), "min_s": min(runs[s]), "heavy": heavy[s]}
                   for s in stages},
    }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
