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


# The README's `dvc exp show` line: the headline's main numbers and the params that differ, no dep hashes.
EXP_SHOW = ["--only-changed", "--drop", r".*/|Created|test\.(bal_acc|loss|ece)|cv\.std"]


def sh(*args: str, cwd: Path, check: bool = True, **extra_env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1", "GX_ANALYTICS_ENABLED": "false", **extra_env}
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
    head = sh("git", "rev-parse", "--short=7", "HEAD", cwd=repo).stdout.strip()
    assert f"git <code>{head}</code>" in html.split("</header>")[0]  # the title block names the commit
    assert (repo / "models/model.pt").is_file() and (repo / "dvc.lock").is_file()
    # One row per (search, trial): 2 learning rates in each of the 3 outer folds' searches and the final one.
    rows = list(csv.DictReader(io.StringIO((repo / "reports/cv/trials.csv").read_text())))
    assert [(r["search"], r["param_optim.lr"]) for r in rows] == [
        (search, lr) for search in ("outer-0", "outer-1", "outer-2", "final") for lr in ("0.001", "0.003")]
    assert all(r["state"] == "complete" and r["rank_inner_score"] in ("1", "2") for r in rows)
    assert [r["chosen"] for r in rows].count("true") == 4


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


def widest(text: str) -> int:
    return max(len(line.rstrip()) for line in text.splitlines())


def test_dvc_views_are_lean(repo):
    """`dvc metrics show`: the headline only, in 120 columns. `dvc plots show`: each plot once, titled; the
    offline page draws them all and holds no URL."""
    shown = sh("dvc", "metrics", "show", cwd=repo, COLUMNS="1000").stdout
    assert widest(shown) <= 120, shown
    assert "reports/headline.json" in shown and "train.loss" not in shown and "step" not in shown
    headline = json.loads((repo / "reports/headline.json").read_text())
    assert sorted(headline) == ["cv", "test"] and sum(len(v) for v in headline.values()) == 8
    plots = json.loads(sh("dvc", "plots", "show", "--json", cwd=repo).stdout)["data"]
    assert len(plots) == 7 and all(len(renderers) == 1 for renderers in plots.values())
    assert not any("/" in title for title in plots)  # titled, not named by a file path
    loss = next(v for k, v in plots.items() if k.startswith("Loss per epoch"))[0]["content"]
    assert {row["filename"] for row in loss["data"]["values"]} == {"train/loss.tsv", "val/loss.tsv"}
    out = sh("dlrig", "plots", cwd=repo).stdout
    assert "7 of 7 drawn" in out
    page = (repo / "dvc_plots/offline.html").read_text()
    assert "http" not in page and page.count('src="data:image/png;base64,') == 7
    shutil.rmtree(repo / "dvc_plots")  # a view, not an output: leave the repo as the pipeline left it


def test_metrics_show_and_exp_run_compare(repo):
    shown = json.loads(sh("dvc", "metrics", "show", "--json", cwd=repo).stdout)
    sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A", cwd=repo)
    sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "baseline", cwd=repo)
    assert "reports/headline.json" in json.dumps(shown) and "reports/metrics.json" not in json.dumps(shown)
    baseline_cv = json.loads((repo / "reports/cv/metrics.json").read_text())["cv"]
    # model.hidden is not searched: the fit cache must miss (it once served the baseline's scores).
    sh("dvc", "exp", "run", "-n", "hidden64", "-S", "model.hidden=64", cwd=repo)
    run = json.loads((repo / "reports/run/train.json").read_text())
    assert run["cache"]["misses"] > 0 and run["cache"]["hits"] == 0
    assert json.loads((repo / "reports/cv/metrics.json").read_text())["cv"] != baseline_cv
    title = (repo / "reports/report.html").read_text().split("</header>")[0]
    assert "experiment <strong>hidden64</strong>" in title  # dvc exp run names the run in its environment
    rows = list(csv.DictReader(io.StringIO(sh("dvc", "exp", "show", "--csv", cwd=repo).stdout)))
    hidden = next(k for k in rows[0] if k.endswith("model.hidden"))
    assert sorted({r[hidden] for r in rows}) == ["128", "64"] and any("test.acc" in k for k in rows[0])
    table = sh("dvc", "exp", "show", "--no-pager", *EXP_SHOW, cwd=repo, COLUMNS="1000").stdout
    assert widest(table) <= 120 and "…" not in table, table  # the README's line fits a terminal
    head = table.splitlines()[1]
    assert "model.hidden" in head and "test.acc" in head and "cv.mean" in head and "Created" not in head
    diff = sh("dvc", "metrics", "diff", "--json", cwd=repo).stdout
    assert "reports/headline.json" in diff
    sh("dvc", "plots", "diff", "--json", cwd=repo)


def test_bad_param_stops_before_any_work(repo):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["optim"]["lr"] = -1
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = sh("dvc", "repro", cwd=repo, check=False)
    assert proc.returncode != 0
    assert "params.yaml: optim.lr must be > 0 (got -1)" in proc.stderr + proc.stdout
