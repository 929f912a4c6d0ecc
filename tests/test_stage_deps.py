"""Deps that DVC can trust: every stage's `deps` cover the code it runs and the files it reads.

Fast: the checker in tests/tools/stage_deps.py walks each stage's imports from its cmd (statically, with
ast) and compares them with dvc.yaml and studies/dvc.yaml; removing any one code dep must be caught.
Slow: the real pipeline runs in a temporary git + DVC repo with an audit hook (tests/tools/audit_site)
that logs every file each stage opens and every folder it lists; each must be one of its deps, params
files or outputs -- and every module it loaded must be one the static walk found.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path, PurePosixPath

import pytest
import yaml

from tests.small import STUDIES_SMALL
from tests.tools import stage_deps as sd

ROOT = sd.ROOT


# ------------------------------------------------------------------------------------------------ fast
def test_every_stage_deps_cover_the_code_it_runs():
    stages = sd.all_stages(ROOT)
    assert {"dvc.yaml", "studies/dvc.yaml"} <= {s.dvcfile for s in stages}
    found = sd.problems(ROOT, stages)
    assert not found, ("deps of these stages do not match the code they run "
                       "(`python tests/tools/stage_deps.py` lists each stage's code):\n\n" + "\n\n".join(found))


def test_removing_any_code_dep_is_caught():
    """Each src/ or stages/ entry is needed: without it the checker names what the stage runs uncovered."""
    stages = sd.all_stages(ROOT)
    outs = [o for s in stages for o in s.outs]
    tried = 0
    for stage in stages:
        for entry in stage.deps:
            if "${" in entry or not sd.is_code(stage.resolve(entry)) or sd.is_data(stage.resolve(entry)):
                continue
            fewer = dataclasses.replace(stage, deps=tuple(d for d in stage.deps if d != entry))
            report = sd.check_stage(ROOT, fewer, outs)
            # Not redundant (the first test refuses a dep another one covers), so something is uncovered:
            uncovered = [p for p in report.missing if sd.covers(stage.resolve(entry), p)]
            assert uncovered, f"{stage.label}: without `{entry}` the checker reports nothing"
            message = sd.describe(ROOT, fewer, report)
            assert stage.label in message and uncovered[0] in message and "add to its deps" in message
            tried += 1
    assert tried >= 2 * len(stages)  # every stage has its script and at least one library module


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def _stage(root: Path, deps: list[str], cmd: str = "python stages/s.py --out out.json") -> sd.Stage:
    doc = {"stages": {"s": {"cmd": cmd, "deps": deps, "outs": ["out.json"]}}}
    (root / "dvc.yaml").write_text(yaml.safe_dump(doc))
    return sd.load_stages(root, "dvc.yaml")[0]


def test_write_restores_the_code_deps_and_keeps_the_rest(tmp_path):
    """`python tests/tools/stage_deps.py --write` on a copy whose train stage lost a dep and gained a stale one."""
    for name in ("dvc.yaml", ".dvcignore", "pyproject.toml"):
        shutil.copy(sd.ROOT / name, tmp_path / name)
    for name in ("src", "stages", "studies"):
        shutil.copytree(sd.ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "*.lock"))
    original = (tmp_path / "dvc.yaml").read_text()
    broken = original.replace("      - src/dlrig/train/fit.py\n", "", 1).replace(
        "      - stages/train.py\n", "      - stages/train.py\n      - src/dlrig/report/html.py\n", 1)
    (tmp_path / "dvc.yaml").write_text(broken)
    assert sd.problems(tmp_path)
    assert sd.write_code_deps(tmp_path) == ["dvc.yaml"]
    assert (tmp_path / "dvc.yaml").read_text() == original and sd.problems(tmp_path) == []
    # studies/dvc.yaml's pretrain header carries a comment (`pretrain:   # ...`): its deps are its own
    studies = (tmp_path / "studies/dvc.yaml").read_text()
    assert "  pretrain:  " in studies
    (tmp_path / "studies/dvc.yaml").write_text(studies.replace(
        "      - stages/studies/pretrain.py\n", "      - stages/studies/pretrain.py\n      - src/dlrig/report/html.py\n", 1))
    assert sd.write_code_deps(tmp_path) == ["studies/dvc.yaml"]
    assert (tmp_path / "studies/dvc.yaml").read_text() == studies and sd.problems(tmp_path) == []


def test_the_walk_follows_every_kind_of_import(tmp_path):
    root = _write(tmp_path, {
        "stages/s.py": "import helper\nfrom pkg import sub\n\ndef main():\n    from pkg.lazy import f\n",
        "stages/helper.py": "import importlib\nimportlib.import_module('pkg.dyn')\n",
        "src/pkg/__init__.py": "",
        "src/pkg/sub/__init__.py": "from . import inner\nfrom ..rel import x\n",
        "src/pkg/sub/inner.py": "import numpy\n",
        "src/pkg/rel.py": "x = 1\n",
        "src/pkg/lazy.py": "def f():\n    import pkg.deep.leaf\n",
        "src/pkg/deep/__init__.py": "",
        "src/pkg/deep/leaf.py": "",
        "src/pkg/dyn.py": "import importlib\n\ndef load(n):\n    return importlib.import_module(f'pkg.family.{n}')\n",
        "src/pkg/family/__init__.py": "",
        "src/pkg/family/a.py": "",
        "src/pkg/family/b.py": "",
        "src/pkg/unused.py": "",
    })
    reached = set(sd.code_files(root, _stage(root, [])))
    assert reached == {
        "stages/s.py", "stages/helper.py", "src/pkg/__init__.py", "src/pkg/sub/__init__.py",
        "src/pkg/sub/inner.py", "src/pkg/rel.py", "src/pkg/lazy.py", "src/pkg/deep/__init__.py",
        "src/pkg/deep/leaf.py", "src/pkg/dyn.py", "src/pkg/family/__init__.py", "src/pkg/family/a.py",
        "src/pkg/family/b.py",
    }


def test_the_checker_names_missing_unused_redundant_and_nonexistent_deps(tmp_path):
    root = _write(tmp_path, {
        "stages/s.py": "from pkg import a\nimport pkg.bare\n",
        "src/pkg/__init__.py": "VERSION = 1\n",
        "src/pkg/a.py": "x = 1\n",
        "src/pkg/b.py": "x = 1\n",
        "src/pkg/bare/__init__.py": "",  # empty: runs nothing, needs no dep (DVC warns on empty deps)
        ".dvcignore": "__pycache__/\n",
    })
    ok = _stage(root, ["stages/s.py", "src/pkg", "${data.path}"])
    assert not sd.check_stage(root, ok, ["data/made_by_a_stage.npz"])
    bad = _stage(root, ["stages/s.py", "src/pkg/a.py", "src/pkg/b.py", "src/pkg/a.py", "data/nowhere.npz",
                        "data/made_by_a_stage.npz", "src/pkg/bare/__init__.py"])
    report = sd.check_stage(root, bad, ["data/made_by_a_stage.npz"])
    assert report.missing == ["src/pkg/__init__.py"]
    assert report.unused == ["src/pkg/b.py"]
    assert report.redundant == [("src/pkg/a.py", "src/pkg/a.py")]
    assert report.nonexistent == ["data/nowhere.npz"]
    assert report.empty == ["src/pkg/bare/__init__.py"]
    text = sd.describe(root, bad, report)
    assert "stage dvc.yaml:s" in text and "- src/pkg/__init__.py" in text and "add to its deps" in text


def test_a_code_folder_dep_needs_pycache_ignored(tmp_path):
    """DVC hashes __pycache__ inside a folder dep: without a .dvcignore line, any Python run changes it."""
    root = _write(tmp_path, {"stages/s.py": "import pkg\n", "src/pkg/__init__.py": "x = 1\n"})
    stage = _stage(root, ["stages/s.py", "src/pkg"])
    assert sd.check_stage(root, stage).folders == ["src/pkg"]
    (root / ".dvcignore").write_text("# python bytecode\n__pycache__/\n")
    assert not sd.check_stage(root, stage)


def test_studies_wdir_resolves_deps_from_the_repo_root(tmp_path):
    root = _write(tmp_path, {"stages/s.py": "print(1)\n", "studies/dvc.yaml": yaml.safe_dump(
        {"stages": {"s": {"wdir": "..", "cmd": "python stages/s.py", "deps": ["stages/s.py"]}}})})
    (stage,) = sd.load_stages(root, "studies/dvc.yaml")
    assert stage.wdir == "" and not sd.check_stage(root, stage)


# ------------------------------------------------------------------------------------------------ slow
AUDIT_SITE = Path(__file__).parent / "tools" / "audit_site"
NOT_DATA = (".git", ".dvc", ".venv")  # tool folders; __pycache__ and code files are handled apart
# Shrunken like tests/test_pipeline_e2e.py, smaller still: this test is about which files are read.
SHRINK = {
    ("train", "epochs"): 3,
    ("model", "hidden"): 32,
    ("cv", "outer_folds"): 2,
    ("cv", "inner_folds"): 2,
    ("search", "space"): {"optim.lr": [0.003]},
    ("compare", "baselines"): {"logistic_regression": {"estimator": "logistic_regression"}},
    ("compare", "five_by_two"): False,
    ("labels", "detect", "n_splits"): 2,
    ("compute", "cache_dir"): ".cache/dlrig",
    ("compute", "n_jobs"): 1,
    ("report", "dpi"): 50,
    ("studies", "labels", "noise_rates"): [0.2],
    ("studies", "labels", "ratios"): [10.0],
    ("studies", "labels", "folds"): 2,
    **{("studies", name, key): value for name, small in STUDIES_SMALL.items() for key, value in small.items()},
}


def _sh(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    base = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "DVC_NO_ANALYTICS": "1", "GX_ANALYTICS_ENABLED": "false"}
    proc = subprocess.run(args, cwd=cwd, env={**base, **(env or {})}, capture_output=True, text=True,
                          timeout=600)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def _make_repo(repo: Path) -> None:
    for name in ("dvc.yaml", ".dvcignore", "pyproject.toml"):
        shutil.copy(ROOT / name, repo / name)
    for name in sd.dvc_files(ROOT):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, repo / name)
    for name in ("stages", "src", ".dvc", "data/raw/input"):
        shutil.copytree(ROOT / name, repo / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "tmp", "cache"))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for keys, value in SHRINK.items():
        section = params
        for key in keys[:-1]:
            section = section[key]
        section[keys[-1]] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (repo / ".gitignore").write_text(".venv/\n__pycache__/\n.cache/\n")
    git = ("git", "-c", "user.name=t", "-c", "user.email=t@t")
    _sh("git", "init", "-q", cwd=repo)
    _sh(*git, "add", "-A", cwd=repo)
    _sh(*git, "commit", "-qm", "init", cwd=repo)


def _audited(repo: Path, logs: Path, *dvc_args: str) -> None:
    logs.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    # The copied src/ comes first on the path (before the editable install's), so its imports are logged.
    env = {"PYTHONPATH": os.pathsep.join([str(AUDIT_SITE), str(repo / "src")]), "PYTHONDONTWRITEBYTECODE": "1",
           "DLRIG_AUDIT_LOG": str(logs), "DLRIG_AUDIT_ROOT": str(repo)}
    proc = _sh("dvc", *dvc_args, cwd=repo, env=env)
    print(f"dvc {' '.join(dvc_args)}: {time.perf_counter() - start:.1f} s")
    if os.environ.get("DLRIG_AUDIT_VERBOSE"):
        print(proc.stdout)


def _stage_of(repo: Path, stages: list[sd.Stage], header: dict) -> sd.Stage:
    for stage in stages:
        for command in stage.cmd:
            if (shlex.split(command)[1:] == header["argv"][1:]
                    and os.path.realpath(header["cwd"]) == os.path.realpath(repo / stage.wdir)):
                return stage
    raise AssertionError(f"audit log of a command no stage runs: {header}")


def _relative(repo: Path, path: str) -> str:
    for base in (str(repo), os.path.realpath(repo)):
        if path == base or path.startswith(base + os.sep):
            return PurePosixPath(Path(os.path.relpath(path, base))).as_posix()
    raise AssertionError(f"{path}: logged, but not under {repo}")


def _events(repo: Path, logs: Path) -> dict[str, dict[str, set[str]]]:
    """stage label -> {"code": modules loaded, "read": files opened, "list": folders listed}, repo-relative."""
    stages = sd.all_stages(repo)
    result: dict[str, dict[str, set[str]]] = {}
    reads: dict[str, list[tuple[str, set[str], str]]] = {}  # stage -> (file, written before it, process)
    writes: dict[tuple[str, str], set[str]] = {}  # (stage, process) -> files written
    for log in sorted(logs.glob("*.jsonl")):
        lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        stage = _stage_of(repo, stages, lines[0])
        seen = result.setdefault(stage.label, {"code": set(), "read": set(), "list": set()})
        written = writes.setdefault((stage.label, log.stem), set())
        for event in lines[1:]:
            kind = next(k for k in ("open", "write", "list") if k in event)
            rel = _relative(repo, event[kind])
            if kind == "write":
                written.add(rel)
            elif kind == "list":
                if (repo / rel).is_dir():  # torch globs sys.path for libraries that are not there
                    seen["list"].add(rel)
            elif event["import"]:  # the import system loading a module (from source or __pycache__)
                if "__pycache__" in rel.split("/"):
                    folder, _, name = rel.rpartition("/__pycache__/")
                    rel = f"{folder}/{name.split('.')[0]}.py"
                seen["code"].add(rel)
            elif not (rel.endswith(".py") and sd.is_code(rel)):  # sources read as data: the cache key
                reads.setdefault(stage.label, []).append((rel, set(written), log.stem))
    # A file the stage wrote itself (a staging copy of its outputs) is not an input: written earlier by the
    # same process, or by another of the stage's processes (their order is unknown).
    for label, items in reads.items():
        for rel, before, pid in items:
            others = any(rel in w for (lb, p), w in writes.items() if lb == label and p != pid)
            if rel not in before and not others:
                result[label]["read"].add(rel)
    return result


def _templated(dep: str, params: dict) -> str:
    def value(match: re.Match) -> str:
        node = params
        for key in match.group(1).split("."):
            node = node[key]
        return str(node)

    return re.sub(r"\$\{\s*([\w.]+)\s*\}", value, dep)


KINDS = {
    "read": "reads files that are not among its deps; add them (or stop reading them)",
    "list": "lists folders that are not among its deps (what is in them changes its result)",
    "code": "loaded modules that no dep covers; add them",
    "unseen": "loaded modules the static walk (tests/tools/stage_deps.py) missed -- an import it cannot "
              "see; make it a literal import or teach the walk",
}


def _undeclared(repo: Path, events: dict[str, dict[str, set[str]]]) -> list[tuple[str, str, str]]:
    """(stage, kind, path) for each file read, folder listed or module loaded that its deps, params files
    and outputs do not cover."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    cache_dir = params["compute"]["cache_dir"]
    found = []
    for stage in sd.all_stages(repo):
        if stage.label not in events:
            continue
        seen = events[stage.label]
        deps = [stage.resolve(_templated(d, params)) for d in stage.deps]
        # Reads of its own outputs (atomic writes, figures embedded in the report), of the result cache
        # (content-addressed: each entry is keyed by everything it depends on) and of the run records
        # (reports/run/: seconds, cache hits, cost; measurements that no DVC output is made from -- the cost
        # page they feed is not one, tests/report/test_cost.py) are not inputs.
        allowed = [*deps, *stage.params_files, *stage.outs, *([cache_dir] if cache_dir else []), "reports/run"]

        def covered(path: str, allowed: list[str] = allowed) -> bool:
            return any(sd.covers(a, path) for a in allowed)

        def own_folder(path: str, stage: sd.Stage = stage) -> bool:
            """A folder holding only the stage's outputs (DVCLive lists its log folder)."""
            inside = [p for p in (repo / path).rglob("*") if p.is_file()]
            return bool(inside) and all(
                any(sd.covers(o, p.relative_to(repo).as_posix()) for o in stage.outs) for p in inside)

        found += [(stage.label, "read", p) for p in seen["read"] if not p.startswith(NOT_DATA) and not covered(p)]
        found += [(stage.label, "list", p) for p in seen["list"]
                  if not p.startswith(NOT_DATA) and not sd.is_code(p) and not covered(p) and not own_folder(p)]
        found += [(stage.label, "code", p) for p in seen["code"]
                  if (repo / p).stat().st_size > 0 and not any(sd.covers(d, p) for d in deps)]  # empty: runs nothing
        found += [(stage.label, "unseen", p) for p in seen["code"] - set(sd.code_files(repo, stage))]
    return sorted(found)


