"""The studies page, reports/studies/report.html: one section per study, from the studies' saved results.

A study (``dlrig.studies.<name>``) writes ``reports/studies/<name>.json``. Its section here is one renderer
function, registered by the study's name; it gets the results dict and a :class:`Figures` to draw into,
and returns the section's body: HTML, best rendered from a template of its own in ``templates/``, which
escapes every value (:func:`dlrig.report.markup.render`)::

    @study("grokking", "Grokking: generalisation long after memorisation")
    def _grokking(results, figures):
        if "curves" not in results:
            raise UserError("expected 'curves'")       # the page names the file and the command to re-run
        png = figures.add("curves", partial(curves_figure, results["curves"]), "Accuracy per step", "...")
        return render("study_grokking.html.j2", png=png, ...)

The page wraps each body in ``<section id="study-<name>">`` under the study's title, says which file it
came from, and ends it with ``results["verdict"]`` when the results carry one (a sentence the study
computed from its numbers). The sections are exactly the results files the stage is given -- the report
stage's deps in studies/dvc.yaml -- so nothing is found on disk that DVC does not know about. Figures are
written under ``<figures>/<study>/`` and embedded in the page, which has the main report's style
(``templates/studies.html.j2`` extends the main report's ``page.html.j2``), loads nothing and gives the
same bytes for the same inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from markupsafe import Markup
from matplotlib.ticker import PercentFormatter

import dlrig
from dlrig.errors import UserError
from dlrig.io import load_json, resolve, save_text
from dlrig.params import ReportParams
from dlrig.report.figures import _new_figure, _style, save_png
from dlrig.report.markup import figure, finite, num, page, pct, render

COMMAND = "dvc repro studies/dvc.yaml"
MAIN_PAGE = "../report.html"  # the default pipeline's report, relative to reports/studies/report.html


# ----------------------------------------------------------------------------------------- the registry
@dataclass
class Figures:
    """Where one study's figures go (``folder``, at ``dpi``); :meth:`add` draws one and embeds it."""

    folder: Path
    dpi: int
    _names: set[str] = field(default_factory=set, init=False, repr=False)

    def add(self, name: str, draw: Callable[[Path, int], Path], alt: str, caption: str) -> Markup:
        """Draw ``<folder>/<name>.png`` with ``draw(path, dpi)``; return its ``<figure>`` (``alt`` and
        ``caption`` are text, escaped here)."""
        if name in self._names:
            raise ValueError(f"figure {name!r} drawn twice in {self.folder}")
        self._names.add(name)
        path = draw(self.folder / f"{name}.png", self.dpi)
        # resolve: inside the stage's output set the PNG is renamed into place only at the end
        return figure(resolve(path).read_bytes(), alt, caption)


Renderer = Callable[[Mapping[str, Any], Figures], str]


@dataclass(frozen=True)
class Study:
    name: str  # the study's module, stage and results file: dlrig.studies.<name>, reports/studies/<name>.json
    title: str
    render: Renderer


STUDIES: dict[str, Study] = {}


def study(name: str, title: str) -> Callable[[Renderer], Renderer]:
    """Register ``render`` as the section of the study ``name`` (a decorator)."""

    def register(render: Renderer) -> Renderer:
        if name in STUDIES:
            raise ValueError(f"study {name!r} already has a renderer: {STUDIES[name].render.__name__}")
        STUDIES[name] = Study(name, title, render)
        return render

    return register


# --------------------------------------------------------------------------------------------- the page
def _section(name: str, source: str, results: Mapping[str, Any], figures: Figures) -> str:
    entry = STUDIES.get(name)
    if entry is None:
        raise UserError(
            f"{source}: no section renderer for the study {name!r} (known: {sorted(STUDIES)}); register one "
            f"in dlrig.report.studies with @study({name!r}, title)"
        )
    verdict = results.get("verdict")
    if verdict is not None and not (isinstance(verdict, str) and verdict.strip()):
        raise UserError(f"{source}: 'verdict' must be a sentence, not {verdict!r} (re-run {COMMAND}:{name})")
    try:
        body = entry.render(results, figures)
    except UserError as exc:
        raise UserError(f"{source}: {exc} (written by `{COMMAND}:{name}`; re-run it)") from None
    return render(
        "study_section.html.j2",
        name=name,
        title=entry.title,
        source=Path(source).name,
        command=COMMAND,
        body=Markup(body),  # the registered renderer's HTML: code of this package, not data
        verdict=verdict,
    )


