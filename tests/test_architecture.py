"""The areas of dlrig depend on each other one way, and every import names something that exists.

Each module under src/dlrig is read with ``ast`` (imports inside functions and ``if`` blocks count: they
run too) and mapped to its area -- the first name under ``dlrig`` (``train``, ``select``, ...), or the
top-level module itself (``io``, ``params``, ``seeds``, ``cli``, ...; ``dlrig`` is the package's own
``__init__``). The area graph must have no cycle, must follow ``LAYERS`` (an area imports only areas in
lower layers), nobody imports ``studies`` or ``report``, and ``report`` reaches past the base layers only
for the pure helpers in ``REPORT_MAY_IMPORT`` (it draws saved results; it never fits or selects).
"""

from __future__ import annotations

import ast
import functools
from collections import defaultdict, deque
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "dlrig"

# Top to bottom. An area may import itself and the areas of any lower layer; two areas of one layer never
# import each other. `stage` (run_stage, the door every stage script uses) sits under the CLI and above the
# library: no library area runs stages.
LAYERS: list[tuple[str, ...]] = [
    ("cli",),
    ("stage",),
    ("studies", "report"),
    ("evaluate",),
    ("select",),
    ("train",),
    ("models", "labels"),
    ("data",),
    ("params", "io", "seeds", "progress"),
    ("errors", "dlrig"),
]
BASE = {area for layer in LAYERS[-2:] for area in layer}
NEVER_IMPORTED = ("studies", "report")  # entry points for stages/: no other area imports them
# What report may import beyond the base layers: pure helpers that read saved results. Each must itself
# import nothing outside the base layers, so no fitting code comes in through them.
REPORT_MAY_IMPORT = {"dlrig.select.analysis"}


@dataclass(frozen=True)
class Import:
    source: str  # the importing module, e.g. dlrig.train.fit
    target: str  # the module imported, e.g. dlrig.labels.detect
    name: str | None  # for `from target import name` when name is not a submodule
    line: int

    def where(self) -> str:
        what = f"{self.target}.{self.name}" if self.name else self.target
        return f"{self.source}:{self.line} imports {what}"


