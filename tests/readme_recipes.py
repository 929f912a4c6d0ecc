"""The README's command recipes as data: extracted from README.md and classified for
tests/test_readme_recipes.py.

A recipe is a line of a ```bash block (its trailing ``# comment`` dropped) or an inline code span that
starts with a command (``dvc``, ``dlrig``, ``git``, ...) or with ``-S`` (a ``dvc exp run`` fragment, as in
"Bring your own data"). Every recipe gets a kind; one that matches no rule is ``unknown``, and the test
fails on it, so a new README recipe cannot go untested by accident.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

COMMAND_WORDS = {"dvc", "dlrig", "git", "make", "source", "gh", "cml", "python", "python3", "pip", "pytest",
                 "bash", "sh", "cd", "export"}

# Commands a test cannot run, each with the reason. Everything else in the README runs.
SKIP = [
    # `make run` = venv install + `dvc repro`, `make test` = this very suite, `make test-fast`/`bench`/...
    # their halves; the test already runs `dvc repro` and the suite cannot run itself.
    (r"make(\s+[\w-]+)?", "make target: installs the venv and runs the pipeline or the test suite"),
    # Changes the calling shell only; the test puts .venv/bin on PATH itself.
    (r"source \.venv/bin/activate", "changes the calling shell; the test puts .venv/bin on PATH instead"),
    # Post to a pull request: need a forge, the network and a token.
    (r"gh pr comment\b.*", "posts to a GitHub pull request (network and token)"),
    (r"cml\b.*", "CML posts to a CI forge (network and token)"),
    # A developer tool that rewrites dvc.yaml's code deps: tests/test_stage_deps.py runs it on a copy.
    (r"python tests/tools/stage_deps\.py --write", "rewrites dvc.yaml; tests/test_stage_deps.py runs it"),
    # A Dask cluster: long-running processes on other hosts; tests/select/test_dask.py runs a real one.
    (r"dask (scheduler|worker)\b.*", "starts a long-running Dask process; tests/select/test_dask.py runs a real cluster"),
    (r"dvc exp run .*compute\.backend=dask.*", "needs a running Dask cluster; tests/select/test_dask.py covers it"),
    # A placeholder the user fills in.
    (r"dvc exp apply <name>", "<name> is a placeholder"),
]

# Commands that read results and change nothing: "before" runs while the workspace is the last commit
# (check-regression exits 1 on a worse workspace), "after" once the experiments have run.
QUERIES = [
    (r"dlrig check-params(\s+\S+)?", "before"),
    (r"dlrig check-regression(\s+--\S+(\s+[^-\s]\S*)?)*", "before"),
    (r"dvc (metrics|plots) show(\s+.*)?", "before"),
    (r"dlrig predict\s+\S+\s+\S+(\s+--\S+(\s+[^-\s]\S*)?)*", "before"),
    (r"dlrig plots(\s+\S+)*", "before"),
    (r"dlrig lr-range(\s+--\S+(\s+[^-\s]\S*)?)*", "before"),  # prints a suggestion; edits nothing
    (r"dvc exp show(\s+.*)?", "after"),
    (r"dvc (metrics|plots) diff(\s+.*)?", "after"),
]

# The lines a queue example (a bash block with `dvc exp run --queue`) may hold, run in order.
SESSION_LINES = [
    r"dvc add\s+\S+",
    r"git add(\s+\S+)+",
    r"git commit -m (\"[^\"]*\"|'[^']*')",
    r"dvc exp run --queue(\s+-S\s+\S+)+",
    r"dvc queue start(\s+-j\s+\d+)?",
]

EXP = re.compile(r"dvc exp run(?:\s+-n\s+(?P<name>[\w.-]+))?(?:\s+-S\s+\S+)+")
COMPARE = re.compile(r"dlrig compare\s+(?P<a>\S+)\s+(?P<b>\S+)(\s+--\S+\s+\S+)*")
STUDIES = re.compile(r"dvc repro studies/dvc\.yaml(:[\w-]+)?")
DATA_SOURCES_WITH_FILES = {"csv", "imagefolder", "mnist"}
DATA_SOURCES = DATA_SOURCES_WITH_FILES | {"digits", "synthetic"}


@dataclass
class Recipe:
    command: str  # what runs: a `-S ...` fragment becomes `dvc exp run -S ...`
    where: list[str]  # README.md:<line> (bash block | inline), every place it is written
    block: int | None = None  # index of its bash block (None: inline only)
    kind: str = "unknown"  # skip | baseline | reset | mention | exp | query | compare | studies | session
    note: str = ""  # why it is skipped / what it is covered by / the query phase
    lane: str = ""  # "digits" (the default data) or "data" (your own files)
    overrides: dict[str, str] = field(default_factory=dict)  # the `-S key=value` pairs

    @property
    def id(self) -> str:
        return self.command

    @property
    def source(self) -> str:
        return self.overrides.get("data.source", "digits")

    @property
    def name(self) -> str | None:  # `dvc exp run -n <name>`
        m = EXP.fullmatch(self.command)
        return m.group("name") if m else None


def _strip_comment(line: str) -> str:
    """Drop a trailing ``# comment`` (a ``#`` after whitespace, outside quotes)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def _is_command(span: str) -> bool:
    """A command, not a tool's bare name (`make`, `git` in prose)."""
    words = span.split()
    return span.startswith("-S ") or (len(words) > 1 and words[0] in COMMAND_WORDS)


