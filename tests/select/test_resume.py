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
from tests.stages.test_stages import TINY, stage

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
    (tmp / "params.yaml").write_text(yaml.safe_dump(params))
    p, raw, meta = str(tmp / "params.yaml"), str(tmp / "raw.npz"), str(tmp / "meta.json")
    stage("prepare")(["--params", p, "--out", raw, "--meta", meta])
    stage("validate")(["--params", p, "--data", raw, "--meta", meta, "--out", str(tmp / "v.json"),
                       "--summary", str(tmp / "v.md")])
    stage("split")(["--params", p, "--data", raw, "--meta", meta, "--validation", str(tmp / "v.json"),
                    "--train", str(tmp / "train.npz"), "--test", str(tmp / "test.npz"),
                    "--report", str(tmp / "split.json")])
    return [sys.executable, str(ROOT / "stages/train.py"), "--params", p, "--train", str(tmp / "train.npz"),
            "--meta", meta, "--model", str(tmp / "model.pt"), "--logdir", str(tmp / "train"),
            "--cvdir", str(tmp / "cv")]


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

    subprocess.run(cmd, check=True, capture_output=True)
    cache = json.loads((tmp_path / "killed/cv/cache.json").read_text())
    assert cache["hits"] >= done_before  # finished folds were read back, not recomputed
    assert cache["misses"] == 7 - done_before

    fresh = prepare(tmp_path / "fresh")
    subprocess.run(fresh, check=True, capture_output=True)
    assert (tmp_path / "killed/cv/metrics.json").read_bytes() == (tmp_path / "fresh/cv/metrics.json").read_bytes()
    folds = [json.loads((tmp_path / run / "cv/folds.json").read_text()) for run in ("killed", "fresh")]
    for record in folds[0] + folds[1]:
        record.pop("seconds")  # wall-clock time is the one thing allowed to differ
    assert folds[0] == folds[1]
    a = json.loads((tmp_path / "killed/train/history.json").read_text())["history"]
    b = json.loads((tmp_path / "fresh/train/history.json").read_text())["history"]
    assert a == b
