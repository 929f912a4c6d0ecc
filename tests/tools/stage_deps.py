"""Which code and files each DVC stage depends on, computed from the code, and what its `deps` miss.

A stage's code is its script (from ``cmd``) plus every module it can import, followed statically with
``ast`` and transitively: imports inside functions too, ``from pkg import name`` where ``name`` is a
submodule, the ``__init__.py`` of every package on the way, and ``importlib.import_module`` with a literal
name (a literal prefix such as ``f"dlrig.models.{name}"`` counts as every module under that package).
Modules are looked up as the running stage would find them: first in the script's own folder (Python
puts it first on ``sys.path``), then in ``src/``; anything found in neither is a third-party module.

``problems(root)`` returns one message per stage whose deps are wrong, naming the stage and the paths:
code it runs that no dep covers (with the import chain that reaches it), deps that name nothing (no such
file, and no stage writes it), code deps the stage never imports, code deps another dep already covers,
deps on empty files (they run nothing; DVC warns about each on every run) and code deps that are folders
while .dvcignore lets DVC hash the __pycache__ inside them. A dep that is a folder covers everything
under it; ``${...}`` deps are templated and skipped here. ``python tests/tools/stage_deps.py [stage ...]``
prints each stage's code deps, ready to paste, then the problems; with `--write` it first rewrites the code
lines of every stage's `deps:` in place (other lines and comments kept).
"""

from __future__ import annotations

import ast
import functools
import re
import shlex
import sys
import tomllib
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import yaml

ROOT = Path(__file__).resolve().parents[2]
CODE_DIRS = ("src", "stages")  # deps under these are code: the import walk decides which are needed
SKIP_DIRS = {"data", "models", "reports", "build", "dist", "node_modules", "__pycache__"}  # and .hidden


@dataclass(frozen=True)
class Stage:
    name: str
    dvcfile: str                      # repo-relative, e.g. "studies/dvc.yaml"
    wdir: str                         # repo-relative folder the cmd runs in ("" = the repo root)
    cmd: tuple[str, ...]
    deps: tuple[str, ...]             # as written in the dvc.yaml
    outs: tuple[str, ...] = ()        # repo-relative: outs, metrics and plots
    params_files: tuple[str, ...] = ()  # repo-relative files named in `params:`
    unsupported: str = ""             # why the checker cannot read this stage (foreach / matrix)

    @property
    def label(self) -> str:
        return f"{self.dvcfile}:{self.name}"

    def resolve(self, path: str) -> str:
        """A path as written in this stage (relative to its wdir) -> repo-relative POSIX path."""
        return _norm(PurePosixPath(self.wdir) / path)


@dataclass
class Report:
    missing: list[str] = field(default_factory=list)
    nonexistent: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    redundant: list[tuple[str, str]] = field(default_factory=list)  # (dep, the dep that covers it)
    folders: list[str] = field(default_factory=list)  # code folders whose __pycache__ DVC would hash
    empty: list[str] = field(default_factory=list)  # empty code files (DVC warns about each, every run)
    errors: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.missing or self.nonexistent or self.unused or self.redundant or self.folders
                    or self.empty or self.errors)


def _norm(path: PurePosixPath | str) -> str:
    parts: list[str] = []
    for part in PurePosixPath(path).parts:
        if part == "..":
            if parts:
                parts.pop()
        elif part != ".":
            parts.append(part)
    return "/".join(parts)


def _entry_path(entry: object) -> str:
    """A deps/outs entry is a string or a one-key mapping ``{path: {cache: false}}``."""
    if isinstance(entry, dict):
        (entry,) = entry.keys()
    return str(entry)


def dvc_files(root: Path = ROOT) -> list[str]:
    """Every dvc.yaml in the repo (outside data, outputs and tool folders), repo-relative."""
    found: list[str] = []

    def walk(folder: Path) -> None:
        for child in sorted(folder.iterdir()):
            if child.is_dir() and child.name not in SKIP_DIRS and not child.name.startswith("."):
                walk(child)
            elif child.name == "dvc.yaml":
                found.append(child.relative_to(root).as_posix())

    walk(root)
    return found