def extract(text: str) -> list[Recipe]:
    """Every command recipe in README text, in order of first appearance, one per distinct command."""
    found: dict[str, Recipe] = {}

    def add(command: str, where: str, block: int | None) -> None:
        command = " ".join(command.split())
        if command.startswith("-S "):
            command = "dvc exp run " + command
        recipe = found.setdefault(command, Recipe(command, [], block))
        recipe.where.append(where)
        if recipe.block is None:
            recipe.block = block

    lines = text.splitlines()
    prose: list[tuple[int, str]] = []  # (line number, text) outside fenced blocks
    fence, n_blocks = None, 0
    for number, line in enumerate(lines, start=1):
        opening = re.match(r"^\s*```\s*(\w*)", line)
        if fence is None and opening:
            fence, n_blocks = (opening.group(1) or "text"), n_blocks + 1
        elif fence is not None and line.strip().startswith("```"):
            fence = None
        elif fence == "bash":
            command = _strip_comment(line.strip())
            if command:
                add(command, f"README.md:{number} (bash block)", n_blocks - 1)
        elif fence is None:
            prose.append((number, line))
    # Inline spans may wrap across lines within a paragraph: join the prose, keep the line of each offset.
    joined, starts, offset = "", [], 0
    for number, line in prose:
        starts.append((offset, number))
        joined += line + "\n"
        offset += len(line) + 1
    for m in re.finditer(r"`([^`]+)`", joined):
        span = " ".join(m.group(1).split())
        if span and _is_command(span):
            number = max(n for start, n in starts if start <= m.start())
            add(span, f"README.md:{number} (inline)", None)
    return list(found.values())


def _overrides(command: str) -> dict[str, str]:
    words = shlex.split(command)
    pairs = [words[i + 1] for i, w in enumerate(words[:-1]) if w == "-S"]
    return dict(pair.split("=", 1) for pair in pairs if "=" in pair)


def classify(recipes: list[Recipe]) -> list[Recipe]:
    """Give every recipe its kind (in place); return them."""
    session_blocks = {r.block for r in recipes if r.block is not None and r.command.startswith("dvc exp run --queue")}
    commands = [r.command for r in recipes]
    for r in recipes:
        r.overrides = _overrides(r.command)
        skip = next((why for pattern, why in SKIP if re.fullmatch(pattern, r.command)), None)
        phase = next((when for pattern, when in QUERIES if re.fullmatch(pattern, r.command)), None)
        if skip:
            r.kind, r.note = "skip", skip
        elif r.block in session_blocks:
            ok = any(re.fullmatch(p, r.command) for p in SESSION_LINES)
            r.kind, r.lane = ("session", "data") if ok else ("unknown", "")
            r.note = "" if ok else "a line the queue example runner does not know"
        elif r.command == "dvc repro":
            r.kind, r.lane, r.note = "baseline", "digits", "the baseline every digits experiment starts from"
        elif r.command == "git checkout params.yaml":
            r.kind, r.note = "reset", "run before every experiment, to start it from the last commit"
        elif EXP.fullmatch(r.command):
            source = r.overrides.get("data.source", "digits")
            r.kind, r.lane = "exp", ("digits" if source == "digits" else "data")
            if source not in DATA_SOURCES:
                r.kind, r.note = "unknown", f"data.source={source}: the test cannot make such data"
        elif phase:
            r.kind, r.lane, r.note = "query", "digits", phase
        elif COMPARE.fullmatch(r.command):
            r.kind, r.lane = "compare", "digits"
        elif STUDIES.fullmatch(r.command):
            r.kind, r.lane = "studies", "digits"
        else:
            longer = next((c for c in commands if c != r.command and c.startswith(r.command + " ")), None)
            if longer:
                r.kind, r.note = "mention", f"a mention; runs in full as `{longer}`"
    return recipes
