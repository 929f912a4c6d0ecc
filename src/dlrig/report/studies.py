"""The studies page, reports/studies/report.html: one section per study, from the studies' saved results.

A study (``dlrig.studies.<name>``) writes ``reports/studies/<name>.json``. Its section here is one renderer
function, registered by the study's name; it gets the results dict and a :class:`Figures` to draw into,
and returns the section's body (already-escaped HTML)::

    @study("grokking", "Grokking: generalisation long after memorisation")
    def _grokking(results, figures):
        if "curves" not in results:
            raise UserError("expected 'curves'")       # the page names the file and the command to re-run
        png = figures.add("curves", partial(curves_figure, results["curves"]), "Accuracy per step", "...")
        return f"<p>...</p>{png}"

The page wraps each body in ``<section id="study-<name>">`` under the study's title, says which file it
came from, and ends it with ``results["verdict"]`` when the results carry one (a sentence the study
computed from its numbers). The sections are exactly the results files the stage is given -- the report
stage's deps in studies/dvc.yaml -- so nothing is found on disk that DVC does not know about. Figures are
written under ``<figures>/<study>/`` and embedded in the page, which has the main report's style
(:func:`dlrig.report.markup.page`), loads nothing and gives the same bytes for the same inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from matplotlib.ticker import PercentFormatter

import dlrig
from dlrig.errors import UserError
from dlrig.io import load_json, resolve, save_text
from dlrig.params import ReportParams
from dlrig.report.figures import _new_figure, _style, save_png
from dlrig.report.markup import esc, figure, finite, num, page, pct

COMMAND = "dvc repro studies/dvc.yaml"
MAIN_PAGE = "../report.html"  # the default pipeline's report, relative to reports/studies/report.html


# ----------------------------------------------------------------------------------------- the registry
@dataclass
class Figures:
    """Where one study's figures go (``folder``, at ``dpi``); :meth:`add` draws one and embeds it."""

    folder: Path
    dpi: int
    _names: set[str] = field(default_factory=set, init=False, repr=False)

    def add(self, name: str, draw: Callable[[Path, int], Path], alt: str, caption: str) -> str:
        """Draw ``<folder>/<name>.png`` with ``draw(path, dpi)``; return its ``<figure>`` (``caption`` is
        already-escaped HTML)."""
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
    return (
        f'<section id="study-{esc(name)}"><h2>{esc(entry.title)}</h2>'
        f'<p class="note">From {esc(Path(source).name)} beside this page, written by '
        f"<code>{esc(COMMAND)}:{esc(name)}</code>.</p>{body}"
        + (f'<p class="verdict">{esc(verdict)}</p>' if verdict is not None else "")
        + "</section>"
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
    n = len(results)
    subtitle = (
        f"{n} stud{'y' if n == 1 else 'ies'} on this data set, run by <code>{esc(COMMAND)}</code> apart from "
        f'the default pipeline, whose report is <a href="{esc(MAIN_PAGE)}">reports/report.html</a>'
    )
    nav = [(f"study-{name}", _cap(name.replace("_", " "))) for name in results]
    sources = ", ".join(Path(source).name for source, _ in results.values())
    footer = (
        f"Built by dlrig {esc(dlrig.__version__)} from the saved results ({esc(sources)}) and params.yaml "
        "(report.title, report.dpi); nothing was re-trained to make this page."
    )
    return page(f"{cfg.title} — studies", "".join(sections), subtitle=subtitle, nav=nav, footer=footer)


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


def _bold_if(value: Any, best: Any) -> str:
    text = esc(num(value))
    return f"<strong>{text}</strong>" if value == best else text


def _sweep(rows: Sequence[Mapping[str, Any]], first: str, label: str) -> str:
    """A study table: one row per setting, one column per option, the best of each row in bold."""
    if not rows:
        return "<p>No rows.</p>"
    cols = [c for c in rows[0] if c != first]
    head = f"<th>{esc(label)}</th>" + "".join(f'<th class="num">{esc(c)}</th>' for c in cols)
    body = []
    for row in rows:
        values = [row.get(c) for c in cols]
        best = max((v for v in values if finite(v)), default=None)
        setting = row.get(first)
        cells = "".join(f'<td class="num">{_bold_if(v, best)}</td>' for v in values)
        body.append(f"<tr><td>{esc(f'{setting:g}' if finite(setting) else setting)}</td>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _wrong_vs_right(w: Mapping[str, Any]) -> str:
    metric = esc(str(w.get("metric", "")).replace("_", " "))
    ratio = w.get("ratio")
    rows = []
    for way, text in (
        ("wrong", "wrong: oversample, then split into folds"),
        ("right", "right: split, then oversample inside each training fold"),
    ):
        scores = w.get(way) or {}
        optimism = scores.get("optimism")
        rows.append(
            f'<tr><td>{esc(text)}</td><td class="num">{esc(num(scores.get("cv")))}</td>'
            f'<td class="num">{esc(num(scores.get("test")))}</td>'
            f'<td class="num">{esc(f"{optimism:+.4f}" if finite(optimism) else "n/a")}</td></tr>'
        )
    return (
        "<p><strong>Oversampling before the folds (wrong) vs inside each training fold (right), imbalance "
        f"ratio {esc(f'{ratio:g}' if finite(ratio) else ratio)}, {esc(w.get('folds'))} folds</strong></p>"
        f'<table><thead><tr><th>Way</th><th class="num">CV {metric}</th><th class="num">Test {metric}</th>'
        f'<th class="num">Optimism (CV − test)</th></tr></thead><tbody>{"".join(rows)}</tbody></table>'
        '<p class="note">Oversampling before splitting puts copies of one row on both sides of a fold, so '
        "the CV score flatters; the test score shows which estimate was honest.</p>"
    )


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
def labels_section(results: Mapping[str, Any], figures: Figures) -> str:
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
        esc(f"{noise_title}: one line per option; each point is one model scored on the clean test split."),
    )
    imbalance_png = figures.add(
        "imbalance",
        partial(sweep_figure, imbalance["table"], "ratio", "n_max / n_min (log scale)",
                imbalance.get("metric", "test balanced accuracy"), log_x=True),
        imbalance_title,
        esc(f"{imbalance_title}: one line per way of handling it; each point is one model scored on the "
            "clean test split."),
    )
    return (
        "<p>Each model trained on the training split with corrupted labels and was scored on the clean test "
        "split; the best option in each row is in bold.</p>"
        f"<p><strong>{esc(noise_title)}</strong></p>{_sweep(noise['table'], 'rate', 'noise rate')}{noise_png}"
        f"<p><strong>{esc(imbalance_title)}</strong></p>"
        f"{_sweep(imbalance['table'], 'ratio', 'n_max / n_min')}{imbalance_png}"
        f"<p><strong>Detection</strong></p><p>{esc(detection)}</p>"
        f"{_wrong_vs_right(results['wrong_vs_right'])}"
    )