def load_stages(root: Path = ROOT, dvcfile: str = "dvc.yaml") -> list[Stage]:
    """The stages of one dvc.yaml, paths made repo-relative."""
    doc = yaml.safe_load((root / dvcfile).read_text(encoding="utf-8")) or {}
    base = PurePosixPath(dvcfile).parent
    stages = []
    for name, spec in (doc.get("stages") or {}).items():
        if "foreach" in spec or "matrix" in spec:
            stages.append(Stage(name, dvcfile, _norm(base), (), (), unsupported="foreach/matrix stage"))
            continue
        wdir = _norm(base / spec.get("wdir", "."))
        cmd = spec.get("cmd") or ()
        outs = [_entry_path(o) for key in ("outs", "metrics", "plots") for o in spec.get(key) or ()]
        params = {_entry_path(p) if isinstance(p, dict) else "params.yaml" for p in spec.get("params") or ()}
        stages.append(Stage(name, dvcfile, wdir, (cmd,) if isinstance(cmd, str) else tuple(cmd),
                            tuple(_entry_path(d) for d in spec.get("deps") or ()),
                            tuple(_norm(PurePosixPath(wdir) / o) for o in outs),
                            tuple(sorted(_norm(PurePosixPath(wdir) / p) for p in params))))
    return stages


def all_stages(root: Path = ROOT) -> list[Stage]:
    return [stage for dvcfile in dvc_files(root) for stage in load_stages(root, dvcfile)]


# --------------------------------------------------------------------------------------- the import walk
@functools.cache
def _console_scripts(root: Path) -> dict[str, str]:
    try:
        project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    return {name: target.split(":")[0] for name, target in project.get("project", {}).get("scripts", {}).items()}


def entry_points(root: Path, stage: Stage) -> tuple[list[tuple[str, str]], list[str]]:
    """The stage's (script file, script folder) pairs and ``-m``/console-script modules, from its cmd."""
    scripts: list[tuple[str, str]] = []
    modules: list[str] = []
    for command in stage.cmd:
        words = shlex.split(command)
        for i, word in enumerate(words):
            if re.fullmatch(r"(.*/)?python(3(\.\d+)?)?", word):
                rest = [w for w in words[i + 1:] if not w.startswith("-") or w == "-m"]
                if rest[:1] == ["-m"] and len(rest) > 1:
                    modules.append(rest[1])
                elif rest and rest[0].endswith(".py"):
                    script = stage.resolve(rest[0])
                    scripts.append((script, str(PurePosixPath(script).parent)))
                break
            if word in _console_scripts(root):
                modules.append(_console_scripts(root)[word])
                break
    return scripts, modules


def _module_file(root: Path, name: str, search: tuple[str, ...]) -> str | None:
    """The repo-relative file that ``import name`` loads, looking in ``search`` folders in order."""
    rel = name.replace(".", "/")
    for folder in search:
        for candidate in (f"{rel}.py", f"{rel}/__init__.py"):
            path = _norm(PurePosixPath(folder) / candidate)
            if (root / path).is_file():
                return path
        if (root / folder / rel).is_dir():  # a namespace package: no file to run
            return ""
    return None


def _package_modules(root: Path, package: str, search: tuple[str, ...]) -> list[str]:
    """Every module under a package (for imports whose name is only known up to a prefix)."""
    init = _module_file(root, package, search)
    if not init:
        return []
    folder = PurePosixPath(init).parent if init.endswith("__init__.py") else None
    if folder is None:
        return []
    names = []
    for path in sorted((root / folder).rglob("*.py")):
        rel = path.relative_to(root / folder).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        names.append(".".join([package, *parts]))
    return names