def _describe(found: list[tuple[str, str, str]]) -> str:
    text = []
    for label in sorted({f[0] for f in found}):
        text.append(f"stage {label}:")
        for kind, title in KINDS.items():
            paths = [p for s, k, p in found if s == label and k == kind]
            if paths:
                text.append(f"  {title}:")
                text += [f"    - {p}" for p in paths]
    return "\n".join(text)


@pytest.fixture(scope="module")
def audit(tmp_path_factory) -> tuple[Path, dict[str, dict[str, set[str]]]]:
    """The studies, then the default pipeline (so the study results exist when report runs), audited."""
    repo = tmp_path_factory.mktemp("dlrig-audit")
    logs = tmp_path_factory.mktemp("dlrig-audit-logs")
    _make_repo(repo)
    start = time.perf_counter()
    _audited(repo, logs, "repro", *[f for f in sd.dvc_files(ROOT) if f != "dvc.yaml"])
    _audited(repo, logs, "repro")
    print(f"audited pipeline ran in {time.perf_counter() - start:.1f} s")
    return repo, _events(repo, logs)


@pytest.mark.slow
def test_every_stage_reads_only_its_deps(audit):
    repo, events = audit
    every = {s.label for s in sd.all_stages(repo)}
    assert set(events) == every, f"stages that left no audit log: {sorted(every - set(events))}"
    for label, seen in events.items():  # the hook works: each stage was seen reading its params
        assert "params.yaml" in seen["read"] and seen["code"], label
    found = _undeclared(repo, events)
    assert not found, _describe(found)


@pytest.mark.slow
def test_report_declares_the_study_results_it_reads(audit):
    """The studies' report stage reads their results as deps; the default pipeline's report reads none."""
    repo, events = audit
    assert (repo / "reports/studies").is_dir()
    found = [f for f in _undeclared(repo, events) if f[2].startswith("reports/studies")]
    assert not found, _describe(found)
    assert not any(p.startswith("reports/studies") for p in events["dvc.yaml:report"]["read"])
