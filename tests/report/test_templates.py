"""The report's templates: they ship with the package, escape what they are given, refuse a missing value,
and lay out their source lines the documented way (markup.JoinLines)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from jinja2 import DictLoader, Environment, UndefinedError
from markupsafe import Markup

from dlrig.report import markup

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src/dlrig/report"


def test_every_template_and_stylesheet_is_package_data():
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    files = sorted(p for folder in ("templates", "static") for p in (PACKAGE / folder).rglob("*") if p.is_file())
    assert files, "no templates found"
    shipped = {p for pattern in globs["dlrig.report"] for p in PACKAGE.glob(pattern)}
    assert [p for p in files if p not in shipped] == []


def test_a_missing_value_is_an_error_and_values_are_escaped():
    with pytest.raises(UndefinedError, match="'rows' is undefined"):
        markup.render("split.html.j2", facts=[])
    html = markup.render("split.html.j2", facts=[("<k>", "a & b"), ("code", Markup("<code>x</code>"))], rows=[])
    assert '<th scope="row">&lt;k&gt;</th><td>a &amp; b</td>' in html and "<td><code>x</code></td>" in html


def test_page_inlines_the_stylesheet_and_loads_nothing():
    page = markup.page("T <1>", "<p>body</p>", subtitle="s & t", nav=[("a", "A")], footer="f")
    assert page.startswith("<!DOCTYPE html>\n") and page.endswith("</html>\n")
    assert f"<style>\n{markup.css()}</style>" in page and "<link" not in page
    assert "<title>T &lt;1&gt;</title>" in page and "<p>s &amp; t</p>" in page and "<p>body</p>\n<footer>" in page


def test_line_breaks_join_words_with_a_space_and_vanish_next_to_tags():
    env = Environment(loader=DictLoader({"t.html.j2": "<p>one\n   two\n   <b>{{ x }}</b>\n</p>\n{% if 1 %}\n<i>\n{{ x }}\n</i>{% endif %}\n"}),
                      autoescape=True, extensions=[markup.JoinLines])
    assert env.get_template("t.html.j2").render(x="a\nb") == "<p>one two<b>a\nb</b></p><i>a\nb</i>"


def test_no_template_glues_a_value_to_a_word_across_a_line_break():
    """JoinLines drops a break next to ``{{ }}``: a value at a line's end followed by a word on the next
    (or a word then a value) would print glued together ("GPU)at"); keep them on one line."""
    import re
    from pathlib import Path

    import dlrig.report

    glued = []
    for path in sorted((Path(dlrig.report.__file__).parent / "templates").glob("*.j2")):
        lines = path.read_text().split("\n")
        for i, (a, b) in enumerate(zip(lines, lines[1:], strict=False), 1):
            a, b = a.rstrip(), b.lstrip()
            if (a.endswith("}}") and re.match(r"[\w(\[]", b)) or (
                    re.search(r"[\w.,;:)]$", a) and b.startswith("{{")):
                glued.append(f"{path.name}:{i}")
    assert not glued