def render_page(
    results: Mapping[str, tuple[str, Mapping[str, Any]]], figures_dir: Path, cfg: ReportParams
) -> str:
    """The page, from ``{study name: (results file, results dict)}`` in page order; figures are drawn into
    ``figures_dir/<study>/`` at ``cfg.dpi``."""
    sections = [
        _section(name, source, data, Figures(Path(figures_dir) / name, cfg.dpi))
        for name, (source, data) in results.items()
    ]
    nav = [(f"study-{name}", _cap(name.replace("_", " "))) for name in results]
    sources = ", ".join(Path(source).name for source, _ in results.values())
    return page(
        f"{cfg.title} — studies",
        "".join(sections),
        nav=nav,
        template="studies.html.j2",
        n=len(results),
        command=COMMAND,
        main_page=MAIN_PAGE,
        version=dlrig.__version__,
        sources=sources,
    )


def load_results(paths: Sequence[str | Path]) -> dict[str, tuple[str, Mapping[str, Any]]]:
    """``{study name: (path, results)}``; the name is the file's stem (reports/studies/<name>.json)."""
    found: dict[str, tuple[str, Mapping[str, Any]]] = {}
    for path in paths:
        name = Path(path).stem
        if name in found:
            raise UserError(f"{path}: a second results file for the study {name!r} ({found[name][0]})")
        data = load_json(path)
        if not isinstance(data, dict):
            raise UserError(f"{path}: expected a JSON object (written by `{COMMAND}:{name}`)")
        found[name] = (str(path), data)
    if not found:
        raise UserError(f"no study results given; list each reports/studies/<name>.json (see {COMMAND})")
    return found


def build_studies_report(
    results_paths: Sequence[str | Path], out_html: Path, figures_dir: Path, cfg: ReportParams
) -> None:
    """Read every study's results, draw their figures into ``figures_dir`` and write the page."""
    results = load_results(results_paths)
    save_text(out_html, render_page(results, Path(figures_dir), cfg))


# ---------------------------------------------------------------------------------- the label study
def sweep_figure(
    rows: Sequence[Mapping[str, Any]], first: str, xlabel: str, ylabel: str, path: Path, dpi: int,
    *, log_x: bool = False,
) -> Path:
    """One line per option (every column but ``first``) against the setting in ``first``."""
    options = [c for c in rows[0] if c != first] if rows else []
    with _style():
        fig = _new_figure(7.5, 4.2)
        ax = fig.subplots()
        x = [float(r[first]) for r in rows]
        for option in options:
            ax.plot(x, [float(r[option]) if finite(r.get(option)) else float("nan") for r in rows],
                    marker="o", markersize=4, linewidth=1.6, label=option)
        if log_x:
            ax.set_xscale("log")
        ax.set_xticks(x, [f"{v:g}" for v in x])
        ax.minorticks_off()
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if options:
            fig.legend(loc="outside right upper")
        return save_png(fig, path, dpi)


def _sweep(rows: Sequence[Mapping[str, Any]], first: str, label: str) -> dict[str, Any]:
    """A study table: one row per setting, one column per option, each cell (value, best of its row)."""
    cols = [c for c in rows[0] if c != first] if rows else []
    body = []
    for row in rows:
        values = [row.get(c) for c in cols]
        best = max((v for v in values if finite(v)), default=None)
        setting = row.get(first)
        body.append((f"{setting:g}" if finite(setting) else setting, [(num(v), v == best) for v in values]))
    return {"label": label, "columns": cols, "rows": body}


