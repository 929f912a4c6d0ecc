"""Small HTML helpers the report's sections share: escaping, number formats, tables, embedded figures.

Every helper returns text that is safe to drop into the page: values are escaped here, so a label or a
key read from a results file can never inject markup.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Iterable
from typing import Any


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def pct(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.2%}"


def num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{float(value):.{digits}f}"


def pvalue(p: Any) -> str:
    """A p-value as a person reads it: three significant digits, never 0 (null in JSON: n/a)."""
    if not finite(p):
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{float(p):.3g}"


def plain(value: Any, limit: int = 120) -> str:
    """A short readable rendering of any JSON value (for keys the report does not know)."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool) or value is None:
        text = json.dumps(value)
    elif isinstance(value, int | float):
        text = num(value) if isinstance(value, float) else str(value)
    else:
        text = json.dumps(value, separators=(", ", ": "), default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def badge(ok: bool | None, yes: str = "pass", no: str = "fail") -> str:
    if ok is None:
        return '<span class="badge neutral">n/a</span>'
    kind, text = ("pass", yes) if ok else ("fail", no)
    return f'<span class="badge {kind}">{esc(text)}</span>'


def kv_table(rows: Iterable[tuple[str, str]]) -> str:
    """Two-column table; values are already-escaped HTML."""
    body = "".join(f'<tr><th scope="row">{esc(k)}</th><td>{v}</td></tr>' for k, v in rows)
    return f'<table class="kv">{body}</table>'


def figure(png: bytes, alt: str, caption: str) -> str:
    """An embedded PNG; ``caption`` is already-escaped HTML."""
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{esc(alt)}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )
