"""The CI gate: compare this run's metrics with the committed ones and fail on a real worsening.

A thresholds file says which metrics to watch, which direction is better and how much worsening is
tolerated (noise, not a regression)::

    metrics:
      - path: test.accuracy          # dotted path inside the metrics file
        file: reports/metrics.json
        direction: higher            # higher | lower
        abs_tol: 0.01                # allowed worsening, absolute
        rel_tol: 0.0                 # allowed worsening, relative to the baseline

A metric may worsen by up to ``max(abs_tol, rel_tol * |baseline|)`` (the looser of the two). A watched
metric missing from the current run fails the gate; one missing from the baseline is reported as new and
passes (it has nothing to regress from).
"""

from __future__ import annotations

import json
import math
import subprocess
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dlrig.errors import UserError
from dlrig.io import load_json
from dlrig.params import format_validation_error, read_yaml

# Float noise (0.1 + 0.2 - 0.3) must not turn "exactly at the tolerance" into a regression.
_EPS = 1e-12


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MetricThreshold(_Strict):
    path: str = Field(min_length=1)
    file: str = Field(min_length=1)
    direction: Literal["higher", "lower"]
    abs_tol: Annotated[float, Field(ge=0)] = 0.0
    rel_tol: Annotated[float, Field(ge=0)] = 0.0


class Thresholds(_Strict):
    metrics: list[MetricThreshold] = Field(min_length=1)

    @property
    def files(self) -> list[str]:
        """The metrics files named, in first-seen order."""
        return list(dict.fromkeys(m.file for m in self.metrics))


def parse_thresholds(raw: Any, source: str = "thresholds.yaml") -> Thresholds:
    """Validate a loaded thresholds mapping; every bad key becomes one line of a :class:`UserError`."""
    if not isinstance(raw, dict):
        raise UserError(f"{source}: must be a mapping with a 'metrics' list (got {type(raw).__name__})")
    try:
        return Thresholds.model_validate(raw)
    except ValidationError as exc:
        raise UserError(format_validation_error(exc, source)) from None


def load_thresholds(path: str | Path) -> Thresholds:
    return parse_thresholds(read_yaml(path), source=str(path))


def read_metrics_files(files: Iterable[str], root: str | Path = ".") -> dict[str, Any]:
    """The current metrics: ``{file: parsed JSON}`` for each file (relative to ``root``) that exists.

    A file that is absent is left out, so its metrics show as ``missing`` (a failure) in the check.
    """
    return {f: load_json(Path(root) / f) for f in files if (Path(root) / f).is_file()}


def baseline_from_git(
    files: Iterable[str], rev: str = "HEAD", cwd: str | Path | None = None, missing_ok: bool = False
) -> dict[str, Any]:
    """The committed metrics: ``{file: parsed JSON}`` read with ``git show REV:./file``.

    Paths are relative to ``cwd`` (default: the current directory), inside a git work tree. Raises
    :class:`UserError` if git is not installed, this is not a repository, or a file does not exist at
    ``rev`` -- unless ``missing_ok``, which leaves such a file out (its metrics then count as new).
    """

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        try:  # an argument list, never a shell: file names and revisions are not interpreted
            return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
        except FileNotFoundError:
            raise UserError("git: not found (the regression check reads the baseline from git)") from None

    def reason(proc: subprocess.CompletedProcess[str]) -> str:
        return (proc.stderr.strip().splitlines() or ["git failed"])[-1]

    proc = git("rev-parse", "--verify", "--end-of-options", f"{rev}^{{commit}}")
    if proc.returncode != 0:
        raise UserError(f"git revision {rev!r}: not found ({reason(proc)})")
    baseline: dict[str, Any] = {}
    for f in files:
        proc = git("show", f"{rev}:./{Path(f).as_posix().removeprefix('./')}")
        if proc.returncode != 0:
            if missing_ok:
                continue
            raise UserError(f"{f}: not found at git revision {rev!r} ({reason(proc)})")
        try:
            baseline[f] = json.loads(proc.stdout)
        except json.JSONDecodeError as exc:
            raise UserError(f"{f}: not valid JSON at git revision {rev!r} ({exc})") from None
    return baseline


_ABSENT = object()