# ------------------------------------------------------------------------------------------ the walk
def module_files(src: Path, package: str = PACKAGE) -> dict[str, Path]:
    """Module name -> file, for every .py under ``src/package`` (packages by their __init__.py)."""
    found = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _bound_names(body: list[ast.stmt]) -> set[str] | None:
    """Names a module binds at import time (None when a star import makes them unknowable)."""
    names: set[str] = set()
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
        elif isinstance(node, ast.Import):
            names |= {a.asname or a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if any(a.name == "*" for a in node.names):
                return None
            names |= {a.asname or a.name for a in node.names}
        elif isinstance(node, ast.If | ast.Try | ast.With | ast.For | ast.While):
            for block in ("body", "orelse", "finalbody", "handlers"):
                for inner in getattr(node, block, []):
                    sub = _bound_names(inner.body if isinstance(inner, ast.ExceptHandler) else [inner])
                    if sub is None:
                        return None
                    names |= sub
    return names


@dataclass
class Package:
    files: dict[str, Path]
    imports: list[Import]  # imports of this package's own modules only
    bound: dict[str, set[str] | None]


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


@functools.cache
def walk(src: Path = SRC, package: str = PACKAGE) -> Package:
    files = module_files(src, package)
    imports: list[Import] = []
    bound: dict[str, set[str] | None] = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        bound[module] = _bound_names(tree.body)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imports += [Import(module, a.name, None, node.lineno) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                target = _absolute(module, path.name == "__init__.py", node)
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    if sub in files or alias.name == "*":
                        imports.append(Import(module, sub if sub in files else target, None, node.lineno))
                    else:
                        imports.append(Import(module, target, alias.name, node.lineno))
    own = [i for i in imports if i.target == package or i.target.startswith(package + ".")]
    return Package(files, own, bound)


def area(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def area_edges(imports: list[Import]) -> dict[tuple[str, str], list[Import]]:
    """(importing area, imported area) -> the imports that make the edge (an area's own imports left out)."""
    edges: dict[tuple[str, str], list[Import]] = defaultdict(list)
    for imp in imports:
        a, b = area(imp.source), area(imp.target)
        if a != b:
            edges[a, b].append(imp)
    return dict(edges)


# --------------------------------------------------------------------------------------------- checks
def find_cycles(edges: dict[tuple[str, str], list[Import]]) -> list[list[str]]:
    """One cycle (as a closed path a -> ... -> a) per strongly connected group of areas."""
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b in edges:
        graph[a].add(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def connect(v: str) -> None:  # Tarjan; a few dozen areas, so recursion is fine
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            connect(v)
    cycles = []
    for group in groups:  # the shortest way from the group's first area back to it
        start = min(group)
        came_from: dict[str, str] = {}
        queue = deque([start])
        while queue:
            v = queue.popleft()
            if v != start and start in graph[v]:
                break
            for w in sorted(graph[v] & group):
                if w not in came_from and w != start:
                    came_from[w] = v
                    queue.append(w)
        path = [v]
        while path[-1] != start:
            path.append(came_from[path[-1]])
        cycles.append([*reversed(path), start])
    return sorted(cycles)


def describe_cycle(cycle: list[str], edges: dict[tuple[str, str], list[Import]]) -> str:
    lines = [" -> ".join(cycle)]
    for a, b in zip(cycle, cycle[1:], strict=False):
        lines += [f"    {a} -> {b}: {imp.where()}" for imp in edges.get((a, b), [])]
    return "\n".join(lines)


def layer_of(name: str) -> int | None:
    return next((k for k, layer in enumerate(LAYERS) if name in layer), None)


def order_violations(edges: dict[tuple[str, str], list[Import]]) -> list[str]:
    """Edges that do not point to a strictly lower layer (or that touch an area LAYERS does not place)."""
    found = []
    for (a, b), imps in sorted(edges.items()):
        la, lb = layer_of(a), layer_of(b)
        if la is None or lb is None or lb <= la:
            found += [f"{a} -> {b}: {imp.where()}" for imp in imps]
    return found


def forbidden_imports(imports: list[Import]) -> list[str]:
    """Imports of studies/report from another area, and report imports beyond its allowed helpers."""
    found = []
    for imp in imports:
        a, b = area(imp.source), area(imp.target)
        if b in NEVER_IMPORTED and a not in (b, "cli"):  # the console script is a door, like stages/
            found.append(f"{imp.where()} ({b} is never imported by another area)")
        if a == "report" and b != "report" and b not in BASE and imp.target not in REPORT_MAY_IMPORT:
            found.append(f"{imp.where()} (report may import only {sorted(REPORT_MAY_IMPORT)} beyond "
                         f"{sorted(BASE)})")
        if imp.source in REPORT_MAY_IMPORT and b not in BASE:
            found.append(f"{imp.where()} ({imp.source} serves report, so it imports only {sorted(BASE)})")
    return found


def missing_targets(pkg: Package) -> list[str]:
    """Imports of a dlrig module that does not exist, or of a name its module does not define."""
    found = []
    for imp in pkg.imports:
        if imp.target not in pkg.files:
            found.append(f"{imp.where()}: no module {imp.target}")
        elif imp.name is not None and pkg.bound[imp.target] is not None and imp.name not in pkg.bound[imp.target]:
            found.append(f"{imp.where()}: {imp.target} has no {imp.name}")
    return found


# ---------------------------------------------------------------------------------------------- tests
def test_every_area_has_a_place_in_the_layers():
    areas = {area(m) for m in walk().files}
    placed = {a for layer in LAYERS for a in layer}
    assert areas - placed == set(), "place the new area in LAYERS (tests/test_architecture.py)"
    assert len(placed) == sum(map(len, LAYERS))  # each area in one layer


def test_no_cycle_between_areas():
    edges = area_edges(walk().imports)
    cycles = find_cycles(edges)
    assert not cycles, "areas import each other in a cycle:\n" + "\n".join(describe_cycle(c, edges) for c in cycles)


def test_areas_import_only_lower_layers():
    found = order_violations(area_edges(walk().imports))
    layers = "\n".join("    " + " / ".join(layer) for layer in LAYERS)
    assert not found, f"imports against the declared order (top to bottom):\n{layers}\n" + "\n".join(found)


def test_no_area_imports_studies_or_report_and_report_imports_no_fitting_code():
    found = forbidden_imports(walk().imports)
    assert not found, "\n".join(found)


def test_every_dlrig_import_exists():
    found = missing_targets(walk())
    assert not found, "\n".join(found)


# -------------------------------------------------------------------------------- the checker can fail
def _package(tmp_path: Path, files: dict[str, str]) -> Package:
    for name, text in files.items():
        path = tmp_path / "src" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return walk(tmp_path / "src", "fake")


def test_the_checker_finds_a_cycle_hidden_in_a_function(tmp_path):
    pkg = _package(tmp_path, {
        "fake/__init__.py": "",
        "fake/errors.py": "class UserError(Exception): ...\n",
        "fake/train/__init__.py": "from fake.train.fit import fit\n",
        "fake/train/fit.py": "from fake.errors import UserError\n\ndef fit():\n    from fake.labels import detect\n",
        "fake/labels/__init__.py": "",
        "fake/labels/detect.py": "def find():\n    from .. import train\n    from fake.train import fit\n",
    })
    edges = area_edges(pkg.imports)
    assert set(edges) == {("train", "errors"), ("train", "labels"), ("labels", "train")}
    (cycle,) = find_cycles(edges)
    assert cycle == ["labels", "train", "labels"]
    text = describe_cycle(cycle, edges)
    assert "fake.labels.detect:3 imports fake.train.fit" in text
    assert "fake.train.fit:4 imports fake.labels.detect" in text
    assert order_violations(edges) == ["labels -> train: fake.labels.detect:2 imports fake.train",
                                       "labels -> train: fake.labels.detect:3 imports fake.train.fit"]
    assert missing_targets(pkg) == []


def test_the_checker_finds_longer_cycles_and_bad_imports(tmp_path):
    pkg = _package(tmp_path, {
        "fake/__init__.py": "",
        "fake/seeds.py": "def derive_seed(): ...\n",
        "fake/select/__init__.py": "",
        "fake/select/nested.py": "import fake.evaluate.stats\nfrom fake.seeds import derive_seed, make_folds\n",
        "fake/evaluate/__init__.py": "",
        "fake/evaluate/stats.py": "from fake.train import fit\nfrom fake.studies import labels\n",
        "fake/train/__init__.py": "from fake.select.gone import x\n",
        "fake/report/__init__.py": "",
        "fake/report/html.py": "from fake.select.nested import derive_seed\n",
    })
    edges = area_edges(pkg.imports)
    assert find_cycles(edges) == [["evaluate", "train", "select", "evaluate"]]
    assert sorted(missing_targets(pkg)) == [
        "fake.evaluate.stats:1 imports fake.train.fit: fake.train has no fit",
        "fake.evaluate.stats:2 imports fake.studies.labels: no module fake.studies",
        "fake.select.nested:2 imports fake.seeds.make_folds: fake.seeds has no make_folds",
        "fake.train:1 imports fake.select.gone.x: no module fake.select.gone",
    ]
    found = forbidden_imports(pkg.imports)
    assert any("fake.evaluate.stats:2" in f and "never imported" in f for f in found)
    assert any("fake.report.html:1" in f and "report may import only" in f for f in found)
    # A synthetic graph: the order check names the edge that points up.
    up = {("train", "select"): [Import("dlrig.train.fit", "dlrig.select.nested", None, 7)]}
    assert order_violations(up) == ["train -> select: dlrig.train.fit:7 imports dlrig.select.nested"]


def test_the_walk_sees_every_module_fast():
    import time

    start = time.perf_counter()
    pkg = walk.__wrapped__(SRC, PACKAGE)
    assert time.perf_counter() - start < 2.0
    assert {"dlrig", "dlrig.train.fit", "dlrig.io"} <= set(pkg.files)
    assert any(i.source == "dlrig.train.fit" and i.target == "dlrig.models" for i in pkg.imports)


if __name__ == "__main__":  # print the area graph: python tests/test_architecture.py
    for (a, b), imps in sorted(area_edges(walk().imports).items()):
        print(f"{a} -> {b}  ({len(imps)}: {imps[0].where()})")
    pytest.main([__file__, "-q"])
