"""What the report's pages share: the Jinja2 environment their templates render in, the number formats
their Python computes sentences with, and the page itself (:func:`page`: skeleton, CSS, header, footer).

Markup lives in ``templates/`` and the one stylesheet in ``static/report.css`` (package data, so an
installed dlrig finds them); Python computes every number and sentence and passes them as plain strings.
Autoescaping is on, so a label or a key read from a results file can never inject markup; only HTML built
here from trusted pieces is passed as :class:`~markupsafe.Markup`. ``StrictUndefined`` makes a value a
template needs but did not get an error, never an empty cell.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Sequence
from functools import cache
from importlib.resources import files
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from jinja2.ext import Extension
from markupsafe import Markup

# Rendered exactly as written (its line breaks are the page's); every other template is joined (below).
VERBATIM = {"page.html.j2"}
_BREAK = re.compile(r"[ \t]*\n\s*")


class JoinLines(Extension):
    """Line breaks in a template's source are layout, not content: the page stays compact (and its bytes
    what they were before the templates). A break between two words of text becomes one space; any other
    break (next to an HTML tag or a ``{{ }}``/``{% %}``/``{# #}``) is dropped with the indentation around
    it, so keep an inline tag or value on the line of the word before it. Values are never touched: a
    ``<pre>`` keeps its lines."""

    def preprocess(self, source: str, name: str | None, filename: str | None = None) -> str:
        if name in VERBATIM:
            return source

        def join(m: re.Match[str]) -> str:
            before, after = source[m.start() - 1 : m.start()], source[m.end() : m.end() + 1]
            return " " if before and after and before not in ">}" and after not in "<{" else ""

        return _BREAK.sub(join, source)


def _b64(png: bytes) -> str:
    return base64.b64encode(png).decode("ascii")


ENV = Environment(
    loader=PackageLoader("dlrig.report", "templates"),
    autoescape=select_autoescape(["html", "html.j2"]),
    undefined=StrictUndefined,
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
    extensions=[JoinLines],
)
ENV.filters["b64"] = _b64


def render(template: str, **context: Any) -> Markup:
    """``templates/<template>`` rendered with ``context``: HTML, safe to place in another template."""
    return Markup(ENV.get_template(template).render(**context))


@cache
def css() -> Markup:
    """The one stylesheet of every page (package data), inlined so a page loads nothing from anywhere."""
    return Markup(files("dlrig.report").joinpath("static", "report.css").read_text(encoding="utf-8"))


def macros() -> Any:
    """The shared macros (``templates/macros.html.j2``) as Python callables: ``macros().figure(...)``."""
    return ENV.get_template("macros.html.j2").module


def figure(png: bytes, alt: str, caption: str) -> Markup:
    """An embedded PNG with its caption (text; :class:`Markup` is kept as it is)."""
    return macros().figure(png, alt, caption)


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


def page(
    title: str,
    body: str,
    *,
    subtitle: str = "",
    nav: Sequence[tuple[str, str]] = (),
    footer: str = "",
    template: str = "page.html.j2",
    **context: Any,
) -> str:
    """A self-contained HTML page (``template``, ``page.html.j2`` or a page that extends it): ``title``
    in the header with ``subtitle`` and a link to each ``(anchor, label)`` of ``nav``; then ``body`` and
    ``footer``. Text is escaped; pass :class:`Markup` for HTML (``body`` always is: rendered sections)."""
    return ENV.get_template(template).render(
        title=title, subtitle=subtitle, nav=nav, body=Markup(body), footer=footer, css=css(), **context
    )
