"""Start-up: a module or stage imports the heavy packages it uses, not the ones it might.

torchvision (seconds: it drags in torch._dynamo), great_expectations (seconds), matplotlib, optuna and
dvclive are imported inside the functions that need them. Each check runs in a fresh interpreter (this
process has imported everything already) and looks at ``sys.modules`` after the import -- or, for a stage
script, after ``--help``, which runs every module-level import of the stage and nothing else.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torchvision", "great_expectations", "matplotlib", "optuna", "dvclive", "distributed")

PROBE = """
import json, runpy, sys
out = {}
for what in sys.argv[1:]:
    if what.endswith(".py"):
        sys.argv = [what, "--help"]
        try:
            runpy.run_path(what, run_name="__main__")
        except SystemExit:
            pass
    else:
        __import__(what)
    out[what] = sorted(m for m in sys.modules if "." not in m)
print(json.dumps(out))
"""


def loaded(*what: str) -> dict[str, set[str]]:
    """Top-level packages in ``sys.modules`` after importing each module of ``what`` in turn (or running
    ``stages/x.py --help``), in one fresh interpreter: a package first seen after a module is its import."""
    done = subprocess.run([sys.executable, "-c", PROBE, *what], cwd=ROOT, capture_output=True, text=True,
                          check=True, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    return {k: set(v) for k, v in json.loads(done.stdout.strip().splitlines()[-1]).items()}


# module -> heavy packages it may import at module level (all others in HEAVY must stay out)
LIBRARY = {
    "dlrig.select.nested": set(),
    "dlrig.select.run": set(),
    "dlrig.select.scorers": set(),
    "dlrig.train.fit": set(),
    "dlrig.train.batched": set(),
    "dlrig.data.sources": set(),
    "dlrig.data.validate": set(),
}

# stage -> heavy packages its --help may import (the report draws figures: matplotlib is its job)
STAGES = {
    "prepare": set(), "validate": set(), "split": set(), "train": set(), "evaluate": set(),
    "compare": set(), "detect": set(), "report": {"matplotlib"},
}


def test_library_modules_import_no_heavy_package_they_do_not_use():
    seen = loaded(*LIBRARY)
    for module, allowed in LIBRARY.items():  # in import order: the first culprit is named
        extra = (seen[module] & set(HEAVY)) - allowed
        assert not extra, f"import {module} imports {sorted(extra)} at module level: import it where used"


@pytest.mark.slow
@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_start_up_imports_only_what_the_stage_uses(stage):
    path = f"stages/{stage}.py"
    extra = (loaded(path)[path] & set(HEAVY)) - STAGES[stage]
    assert not extra, f"{path} imports {sorted(extra)} before main(): import it where it is used"


def test_probe_attributes_an_import_to_the_module_that_made_it():
    """The check can fail: a package a module imports is seen after that module, not before it."""
    seen = loaded("dlrig.errors", "tomllib")
    assert "tomllib" not in seen["dlrig.errors"] and "tomllib" in seen["tomllib"]
