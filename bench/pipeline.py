"""Time the default pipeline: each stage on its own, and ``dvc repro -f`` as a user runs it.

Run by hand from the repo root after `make setup`:  .venv/bin/python bench/pipeline.py [--repeats 3]
Prints a table and writes bench/results/pipeline.json. Never part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["prepare", "validate", "split", "train", "evaluate", "report"]


def timed(cmd: list[str]) -> float:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    per_stage = {
        s: [timed([sys.executable, f"stages/{s}.py"]) for _ in range(args.repeats)] for s in STAGES
    }
    repro = [timed(["dvc", "repro", "-f"]) for _ in range(args.repeats)]
    noop = [timed(["dvc", "repro"]) for _ in range(args.repeats)]
    import_torch = [timed([sys.executable, "-c", "import torch"]) for _ in range(args.repeats)]

    rows = {**{f"stage {s}": v for s, v in per_stage.items()},
            "dvc repro -f (all stages)": repro, "dvc repro (nothing changed)": noop,
            "python -c 'import torch'": import_torch}
    print(f"{'what':34s} {'median s':>9s} {'min s':>7s}")
    for name, values in rows.items():
        print(f"{name:34s} {statistics.median(values):9.2f} {min(values):7.2f}")
    metrics = json.loads((ROOT / "reports/metrics.json").read_text())["test"]
    print(f"test accuracy {metrics['accuracy']:.4f}")
    out = ROOT / "bench/results/pipeline.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "repeats": args.repeats,
        "seconds": {k: {"median": statistics.median(v), "min": min(v)} for k, v in rows.items()},
        "test_accuracy": metrics["accuracy"],
    }, indent=2) + "\n")


if __name__ == "__main__":
    main()
