"""`dvc plots show`, offline: the plots dvc.yaml declares, drawn as PNG images in one self-contained page.

DVC's own page (``dvc plots show``) loads Vega, Vega-Lite and vega-embed from a CDN, so without a network
it is blank, and its specs carry ``$schema`` URLs. Here DVC is asked for the same plots as filled-in
Vega-Lite specs (``dvc plots show --json``, or ``dvc plots diff --json REV ...`` to compare revisions), each
is rendered to PNG by vl-convert (Vega in an embedded JavaScript engine: no browser, no network), and the
images are inlined as base64 into one HTML page: no script, no link, no URL::

    dlrig plots                  # the workspace -> dvc_plots/offline.html
    dlrig plots HEAD workspace   # like `dvc plots diff HEAD workspace`

The page is a view for a person, not a pipeline output: it is not under reports/ and DVC does not track it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlrig.errors import UserError
from dlrig.io import save_text
from dlrig.report import markup

DEFAULT_OUT = "dvc_plots/offline.html"
_URL = re.compile(r"\w+://\S*")
SCALE = 2.0  # pixels per Vega pixel: sharp on high-density screens; the page shows them at half size


@dataclass(frozen=True)
class Drawn:
    title: str
    png: bytes | None  # None: the plot could not be drawn (``note`` says why)
    revisions: tuple[str, ...]
    note: str = ""


def _dvc() -> list[str]:
    """The dvc of this Python environment (its bin/ beside the interpreter), else the one on PATH."""
    beside = Path(sys.executable).parent / "dvc"
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("dvc")
    if found is None:
        raise UserError("dvc: not found (install the pinned requirements: `make setup`)")
    return [found]


def plots_json(revs: Sequence[str] = (), cwd: str | Path | None = None) -> dict[str, list[dict[str, Any]]]:
    """``{title: [renderer, ...]}`` as ``dvc plots show --json`` (no ``revs``) or ``dvc plots diff --json
    REV ...`` prints it; each vega renderer holds the filled-in Vega-Lite spec (data inlined)."""
    args = ["plots", "diff" if revs else "show", "--json", *revs]
    said = f"`dvc {' '.join(args)}`"
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.run([*_dvc(), *args], cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise UserError(f"{said} failed (exit {proc.returncode}): {last}")
    try:
        shown = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise UserError(f"{said} printed no JSON: {proc.stdout[:200]!r}") from None
    errors = shown.get("errors") if isinstance(shown, dict) else None
    if errors:
        print(f"warning: DVC could not load some plots: {json.dumps(errors)[:300]}", file=sys.stderr)
    data = shown.get("data") if isinstance(shown, dict) else None
    if not isinstance(data, dict) or not data:
        raise UserError(f"{said} found no plots: run it in a DVC project whose dvc.yaml declares `plots:`")
    return data


def _offline_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The spec without its ``$schema`` URL (vl-convert does not need it; the page must hold no URL)."""
    return {k: v for k, v in spec.items() if k != "$schema"}


def render(data: Mapping[str, Sequence[Mapping[str, Any]]], cwd: str | Path = ".",
           scale: float = SCALE) -> list[Drawn]:
    """Each plot of ``plots_json`` as PNG bytes: vega specs rendered by vl-convert, image plots read."""
    import vl_convert

    drawn = []
    for title, renderers in data.items():
        for r in renderers:
            revisions = tuple(str(v) for v in r.get("revisions") or [])
            if r.get("type") == "vega" and isinstance(r.get("content"), dict):
                try:
                    png = vl_convert.vegalite_to_png(_offline_spec(r["content"]), scale=scale)
                except Exception as exc:  # vl-convert raises a bare ValueError for a bad spec
                    # The lines before the JavaScript stack say what (the stack names the bundle's URLs).
                    lines = str(exc).splitlines()
                    head = itertools.takewhile(lambda x: not x.startswith(" "), lines)
                    what = " ".join(x.strip() for x in head)
                    drawn.append(Drawn(title, None, revisions, f"could not be drawn: {_URL.sub('', what)}"))
                    continue
                drawn.append(Drawn(title, png, revisions))
            elif r.get("type") == "image" and r.get("url"):
                path = Path(cwd) / str(r["url"])
                if path.is_file():
                    drawn.append(Drawn(title, path.read_bytes(), revisions))
                else:
                    drawn.append(Drawn(title, None, revisions, f"image {r['url']} not found"))
            else:
                drawn.append(Drawn(title, None, revisions, f"renderer {r.get('type')!r} is not supported"))
    return drawn


def plots_page(drawn: Sequence[Drawn], heading: str = "DVC plots") -> str:
    """One self-contained page: each plot as an embedded PNG under its dvc.yaml title."""
    revisions = sorted({r for d in drawn for r in d.revisions})
    subtitle = f"{len(drawn)} plots" + (f" of {', '.join(revisions)}" if revisions else "")
    footer = ("The plots dvc.yaml declares, rendered to images by vl-convert from DVC's Vega-Lite specs: "
              "this page loads nothing and runs no script.")
    body = markup.render("dvcplots.html.j2", drawn=drawn)
    return markup.page(heading, body, subtitle=subtitle, footer=footer)


def write_plots_page(out: str | Path = DEFAULT_OUT, revs: Sequence[str] = (),
                     cwd: str | Path = ".") -> tuple[Path, list[Drawn]]:
    """Ask DVC for the plots, draw them, write the page to ``out`` (relative to ``cwd``)."""
    drawn = render(plots_json(revs, cwd=cwd), cwd=cwd)
    path = Path(cwd) / out
    save_text(path, plots_page(drawn, "DVC plots" + (f": {' vs '.join(revs)}" if revs else "")))
    return path, drawn


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="dlrig plots", description=__doc__.splitlines()[0])
    ap.add_argument("revs", nargs="*", help="revisions to compare, as `dvc plots diff` takes them (git "
                    "revisions, experiment names, 'workspace'); none: the workspace")
    ap.add_argument("-o", "--out", default=DEFAULT_OUT, help=f"the page to write (default {DEFAULT_OUT})")
    args = ap.parse_args(argv)
    path, drawn = write_plots_page(args.out, args.revs)
    failed = [d for d in drawn if d.png is None]
    for d in failed:
        print(f"warning: {d.title}: {d.note}", file=sys.stderr)
    print(f"plots: {len(drawn) - len(failed)} of {len(drawn)} drawn -> {path} "
          "(self-contained, works offline)")


if __name__ == "__main__":  # errors as dlrig.stage.run_stage gives them (report may not import it)
    try:
        main()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