def _imported_names(tree: ast.AST, module: str, is_package: bool) -> Iterable[tuple[str, tuple[str, ...]]]:
    """(module, names imported from it) for every import statement and literal import_module call."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, ()
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".") if package else []
                parts = parts[: len(parts) - (node.level - 1)] if node.level > 1 else parts
                base = ".".join([*parts, *([base] if base else [])])
            yield base, tuple(a.name for a in node.names if a.name != "*")
        elif isinstance(node, ast.Call) and node.args and _is_import_call(node.func):
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                yield arg.value, ()
            elif isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
                prefix = str(arg.values[0].value)
                if prefix.endswith("."):
                    yield prefix.rstrip("."), ("*",)  # every module under the package


def _is_import_call(func: ast.expr) -> bool:
    if isinstance(func, ast.Attribute):
        return func.attr == "import_module"
    return isinstance(func, ast.Name) and func.id in {"import_module", "__import__"}


@functools.cache
def _file_imports(root: Path, path: str, module: str, search: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """(module, file) pairs one file imports directly (in-repo modules only; packages' __init__ too)."""
    tree = ast.parse((root / path).read_text(encoding="utf-8"), filename=path)
    found: dict[str, str] = {}

    def add(name: str) -> bool:
        """Import ``name`` and the packages above it; False when it is not an in-repo module."""
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            file = _module_file(root, prefix, search)
            if file is None:
                return False
            if file:
                found.setdefault(prefix, file)
        return True

    for name, names in _imported_names(tree, module, path.endswith("__init__.py")):
        if not name or not add(name):
            continue
        for sub in names:
            if sub == "*":
                for mod in _package_modules(root, name, search):
                    add(mod)
            else:
                add(f"{name}.{sub}")  # a submodule if such a file exists; an attribute otherwise
    return tuple(sorted(found.items()))


def code_files(root: Path, stage: Stage) -> dict[str, list[str]]:
    """Every in-repo file the stage's cmd runs or imports -> the chain of files that led to it."""
    scripts, modules = entry_points(root, stage)
    reached: dict[str, list[str]] = {}
    todo: list[tuple[str, str, tuple[str, ...], list[str]]] = []
    for script, folder in scripts:
        todo.append((script, "__main__", (folder, "src"), []))
    for module in modules:
        search = (stage.wdir or ".", "src")
        file = _module_file(root, module, search)
        if file:
            todo.append((file, module, search, []))
            parts = module.split(".")
            for i in range(1, len(parts)):
                init = _module_file(root, ".".join(parts[:i]), search)
                if init:
                    todo.append((init, ".".join(parts[:i]), search, []))
    queue = deque(todo)  # breadth first: each file's chain is a shortest one
    while queue:
        path, module, search, chain = queue.popleft()
        if path in reached or not (root / path).is_file():
            continue
        reached[path] = chain
        for name, file in _file_imports(root, path, module, search):
            queue.append((file, name, search, [*chain, path]))
    return reached


# ----------------------------------------------------------------------------------------------- checks
def covers(dep: str, path: str) -> bool:
    return path == dep or path.startswith(dep.rstrip("/") + "/")


def is_code(path: str) -> bool:
    return any(covers(d, path) for d in CODE_DIRS)


def is_data(path: str, root: Path = ROOT) -> bool:
    """Under src/ or stages/ but no Python (a package's templates or CSS, read at run time): a data dep,
    which the import walk cannot judge; it is kept as written, and the audited run checks its reads."""
    target = root / path
    if not is_code(path) or not target.exists() or path.endswith(".py"):
        return False
    return not (target.is_dir() and any(target.rglob("*.py")))


def ignores_bytecode(root: Path) -> bool:
    """Does .dvcignore keep __pycache__ out of folder hashes? (Else a code folder dep is not stable.)"""
    try:
        lines = (root / ".dvcignore").read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return False
    patterns = {line.strip().strip("/").removeprefix("**/") for line in lines if not line.startswith("#")}
    return bool(patterns & {"__pycache__", "*.pyc"})


def dep_paths(stage: Stage) -> list[str]:
    """The stage's deps, repo-relative, without the templated ones."""
    return [stage.resolve(d) for d in stage.deps if "${" not in d]


def check_stage(root: Path, stage: Stage, outs: Iterable[str] = ()) -> Report:
    """What is wrong with one stage's deps. ``outs``: every stage's outputs (a dep on one needs no file)."""
    report = Report()
    if stage.unsupported:
        report.errors.append(f"{stage.unsupported}: tests/tools/stage_deps.py does not expand it yet")
        return report
    scripts, modules = entry_points(root, stage)
    if not scripts and not modules:
        report.errors.append(f"no `python <script>.py`, `python -m <module>` or console script in its cmd "
                             f"{list(stage.cmd)}")
    for script, _ in scripts:
        if not (root / script).is_file():
            report.errors.append(f"its cmd runs {script}, which does not exist")
    reached = code_files(root, stage)
    deps = dep_paths(stage)
    outs = list(outs)
    for dep in deps:
        if not (root / dep).exists() and not any(covers(o, dep) or covers(dep, o) for o in outs):
            report.nonexistent.append(dep)
    # An empty file (a bare package __init__.py) runs nothing; a dep on it only makes DVC warn
    # "'...' is empty." on every run. Once it holds code, it is required like any other module.
    needed = [p for p in reached if (root / p).stat().st_size > 0]
    report.missing = sorted(p for p in needed if not any(covers(d, p) for d in deps))
    for i, dep in enumerate(deps):
        if not is_code(dep) or is_data(dep, root) or dep in report.nonexistent:
            continue
        if (root / dep).is_file() and (root / dep).stat().st_size == 0:
            report.empty.append(dep)
            continue
        if (root / dep).is_dir() and not ignores_bytecode(root):
            report.folders.append(dep)
        other = next((o for j, o in enumerate(deps) if j != i and covers(o, dep) and (o != dep or j < i)), None)
        if other is not None:
            report.redundant.append((dep, other))
        elif not any(covers(dep, p) for p in needed):
            report.unused.append(dep)
    return report


def describe(root: Path, stage: Stage, report: Report) -> str:
    """One readable paragraph: the stage, what is wrong, and what to change."""
    lines = [f"stage {stage.label}:"]
    lines += [f"  {e}" for e in report.errors]
    if report.missing:
        reached = code_files(root, stage)
        lines.append("  runs code that no dep covers; add to its deps:")
        for path in report.missing:
            via = f"imported via {' -> '.join(reached[path])}" if reached[path] else "its cmd runs it"
            lines.append(f"    - {path}    ({via})")
    if report.nonexistent:
        lines.append("  deps that do not exist and that no stage writes; fix or remove:")
        lines += [f"    - {d}" for d in report.nonexistent]
    if report.unused:
        lines.append("  code deps the stage never imports (each change would rerun it for nothing); remove:")
        lines += [f"    - {d}" for d in report.unused]
    if report.redundant:
        lines.append("  deps already covered by another dep; remove:")
        lines += [f"    - {d}    (covered by {o})" for d, o in report.redundant]
    if report.empty:
        lines.append("  deps on empty files: they run nothing, and DVC warns \"'<file>' is empty.\" on every "
                     "run; remove (the test asks for them again once they hold code):")
        lines += [f"    - {d}" for d in report.empty]
    if report.folders:
        lines.append("  code deps that are folders: DVC hashes every file in them, __pycache__/*.pyc too, so a "
                     "Python run changes the hash and reruns the stage for nothing; list the files instead "
                     "(`python tests/tools/stage_deps.py` prints them) or add `__pycache__/` to .dvcignore:")
        lines += [f"    - {d}" for d in report.folders]
    return "\n".join(lines)


def problems(root: Path = ROOT, stages: list[Stage] | None = None) -> list[str]:
    stages = all_stages(root) if stages is None else stages
    outs = [o for s in all_stages(root) for o in s.outs]
    return [describe(root, s, r) for s in stages if (r := check_stage(root, s, outs))]


def suggested_code_deps(root: Path, stage: Stage) -> list[str]:
    """The stage's code files, a package folder replacing its files when the stage imports all of them."""
    reached = {p for p in code_files(root, stage) if (root / p).stat().st_size > 0}
    result = set(reached)
    if not ignores_bytecode(root):
        return sorted(result, key=lambda p: (not p.startswith("stages/"), p))
    folders = sorted({str(PurePosixPath(p).parent) for p in reached}, key=lambda f: f.count("/"))
    for folder in folders:
        if folder in ("src", "stages", "src/dlrig", "."):
            continue
        inside = {p.relative_to(root).as_posix() for p in (root / folder).rglob("*.py")
                  if "__pycache__" not in p.parts and p.stat().st_size > 0}
        if inside and inside <= reached and not any(covers(r, folder) for r in result if r != folder):
            result -= inside
            result.add(folder)
    return sorted(result, key=lambda p: (not p.startswith("stages/"), p))


def write_code_deps(root: Path = ROOT) -> list[str]:
    """Rewrite every stage's code deps (``src/``, ``stages/`` lines of its ``deps:``) to the suggested
    list, in place, keeping every other line and comment. Returns the dvc files changed."""
    changed = []
    for dvcfile in dvc_files(root):
        path = root / dvcfile
        lines = path.read_text().splitlines(keepends=True)
        by_name = {stage.name: stage for stage in load_stages(root, dvcfile)}
        out, stage, in_deps, inserted = [], None, False, False
        for line in lines:
            stripped = line.strip()
            key = stripped.split(" #")[0].rstrip()  # a header may carry a comment: `pretrain:   # why`
            indent = len(line) - len(line.lstrip())
            if indent == 2 and key.endswith(":") and not key.startswith("-"):
                stage, in_deps, inserted = by_name.get(key[:-1]), False, False
            elif stage is not None and indent == 4 and key.endswith(":"):
                in_deps, inserted = key == "deps:", False
            dep = stripped[2:].split("#")[0].strip()
            if in_deps and stripped.startswith("- ") and is_code(dep) and not is_data(dep, root):
                if not inserted:
                    pad = line[: len(line) - len(line.lstrip())]
                    out += [f"{pad}- {dep}\n" for dep in suggested_code_deps(root, stage)]
                    inserted = True
                continue
            out.append(line)
        text = "".join(out)
        if text != path.read_text():
            path.write_text(text)
            changed.append(dvcfile)
    return changed


def main(argv: list[str]) -> int:
    root = ROOT
    if argv[:1] == ["--write"]:
        print("rewrote the code deps of", write_code_deps(root) or "nothing")
        argv = argv[1:]
    wanted = set(argv)
    for stage in all_stages(root):
        if wanted and stage.name not in wanted and stage.label not in wanted:
            continue
        print(f"{stage.label}:")
        for dep in suggested_code_deps(root, stage):
            print(f"  - {dep}")
    found = problems(root)
    print("\n\n".join(found) if found else "deps cover every stage's code")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