def _lookup(tree: Any, dotted: str) -> Any:
    """``tree["test"]["accuracy"]`` for ``"test.accuracy"``; integer parts index lists; else _ABSENT."""
    node = tree
    for part in dotted.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.lstrip("-").isdigit() and -len(node) <= int(part) < len(node):
            node = node[int(part)]
        else:
            return _ABSENT
    return node


def _number(value: Any, where: str) -> float | None:
    if value is _ABSENT:
        return None
    if value is None:  # JSON null: a metric that could not be computed
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UserError(f"{where}: must point at a number (found {type(value).__name__}); fix the path")
    return float(value)


@dataclass(frozen=True)
class RegressionRow:
    metric: str
    file: str
    direction: str
    baseline: float | None  # None: not in the baseline
    current: float | None  # None: not in the current run
    change: float | None  # current - baseline
    allowed: float | None  # tolerated worsening, >= 0
    limit: float | None  # worst acceptable current value
    status: str  # ok | REGRESSED | new | missing

    @property
    def failed(self) -> bool:
        return self.status in {"REGRESSED", "missing"}


@dataclass(frozen=True)
class RegressionResult:
    rows: list[RegressionRow]

    @property
    def ok(self) -> bool:
        return not any(r.failed for r in self.rows)

    @property
    def failures(self) -> list[RegressionRow]:
        return [r for r in self.rows if r.failed]

    def to_dict(self) -> dict[str, Any]:
        rows = [
            {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(r).items()}
            for r in self.rows
        ]
        return {"ok": self.ok, "rows": rows}

    def markdown(self) -> str:
        """A Markdown summary line and table; a failure names each regressed or missing metric."""
        fails = self.failures
        if fails:
            named = ", ".join(f"`{r.metric}` ({r.status.lower()})" for r in fails)
            head = f"**Metrics check FAILED**: {named}"
        else:
            head = f"**Metrics check passed**: {len(self.rows)} metric(s) within tolerance of the baseline"
        lines = [
            head,
            "",
            "| metric | file | baseline | current | change | allowed | status |",
            "|---|---|---:|---:|---:|---:|---|",
        ]
        for r in self.rows:
            allowed = "" if r.limit is None else f"{'≥' if r.direction == 'higher' else '≤'} {_fmt(r.limit)}"
            change = "" if r.change is None or math.isnan(r.change) else f"{r.change:+.6g}"
            status = f"**{r.status}**" if r.failed else r.status
            lines.append(
                f"| `{r.metric}` | {r.file} | {_fmt(r.baseline)} | {_fmt(r.current)} | {change} | {allowed} "
                f"| {status} |"
            )
        return "\n".join(lines) + "\n"


def _fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.6g}"


def check_regression(
    current: dict[str, Any], baseline: dict[str, Any], thresholds: Thresholds | dict[str, Any]
) -> RegressionResult:
    """Compare each watched metric of ``current`` with ``baseline`` (both ``{file: metrics dict}``).

    Worsening is ``baseline - current`` for ``direction: higher`` and ``current - baseline`` for
    ``lower``; it is a regression when it exceeds ``max(abs_tol, rel_tol * |baseline|)``. A NaN/null
    current value is a regression; a metric absent from ``current`` is ``missing`` (failure); absent
    from ``baseline`` it is ``new`` (passes).
    """
    if not isinstance(thresholds, Thresholds):
        thresholds = parse_thresholds(thresholds)
    rows = []
    for m in thresholds.metrics:
        where = f"{m.file}: {m.path}"
        cur = _number(_lookup(current.get(m.file, {}), m.path), where)
        base = _number(_lookup(baseline.get(m.file, {}), m.path), f"{where} (baseline)")
        if base is None or math.isnan(base):  # nothing to regress from
            status = "missing" if cur is None else "new"
            rows.append(RegressionRow(m.path, m.file, m.direction, None, cur, None, None, None, status))
            continue
        allowed = max(m.abs_tol, m.rel_tol * abs(base))
        limit = base - allowed if m.direction == "higher" else base + allowed
        change = None if cur is None else cur - base
        if cur is None:
            status = "missing"
        else:
            worsening = (base - cur) if m.direction == "higher" else (cur - base)
            status = "REGRESSED" if math.isnan(cur) or worsening > allowed + _EPS else "ok"
        rows.append(RegressionRow(m.path, m.file, m.direction, base, cur, change, allowed, limit, status))
    return RegressionResult(rows)
