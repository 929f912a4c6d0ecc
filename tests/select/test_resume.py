"""Kill `train` mid-run, rerun: finished work is not recomputed and the results match an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from tests.stages.test_stages import TINY, complete, stage

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

PARAMS = {
    **TINY,
    "train": {"epochs": 30, "batch_size": 16, "early_stopping": None},
    "cv": {"depth": 2, "outer_folds": 3, "inner_folds": 2},
    "search": {"strategy": "grid", "space": {"optim.lr": [0.001, 0.01, 0.1]}},
    "compute": {"n_jobs": 1},
}


def prepare(tmp: Path) -> list[str]:
    tmp.mkdir(parents=True)
    params = {**PARAMS, "compute": {**PARAMS["compute"], "cache_dir": str(tmp / "cache")}}
    (tmp / "params.yaml").write_text(yaml.safe_dump(complete(params)))
    p, raw, meta = str(tmp / "params.yaml"), str(tmp / "raw.npz"), str(tmp / "meta.json")
    stage("prepare")(["--params", p, "--out", raw, "--meta", meta])
    stage("validate")(["--params", p, "--data", raw, "--meta", meta, "--out", str(tmp / "v.json"),
                       "--summary", str(tmp / "v.md")])
    stage("split")(["--params", p, "--data", raw, "--meta", meta, "--validation", str(tmp / "v.json"),
                    "--train", str(tmp / "train.npz"), "--test", str(tmp / "test.npz"),
                    "--report", str(tmp / "split.json")])
    return [sys.executable, str(ROOT / "stages/train.py"), "--params", p, "--train", str(tmp / "train.npz"),
            "--meta", meta, "--model", str(tmp / "model.pt"), "--logdir", str(tmp / "train"),
            "--cvdir", str(tmp / "cv"), "--run-info", str(tmp / "run.json")]


def entries(tmp: Path) -> int:
    return len(list((tmp / "cache").rglob("*.json"))) if (tmp / "cache").exists() else 0


def test_killed_train_resumes_with_identical_results(tmp_path):
    cmd = prepare(tmp_path / "killed")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while entries(tmp_path / "killed") < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = entries(tmp_path / "killed")
    assert 3 <= done_before < 7, "the kill should land mid-run (3 outer folds x 2 entries + final)"
    assert not (tmp_path / "killed/model.pt").exists()
    # The stage's outputs appear together or not at all: killed mid-selection, none of them exists (a
    # fresh reports/cv/ beside a stale model was the bug), and no temp file is left where they go.
    assert not (tmp_path / "killed/cv").exists() or not any((tmp_path / "killed/cv").glob("*.json"))

    subprocess.run(cmd, check=True, capture_output=True)
    cache = json.loads((tmp_path / "killed/run.json").read_text())["cache"]
    assert cache["hits"] >= done_before  # finished folds were read back, not recomputed
    assert cache["misses"] == 7 - done_before

    fresh = prepare(tmp_path / "fresh")
    subprocess.run(fresh, check=True, capture_output=True)
    assert (tmp_path / "killed/cv/metrics.json").read_bytes() == (tmp_path / "fresh/cv/metrics.json").read_bytes()
    # No wall-clock time in the records: the resumed run's fold records are byte-identical.
    assert (tmp_path / "killed/cv/folds.json").read_bytes() == (tmp_path / "fresh/cv/folds.json").read_bytes()
    a = json.loads((tmp_path / "killed/train/history.json").read_text())["history"]
    b = json.loads((tmp_path / "fresh/train/history.json").read_text())["history"]
    assert a == b


def test_workers_die_with_a_killed_train(tmp_path):
    """kill -9 of `train` (n_jobs 3: two loky workers beside the stage's own process) once its workers are
    busy: every process it started (the loky workers and their resource trackers) is gone within seconds,
    not after finishing a fold. Without the watchdog all four were still running 15 s later."""
    import psutil

    cmd = prepare(tmp_path / "run")
    params = yaml.safe_load((tmp_path / "run/params.yaml").read_text())
    params["compute"]["n_jobs"] = 3
    params["train"]["epochs"] = 400  # a fold lasts far longer than the test waits
    (tmp_path / "run/params.yaml").write_text(yaml.safe_dump(params))
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parent = psutil.Process(proc.pid)
    deadline = time.monotonic() + 120
    workers: list = []
    while time.monotonic() < deadline and proc.poll() is None:
        workers = [p for p in parent.children(recursive=True) if "LokyProcess" in " ".join(p.cmdline())]
        if len(workers) == 2 and all(p.cpu_times().user > 3 for p in workers):  # past imports, training
            break
        time.sleep(0.2)
    started = parent.children(recursive=True)
    assert proc.poll() is None and len(workers) == 2, "train should be busy in two worker processes"
    proc.kill()
    proc.wait()
    _, alive = psutil.wait_procs(started, timeout=10)
    for p in alive:  # don't leave them burning CPU for the rest of the suite
        p.kill()
    assert not alive, f"still running 10 s after their parent was killed: {[p.cmdline()[-2:] for p in alive]}"
