"""The whole pipeline through DVC, in a temporary git repo, on a shrunken copy of the real params."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def sh(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1", "GX_ANALYTICS_ENABLED": "false"}
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def ran_stages(proc: subprocess.CompletedProcess) -> list[str]:
    return [line.split("'")[1] for line in proc.stdout.splitlines() if line.startswith("Running stage")]


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("dlrig-e2e")
    for name in ("dvc.yaml", ".dvcignore", "pyproject.toml"):
        shutil.copy(ROOT / name, repo / name)
    for name in ("stages", "src", ".dvc", "data/raw/input"):
        shutil.copytree(ROOT / name, repo / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "tmp", "cache"))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    # Shrunken: fewer epochs, folds and baselines; the numbers still have to be real.
    params["train"]["epochs"] = 8
    params["cv"].update(outer_folds=3, inner_folds=2)
    params["search"]["space"] = {"optim.lr": [0.001, 0.003]}
    params["compare"]["baselines"] = {"logistic_regression": {"estimator": "logistic_regression"}}
    params["compare"]["five_by_two"] = False
    params["compute"]["cache_dir"] = ".cache/dlrig"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (repo / ".gitignore").write_text(".venv/\n__pycache__/\n.cache/\n")
    sh("git", "init", "-q", cwd=repo)
    sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A", cwd=repo)
    sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init", cwd=repo)
    return repo


def test_repro_runs_every_stage_and_scores_well(repo):
    proc = sh("dvc", "repro", cwd=repo)
    stages = ran_stages(proc)
    assert sorted(stages) == sorted(["prepare", "validate", "split", "labels", "detect", "train", "evaluate",
                                     "compare", "report"])
    assert stages.index("train") < stages.index("evaluate") < stages.index("report")
    metrics = json.loads((repo / "reports/metrics.json").read_text())["test"]
    assert metrics["n"] == 360 and metrics["accuracy"] > 0.9  # 8 epochs on digits; chance is 0.1
    validation = json.loads((repo / "reports/validation.json").read_text())
    assert validation["success"] is True
    html = (repo / "reports/report.html").read_text()
    assert f"{metrics['accuracy']:.3f}"[:4] in html and "data:image/png;base64," in html
    assert (repo / "models/model.pt").is_file() and (repo / "dvc.lock").is_file()


def test_second_repro_does_nothing(repo):
    proc = sh("dvc", "repro", cwd=repo)
    assert ran_stages(proc) == []


def test_report_param_reruns_only_report(repo):
    text = (repo / "params.yaml").read_text().replace("dpi: 110", "dpi: 90")
    (repo / "params.yaml").write_text(text)
    proc = sh("dvc", "repro", cwd=repo)
    assert ran_stages(proc) == ["report"]


def outputs(repo: Path) -> dict[str, bytes]:
    """Every file the pipeline wrote (reports/run/ holds this run's timings and cache hits: not outputs)."""
    files = [p for d in ("reports", "models", "data/raw", "data/processed") for p in (repo / d).rglob("*")]
    return {str(p.relative_to(repo)): p.read_bytes() for p in sorted(files)
            if p.is_file() and "reports/run" not in str(p)}


def test_forced_rerun_gives_identical_outputs(repo):
    """`dvc repro -f` twice: the same bytes in every output, the model included (DVC sees no change)."""
    before = outputs(repo)
    lock = (repo / "dvc.lock").read_bytes()
    sh("dvc", "repro", "-f", cwd=repo)
    after = outputs(repo)
    assert sorted(after) == sorted(before)
    changed = [name for name in before if before[name] != after[name]]
    assert changed == [], f"outputs that differ between two identical runs: {changed}"
    assert (repo / "dvc.lock").read_bytes() == lock
    assert ran_stages(sh("dvc", "repro", cwd=repo)) == []


def test_metrics_show_and_exp_run_compare(repo):
    shown = json.loads(sh("dvc", "metrics", "show", "--json", cwd=repo).stdout)
    sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A", cwd=repo)
    sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "baseline", cwd=repo)
    assert "reports/metrics.json" in json.dumps(shown)
    baseline_cv = json.loads((repo / "reports/cv/metrics.json").read_text())["cv"]
    # model.hidden is not searched: the fit cache must miss (it once served the baseline's scores).
    sh("dvc", "exp", "run", "-S", "model.hidden=64", cwd=repo)
    run = json.loads((repo / "reports/run/train.json").read_text())
    assert run["cache"]["misses"] > 0 and run["cache"]["hits"] == 0
    assert json.loads((repo / "reports/cv/metrics.json").read_text())["cv"] != baseline_cv
    rows = list(csv.DictReader(io.StringIO(sh("dvc", "exp", "show", "--csv", cwd=repo).stdout)))
    hidden = next(k for k in rows[0] if k.endswith("model.hidden"))
    assert sorted({r[hidden] for r in rows}) == ["128", "64"] and any("test.accuracy" in k for k in rows[0])
    diff = sh("dvc", "metrics", "diff", "--json", cwd=repo).stdout
    assert "reports/metrics.json" in diff
    sh("dvc", "plots", "diff", "--json", cwd=repo)


def test_bad_param_stops_before_any_work(repo):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["optim"]["lr"] = -1
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = sh("dvc", "repro", cwd=repo, check=False)
    assert proc.returncode != 0
    assert "params.yaml: optim.lr must be > 0 (got -1)" in proc.stderr + proc.stdout
