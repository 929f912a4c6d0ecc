"""A home for each study: dlrig/studies/<name>.py with run(), a thin stages/studies/<name>.py, a stage
<name> in studies/dvc.yaml writing reports/studies/<name>.json, and a section renderer on the studies
page, whose `report` stage reads exactly those files. Studies import the areas; no area imports a study."""

from __future__ import annotations

import ast
import importlib
import os
import shlex
from pathlib import Path, PurePosixPath

from tests.tools import stage_deps as sd

from dlrig.report import labels as main_labels
from dlrig.report import studies as page

ROOT = sd.ROOT
STUDY_MODULES = sorted(p.stem for p in (ROOT / "src/dlrig/studies").glob("*.py") if p.stem != "__init__")
# Stages that make an input of a study rather than a study's results (no module, no section, no results
# file): pretrain writes the checkpoint the transfer study starts from (its code is in studies/transfer.py).
SUPPORT_STAGES = {"pretrain": "transfer"}


def _stages() -> dict[str, sd.Stage]:
    return {s.name: s for s in sd.load_stages(ROOT, "studies/dvc.yaml")}


def test_each_study_has_a_module_a_stage_a_results_file_and_a_section():
    stages = _stages()
    assert STUDY_MODULES and set(stages) == {*STUDY_MODULES, *SUPPORT_STAGES, "report"}
    for support, user in SUPPORT_STAGES.items():  # its outputs are the deps of the study it serves
        assert set(stages[support].outs) <= set(stages[user].deps), support
    for name in STUDY_MODULES:
        assert callable(importlib.import_module(f"dlrig.studies.{name}").run), name
        stage = stages[name]
        assert shlex.split(stage.cmd[0])[:2] == ["python", f"stages/studies/{name}.py"], stage.label
        assert f"reports/studies/{name}.json" in stage.outs, stage.label
        assert name in page.STUDIES, f"no section renderer for the study {name} in dlrig.report.studies"


def test_the_studies_report_reads_every_study_result_and_declares_it():
    report = _stages()["report"]
    results = {f"reports/studies/{name}.json" for name in STUDY_MODULES}
    words = shlex.split(report.cmd[0])
    assert words[:2] == ["python", "stages/studies/report.py"]
    positional = {w for i, w in enumerate(words[2:], 2) if not w.startswith("-") and not words[i - 1].startswith("-")}
    assert positional == results  # one section per study, from the file given
    assert results <= set(report.deps)
    assert {"reports/studies/report.html", "reports/studies/figures"} <= set(report.outs)


def test_the_two_pages_link_to_each_other():
    (main,) = [s for s in sd.load_stages(ROOT, "dvc.yaml") if s.name == "report"]
    main_html = next(o for o in main.outs if o.endswith(".html"))
    studies_html = next(o for o in _stages()["report"].outs if o.endswith(".html"))
    assert main_labels.STUDIES_PAGE == os.path.relpath(studies_html, PurePosixPath(main_html).parent)
    assert page.MAIN_PAGE == os.path.relpath(main_html, PurePosixPath(studies_html).parent)
    assert not any(d.startswith("reports/studies") for d in main.deps)  # the main report reads no study


def _imports(path: Path) -> set[str]:
    module = ".".join(path.relative_to(ROOT / "src").with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([base] if base else [])])
            names |= {base, *(f"{base}.{a.name}" for a in node.names)}
    return names


def test_no_area_imports_a_study():
    offenders = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in sorted((ROOT / "src/dlrig").rglob("*.py"))
        if "studies" not in path.relative_to(ROOT / "src/dlrig").parts[:1]
        for name in sorted(_imports(path))
        if name == "dlrig.studies" or name.startswith("dlrig.studies.")
    ]
    assert not offenders, "studies import the areas, never the reverse:\n" + "\n".join(offenders)