def _wrong_vs_right(w: Mapping[str, Any]) -> dict[str, Any]:
    ratio = w.get("ratio")
    rows = []
    for way, text in (
        ("wrong", "wrong: oversample, then split into folds"),
        ("right", "right: split, then oversample inside each training fold"),
    ):
        scores = w.get(way) or {}
        optimism = scores.get("optimism")
        shown = f"{optimism:+.4f}" if finite(optimism) else "n/a"
        rows.append((text, num(scores.get("cv")), num(scores.get("test")), shown))
    return {
        "metric": str(w.get("metric", "")).replace("_", " "),
        "ratio": f"{ratio:g}" if finite(ratio) else ratio,
        "folds": w.get("folds"),
        "rows": rows,
    }


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _check_labels(results: Mapping[str, Any]) -> None:
    ok = all(isinstance(results.get(k), dict) for k in ("noise", "imbalance"))
    ok = ok and all(isinstance(results[k].get("table"), list) for k in ("noise", "imbalance"))
    ok = ok and isinstance(results.get("detection"), dict) and isinstance(results.get("wrong_vs_right"), dict)
    if not ok:
        raise UserError(
            "expected 'noise', 'imbalance' (each with a 'table'), 'detection' and 'wrong_vs_right'"
        )


@study("labels", "Label noise and class imbalance on this data set")
def labels_section(results: Mapping[str, Any], figures: Figures) -> Markup:
    """dlrig.studies.labels: the noise and imbalance sweeps (table + figure), detection, wrong vs right."""
    _check_labels(results)
    noise, imbalance, d = results["noise"], results["imbalance"], results["detection"]
    rate = f"{d['rate']:.0%}" if finite(d.get("rate")) else "n/a"
    detection = (
        f"Detecting {rate} injected symmetric noise (realised {pct(d.get('realised_rate'))}) from "
        f"out-of-fold probabilities: estimated noise rate {pct(d.get('estimated_rate'))}; precision "
        f"{num(d.get('precision'), 3)}, recall {num(d.get('recall'), 3)}, F1 {num(d.get('f1'), 3)}."
    )
    noise_title = f"{_cap(noise.get('metric', 'test accuracy'))} against {noise.get('kind', '')} label noise"
    imbalance_title = (
        f"{_cap(imbalance.get('metric', 'test balanced accuracy'))} against {imbalance.get('profile', '')} "
        "class imbalance"
    )
    noise_png = figures.add(
        "noise",
        partial(sweep_figure, noise["table"], "rate", "noise rate (training labels)",
                noise.get("metric", "test accuracy")),
        noise_title,
        f"{noise_title}: one line per option; each point is one model scored on the clean test split.",
    )
    imbalance_png = figures.add(
        "imbalance",
        partial(sweep_figure, imbalance["table"], "ratio", "n_max / n_min (log scale)",
                imbalance.get("metric", "test balanced accuracy"), log_x=True),
        imbalance_title,
        f"{imbalance_title}: one line per way of handling it; each point is one model scored on the "
        "clean test split.",
    )
    return render(
        "study_labels.html.j2",
        noise_title=noise_title,
        noise=_sweep(noise["table"], "rate", "noise rate"),
        noise_png=noise_png,
        imbalance_title=imbalance_title,
        imbalance=_sweep(imbalance["table"], "ratio", "n_max / n_min"),
        imbalance_png=imbalance_png,
        detection=detection,
        wrong_vs_right=_wrong_vs_right(results["wrong_vs_right"]),
    )


# Each study's section lives in its own module (report/study_<name>.py), which registers itself with @study
# on import; imported here, after the registry, so loading the studies page loads every section.
from dlrig.report import (  # noqa: E402
    study_augmentation,  # noqa: F401
    study_distillation,  # noqa: F401
    study_double_descent,  # noqa: F401
    study_gradients,  # noqa: F401
    study_grokking,  # noqa: F401
    study_lr_range,  # noqa: F401
    study_overparam,  # noqa: F401
    study_transfer,  # noqa: F401
)
