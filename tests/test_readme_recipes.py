"""Every command recipe in README.md runs as written, on a shrunken copy of the real params.

The recipes are read from README.md at test time (tests/readme_recipes.py): the ```bash blocks line by line
and the inline ones (`dvc ...`, `dlrig ...`, the `-S ...` fragments of "Bring your own data"). Each runs
with its own `-S` flags in a temporary git + DVC repo, made like tests/test_pipeline_e2e.py makes its own.
Two repos run side by side, one per core: "digits" (the default data: `dvc repro`, the experiments,
queries, compare, the study) and "data" (your own files: csv, image folder, MNIST IDX, synthetic, and the
queue example). Commands that cannot run here are on an explicit skip list; a recipe no rule knows fails.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.readme_recipes import Recipe, classify, extract
from tests.small import STUDIES_SMALL

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RECIPES = classify(extract(README.read_text()))
TIMEOUT = 600  # seconds, per command and per wait


def shrink(params: dict) -> dict:
    """The real params, shrunken: the recipes' own keys still apply on top. Numbers must stay real."""
    params["train"]["epochs"] = 3
    params["cv"].update(outer_folds=2, inner_folds=2)
    params["search"]["space"] = {"optim.lr": [0.01]}
    params["compare"]["baselines"] = {"logistic_regression": {"estimator": "logistic_regression"}}
    params["compare"]["five_by_two"] = False
    params["compute"].update(n_jobs=1, cache_dir=".cache/dlrig")  # the two repos run on one core each
    params["studies"]["labels"].update(noise_rates=[0.0, 0.4], ratios=[1.0, 10.0], folds=2)
    for name, small in STUDIES_SMALL.items():
        params["studies"][name].update(small)
    return params




# ------------------------------------------------------------------------------------------ a repo
def env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "DVC_NO_ANALYTICS": "1", "GX_ANALYTICS_ENABLED": "false",
            "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@t"}


@dataclass
class Result:
    rc: int
    output: str
    facts: dict = field(default_factory=dict)  # what the checks read: metrics, labels report, ...
    seconds: float = 0.0

    def tail(self, n: int = 4000) -> str:
        return self.output[-n:]


def run(command: str, cwd: Path) -> Result:
    """A command as the README writes it, through bash, with .venv/bin first on PATH."""
    try:
        proc = subprocess.run(["bash", "-c", command], cwd=cwd, env=env(), capture_output=True, text=True,
                              timeout=TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        return Result(124, f"timed out after {TIMEOUT} s: {command}\n{exc.stdout or ''}{exc.stderr or ''}")
    return Result(proc.returncode, f"$ {command}\n{proc.stdout}{proc.stderr}")


def make_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    for name in ("dvc.yaml", ".dvcignore", "pyproject.toml", "thresholds.yaml"):
        shutil.copy(ROOT / name, path / name)
    for name in ("stages", "src", ".dvc", "data/raw/input", "studies"):
        shutil.copytree(ROOT / name, path / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "tmp", "cache", "config.local"))
    params = shrink(yaml.safe_load((ROOT / "params.yaml").read_text()))
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (path / ".gitignore").write_text(".venv/\n__pycache__/\n.cache/\n")
    for command in ("git init -q", "git add -A", "git commit -qm init"):
        result = run(command, path)
        assert result.rc == 0, result.output
    return path


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


# ------------------------------------------------------------------------------- your own data
def make_csv(folder: Path, label_column: str) -> None:
    """Three overlapping Gaussian blobs in 6-d, 60 rows each, text labels (learnable, not perfectly)."""
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 1, size=(3, 6))
    rows = ["f0,f1,f2,f3,f4,f5," + label_column]
    for k, name in enumerate(["ant", "bee", "cat"]):
        for x in centers[k] + rng.normal(0, 1, size=(60, 6)):
            rows.append(",".join(f"{v:.4f}" for v in x) + f",{name}")
    (folder / "table.csv").write_text("\n".join(rows) + "\n")


