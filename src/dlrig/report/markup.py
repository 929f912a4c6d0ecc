"""Small HTML helpers the report's pages share: escaping, number formats, tables, embedded figures, and
the page itself (its CSS, header, navigation and footer), so every page of the report looks the same.

Every helper returns text that is safe to drop into the page: values are escaped here, so a label or a
key read from a results file can never inject markup.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Iterable, Sequence
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


# The one stylesheet of every page, inline so a page loads nothing from anywhere.
CSS = """
:root { --fg: #1f2328; --muted: #59636e; --border: #d1d9e0; --soft: #f6f8fa;
        --pass: #1a7f37; --fail: #cf222e; --fail-bg: #ffebe9; --accent: #0969da;
        --warn: #bf8700; --warn-bg: #fff8c5; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff; line-height: 1.5;
       font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1040px; margin: 0 auto; padding: 2rem 1.25rem 4rem; }
header h1 { margin: 0 0 .25rem; font-size: 1.8rem; }
header p { margin: 0; color: var(--muted); }
nav { margin: 1rem 0 0; font-size: .92rem; }
nav a { color: var(--accent); text-decoration: none; margin-right: 1rem; }
nav a:hover { text-decoration: underline; }
h2 { font-size: 1.3rem; margin: 2.5rem 0 1rem; padding-bottom: .3rem;
     border-bottom: 1px solid var(--border); }
h3 { font-size: 1.05rem; margin: 1.5rem 0 .5rem; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(170px, 1fr)); gap: .75rem; }
.card { border: 1px solid var(--border); border-radius: 8px; padding: .8rem 1rem; background: var(--soft); }
.card .label { color: var(--muted); font-size: .78rem; text-transform: uppercase; letter-spacing: .04em; }
.card .value { font-size: 1.75rem; font-weight: 600; font-variant-numeric: tabular-nums; }
.card .hint { color: var(--muted); font-size: .78rem; }
.card .ci { font-size: .85rem; font-variant-numeric: tabular-nums; white-space: nowrap; }
table { border-collapse: collapse; width: 100%; font-size: .92rem; margin: .5rem 0 1rem; }
th, td { border: 1px solid var(--border); padding: .35rem .6rem; text-align: left; vertical-align: top; }
thead th { background: var(--soft); }
table.kv { width: auto; min-width: 50%; }
table.kv th { background: var(--soft); font-weight: 500; white-space: nowrap; }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.fail td { background: var(--fail-bg); }
tr.trust td { background: #ddf4ff; }
table.tests { table-layout: fixed; }
table.tests th:first-child { width: 30%; }
table.tests th:nth-child(2) { width: 33%; }
td.details { color: var(--muted); font-size: .85rem; word-break: break-word; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: .88em; }
.badge { display: inline-block; padding: .05rem .6rem; border-radius: 999px; font-size: .78rem;
         font-weight: 600; color: #fff; }
.badge.pass { background: var(--pass); }
.badge.fail { background: var(--fail); }
.badge.neutral { background: #6e7781; }
.badge.delicate { background: #bc4c00; }
.badge.permissive { background: var(--pass); }
.outcome { font-size: 1rem; }
.estimate { border: 1px solid var(--border); border-left: 4px solid var(--accent); border-radius: 8px;
            padding: .8rem 1rem; background: var(--soft); margin-bottom: .5rem; }
.estimate.optimistic { border-left-color: var(--warn); }
.estimate .label { color: var(--muted); font-size: .78rem; text-transform: uppercase; letter-spacing: .04em; }
.estimate .value { font-size: 1.35rem; font-weight: 600; font-variant-numeric: tabular-nums; }
.estimate .hint { color: var(--muted); font-size: .85rem; }
.note { color: var(--muted); font-size: .88rem; }
p.verdict { border-left: 4px solid var(--accent); background: var(--soft); border-radius: 0 6px 6px 0;
            padding: .6rem 1rem; font-weight: 500; }
ul.warnings { background: var(--warn-bg); border: 1px solid var(--warn); border-radius: 6px;
              padding: .6rem 1rem .6rem 2rem; }
ul.warnings li { margin: .2rem 0; }
figure { margin: 1.25rem 0; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid var(--border);
             border-radius: 6px; }
figcaption { color: var(--muted); font-size: .88rem; margin-top: .4rem; }
details summary { cursor: pointer; color: var(--accent); margin: .5rem 0; }
pre { background: var(--soft); border: 1px solid var(--border); border-radius: 6px; padding: 1rem;
      overflow-x: auto; font-size: .85rem; line-height: 1.4; }
mark { background: var(--warn-bg); color: inherit; }
.chosen { color: var(--warn); }
footer { margin-top: 3rem; color: var(--muted); font-size: .82rem; }
@media print { nav { display: none; } section { break-inside: avoid-page; } }
"""


def page(
    title: str,
    body: str,
    *,
    subtitle: str = "",
    nav: Sequence[tuple[str, str]] = (),
    footer: str = "",
) -> str:
    """A self-contained HTML page: ``title`` (text) in the header with ``subtitle`` (already-escaped HTML)
    and a link to each ``(anchor, label)`` of ``nav``; then ``body`` and ``footer`` (already-escaped HTML).
    """
    links = "".join(f'<a href="#{esc(anchor)}">{esc(label)}</a>' for anchor, label in nav)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
        f"<header><h1>{esc(title)}</h1><p>{subtitle}</p><nav>{links}</nav></header>\n"
        f"{body}\n"
        f"<footer>{footer}</footer>\n"
        "</main>\n</body>\n</html>\n"
    )