def make_imagefolder(folder: Path) -> None:
    """Three classes of 16x16 grayscale PNGs, 30 each: a bright band whose row depends on the class."""
    from PIL import Image

    rng = np.random.default_rng(1)
    for k, name in enumerate(["bands_top", "bands_middle", "bands_bottom"]):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(30):
            image = rng.integers(0, 60, size=(16, 16))
            image[5 * k: 5 * k + 5] += 180
            Image.fromarray(image.astype(np.uint8), mode="L").save(folder / name / f"{i:03d}.png")


def _idx(magic: int, array: np.ndarray) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def make_mnist(folder: Path) -> None:
    """MNIST-format IDX files, 28x28, all ten digits: the train pair gzipped, the t10k pair plain."""
    rng = np.random.default_rng(2)
    for part, per_class, opener in (("train", 24, gzip.open), ("t10k", 6, open)):
        labels = np.repeat(np.arange(10), per_class)
        images = rng.integers(0, 50, size=(len(labels), 28, 28))
        for i, k in enumerate(labels):  # class k: a bright 6x6 square at its own place
            r, c = 3 + 12 * (k // 5), 1 + 5 * (k % 5)
            images[i, r: r + 6, c: c + 6] += 200
        suffix = ".gz" if opener is gzip.open else ""
        with opener(folder / f"{part}-images-idx3-ubyte{suffix}", "wb") as fh:
            fh.write(_idx(2051, images))
        with opener(folder / f"{part}-labels-idx1-ubyte{suffix}", "wb") as fh:
            fh.write(_idx(2049, labels))


def make_data(repo: Path, recipe: Recipe) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    folder = repo / recipe.overrides.get("data.path", params["data"]["path"])
    folder.mkdir(parents=True, exist_ok=True)
    if recipe.source == "csv":
        make_csv(folder, recipe.overrides.get("data.csv.label_column", params["data"]["csv"]["label_column"]))
    elif recipe.source == "imagefolder":
        make_imagefolder(folder)
    elif recipe.source == "mnist":
        make_mnist(folder)


# ------------------------------------------------------------------------------------- the lanes
def run_experiment(repo: Path, recipe: Recipe) -> Result:
    """Start from the last commit's params (the README's advice), make the data it needs, run it."""
    reset = run("git checkout params.yaml", repo)
    if reset.rc != 0:
        return reset
    make_data(repo, recipe)
    result = run(recipe.command, repo)
    result.facts = {"metrics": read_json(repo / "reports/metrics.json"),
                    "labels": read_json(repo / "reports/labels.json"), "reset": reset}
    return result


def wait_for_queue(repo: Path, start: Result) -> Result:
    """`dvc queue start` returns at once; wait until nothing is queued or running."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        status = run("dvc queue status", repo)
        if not re.search(r"\b(Queued|Running)\b", status.output) or time.monotonic() > deadline:
            break
        time.sleep(3)
    # "<task> <name> <created> <status>" rows; the header and the worker line do not match
    rows = re.findall(r"^(\w+)\s+\S+\s+.*?\s(Success|Failed|Queued|Running)\s*$", status.output, re.M)
    logs = "".join(run(f"dvc queue logs {task}", repo).output for task, state in rows if state != "Success")
    shown = run("dvc exp show --csv", repo)  # the queued runs, then their reports/metrics.json (git commits)
    queued = [row["rev"] for row in csv.DictReader(io.StringIO(shown.output.split("\n", 1)[1]))
              if row.get("Executor", "").lower() == "dvc-task" and row.get("State") == "Success"]
    metrics = [json.loads(subprocess.run(["git", "show", f"{rev}:reports/metrics.json"], cwd=repo, text=True,
                                         capture_output=True, check=True).stdout) for rev in queued]
    return Result(start.rc, f"{start.output}\n{status.output}\n{logs}\n{shown.output}",
                  {"tasks": [s for _, s in rows], "metrics": metrics})


class Lanes:
    """Two repos, each with its recipes in order, on two threads; each test waits for its own result."""

    def __init__(self, base: Path, wanted: set[str]) -> None:
        self.base = base
        self.results: dict[str, Result] = {}
        self.done: dict[str, threading.Event] = {}
        self.repos: dict[str, Path] = {}
        plans = {"digits": self._digits(wanted), "data": self._data(wanted)}
        self.threads = [threading.Thread(target=self._work, args=(lane, steps), daemon=True)
                        for lane, steps in plans.items() if steps]
        for thread in self.threads:
            thread.start()

    def result(self, key: str) -> Result:
        if key not in self.done:
            pytest.fail(f"{key!r}: not scheduled by the lanes (a bug in this test)")
        assert self.done[key].wait(TIMEOUT * 3), f"{key!r}: no result in time"
        return self.results[key]

    def _plan(self, steps: list, key: str, action: Callable[[Path], Result]) -> None:
        self.done.setdefault(key, threading.Event())
        steps.append((key, action))

    def _work(self, lane: str, steps: list) -> None:
        try:
            repo = self.repos[lane] = make_repo(self.base / lane)
        except Exception:
            failed = Result(-1, traceback.format_exc())
            for key, _ in steps:
                self.results[key] = failed
                self.done[key].set()
            return
        for key, action in steps:
            start = time.monotonic()
            try:
                result = action(repo)
            except Exception:
                result = Result(-1, traceback.format_exc())
            result.seconds = time.monotonic() - start
            self.results.setdefault(key, result)
            self.done[key].set()

    def _digits(self, wanted: set[str]) -> list:
        by_kind = {kind: [r for r in RECIPES if r.kind == kind and r.lane == "digits"]
                   for kind in ("exp", "query", "compare", "studies")}
        names = {r.name: r for r in by_kind["exp"] if r.name}
        needed = set(wanted)
        for r in by_kind["compare"]:
            if r.command in wanted:
                m = re.fullmatch(r"dlrig compare\s+(\S+)\s+(\S+).*", r.command)
                needed |= {names[n].command for n in m.groups() if n in names}
        if "git checkout params.yaml" in wanted and by_kind["exp"]:
            needed.add(by_kind["exp"][0].command)  # the reset runs before every experiment
        if not needed & ({r.command for r in RECIPES if r.lane == "digits"} | {"troubleshooting"}):
            return []
        steps: list = []

        def baseline(repo: Path) -> Result:
            result = run("dvc repro", repo)
            commit = run("git add -A && git commit -qm baseline", repo)
            result.facts = {"metrics": read_json(repo / "reports/metrics.json")}
            return result if commit.rc == 0 else commit

        self._plan(steps, "dvc repro", baseline)
        for r in [q for q in by_kind["query"] if q.note == "before"]:
            if r.command in needed:
                self._plan(steps, r.command, lambda repo, r=r: run(r.command, repo))
        for r in by_kind["exp"]:
            if r.command in needed:
                self._plan(steps, r.command, lambda repo, r=r: run_experiment(repo, r))
        for r in by_kind["compare"] + [q for q in by_kind["query"] if q.note == "after"] + by_kind["studies"]:
            if r.command in needed:
                self._plan(steps, r.command, lambda repo, r=r: run(r.command, repo))
        if "troubleshooting" in needed:
            self._plan(steps, "troubleshooting", troubleshoot)
        return steps

    def _data(self, wanted: set[str]) -> list:
        exps = [r for r in RECIPES if r.kind == "exp" and r.lane == "data"]
        session = [r for r in RECIPES if r.kind == "session"]
        needed = set(wanted)
        if needed & {r.command for r in session}:
            needed |= {r.command for r in session}
            # The queue example commits a CSV table and the params of the CSV recipe: that recipe runs just
            # before it (last of its lane), as a user would run it first.
            added = [r.command.split()[-1] for r in session if r.command.startswith("dvc add ")]
            first = [r for r in exps if any(a.endswith(".csv") for a in added) and r.source == "csv"]
            needed |= {r.command for r in first}
            exps = [r for r in exps if r not in first] + first
        steps: list = []
        for r in exps:
            if r.command in needed:
                self._plan(steps, r.command, lambda repo, r=r: run_experiment(repo, r))
        for r in session:
            if r.command in needed:
                if r.command.startswith("dvc queue start"):
                    self._plan(steps, r.command, lambda repo, r=r: wait_for_queue(repo, run(r.command, repo)))
                else:
                    self._plan(steps, r.command, lambda repo, r=r: run(r.command, repo))
        return steps


def troubleshoot(repo: Path) -> Result:
    """The Troubleshooting entry: dvc repro with an empty params.yaml, then the README's fix."""
    (repo / "params.yaml").write_text("")
    broken = run("dvc repro", repo)
    fixed = run("git checkout params.yaml && dvc status", repo)
    return Result(fixed.rc, broken.output + "\n" + fixed.output, {"broken": broken})


@pytest.fixture(scope="module")
def lanes(request, tmp_path_factory) -> Lanes:
    """Start both lanes with what this session selected (plus what those need), once."""
    module = request.node.nodeid
    wanted = set()
    for item in request.session.items:
        if item.nodeid.startswith(module + "::"):
            callspec = getattr(item, "callspec", None)
            wanted.add(callspec.params["recipe"].command if callspec else "troubleshooting")
    lanes = Lanes(tmp_path_factory.mktemp("readme"), wanted)
    yield lanes
    for thread in lanes.threads:
        thread.join(TIMEOUT)
    for key, result in lanes.results.items():  # seen with `pytest -s`: where the time goes
        print(f"{result.seconds:6.1f} s  rc {result.rc:3d}  {key}")
    if "data" in lanes.repos:
        run("dvc queue stop", lanes.repos["data"])


# ---------------------------------------------------------------------------------------- checks
def above_chance(metrics: dict | None) -> None:
    assert metrics is not None, "no reports/metrics.json"
    test = metrics["test"]
    chance = 1 / len(test["classes"])
    # Learned something in 3 epochs (an sgd cnn on digits gets ~0.27); the real params do far better.
    assert test["n"] > 0 and test["accuracy"] > chance + 0.1 * (1 - chance), test


def check_imbalance_fits_the_real_folds(labels: dict) -> None:
    """The minority classes the recipe leaves must survive the folds of the real params.yaml."""
    real = yaml.safe_load((ROOT / "params.yaml").read_text())
    outer, inner = real["cv"]["outer_folds"], real["cv"]["inner_folds"]
    detect = real["labels"]["detect"]["n_splits"] if real["labels"]["detect"]["enabled"] else 1
    smallest = min(n for n in labels["imbalance"]["counts"] if n > 0)
    assert smallest >= max(outer, detect), labels["imbalance"]
    assert smallest * (outer - 1) // outer >= inner, labels["imbalance"]


def check(recipe: Recipe, result: Result, lanes: Lanes) -> None:
    assert result.rc == 0, result.tail()
    command, facts = recipe.command, result.facts
    if recipe.kind in ("baseline", "exp"):
        above_chance(facts["metrics"])
    if recipe.kind == "exp" and any(k.startswith("labels.imbalance.") for k in recipe.overrides):
        check_imbalance_fits_the_real_folds(facts["labels"])
    if recipe.kind == "exp" and float(recipe.overrides.get("labels.noise.rate", 0)) > 0:
        assert facts["labels"]["noise"]["n_flipped"] > 0, facts["labels"]
    if recipe.kind == "compare":
        assert "shared outer folds" in result.output, result.tail()
    if command.startswith("dlrig check-regression --out"):
        assert (lanes.repos["digits"] / command.split()[-1]).is_file()
    if command.startswith("dvc exp show"):
        ran = [r.name for r in RECIPES if r.name and r.lane == "digits" and r.command in lanes.results]
        assert all(name in result.output for name in ran), result.tail()
    if recipe.kind == "studies":  # `dvc repro studies/dvc.yaml[:<name>]`: that study's results, or all
        name = command.partition(":")[2]
        studies = [name] if name else ["labels", *STUDIES_SMALL]
        for study in studies:
            if study != "pretrain":  # the transfer study's source model: a checkpoint, no results file
                results = read_json(lanes.repos["digits"] / f"reports/studies/{study}.json")
                assert results and (study == "labels" or results.get("verdict")), study
        if not name:
            assert (lanes.repos["digits"] / "reports/studies/report.html").is_file()
    if command.startswith("dvc queue start"):
        n_queued = sum(1 for r in RECIPES if r.kind == "session" and r.command.startswith("dvc exp run --queue"))
        assert facts["tasks"] == ["Success"] * n_queued, result.tail()
        assert len(facts["metrics"]) == n_queued, result.tail()
        for metrics in facts["metrics"]:
            above_chance(metrics)


# ----------------------------------------------------------------------------------------- tests
def test_every_readme_recipe_is_classified():
    """Fast: a new README recipe must be runnable by this test or on its commented skip list."""
    unknown = [f"{r.command}  ({', '.join(r.where)}) {r.note}" for r in RECIPES if r.kind == "unknown"]
    assert not unknown, "README recipes this test cannot classify:\n" + "\n".join(unknown)
    kinds = {r.kind for r in RECIPES}
    assert {"baseline", "exp", "query", "compare", "session"} <= kinds  # the parser still finds them


def test_extract_reads_blocks_fragments_and_wrapped_spans():
    text = """Intro `dvc repro` and `make` in prose, `optim.lr` is a key.

```bash
dvc exp run -S a.b=1   # a comment
# a comment line
```

```
error: not a bash block
```

A fragment `-S data.source=csv
-S x.y=null` wraps; `dvc exp run -S a.b=1` again.
"""
    found = {r.command: r for r in extract(text)}
    assert list(found) == ["dvc exp run -S a.b=1", "dvc repro", "dvc exp run -S data.source=csv -S x.y=null"]
    assert found["dvc exp run -S a.b=1"].where == ["README.md:4 (bash block)", "README.md:13 (inline)"]
    assert found["dvc exp run -S data.source=csv -S x.y=null"].where == ["README.md:12 (inline)"]
    kinds = {r.command: r.kind for r in classify(extract(text + "`dvc gc -w` `make run`"))}
    assert kinds["dvc gc -w"] == "unknown" and kinds["make run"] == "skip"
    assert classify(extract(text))[2].overrides == {"data.source": "csv", "x.y": "null"}


@pytest.mark.slow
@pytest.mark.parametrize("recipe", RECIPES, ids=[r.id for r in RECIPES])
def test_readme_recipe(recipe: Recipe, request):
    if recipe.kind == "skip":
        pytest.skip(f"{recipe.note} ({recipe.where[0]})")
    if recipe.kind == "mention":
        pytest.skip(recipe.note)
    if recipe.kind == "unknown":
        pytest.fail(f"{recipe.command} ({', '.join(recipe.where)}): no rule runs or skips it. {recipe.note}")
    lanes: Lanes = request.getfixturevalue("lanes")
    if recipe.kind == "reset":  # runs before every experiment: check it where the first one ran
        first = next(r for r in RECIPES if r.kind == "exp" and r.lane == "digits")
        result = lanes.result(first.command).facts.get("reset") or lanes.result(first.command)
    else:
        result = lanes.result(recipe.command)
    check(recipe, result, lanes)


@pytest.mark.slow
def test_troubleshooting_error_is_what_dvc_prints(lanes):
    quoted = [m for m in re.findall(r"`(ERROR: [^`]+)`", README.read_text()) if "data.path" in m]
    assert quoted, "the Troubleshooting entry for Could not find 'data.path' is gone"
    result = lanes.result("troubleshooting")
    assert result.facts["broken"].rc != 0
    assert quoted[0] in result.facts["broken"].output, result.tail()
    assert result.rc == 0, result.tail()  # `git checkout params.yaml` fixes it
