"""The learning-rate range test's section on the studies page (results of dlrig.studies.lr_range), and
the figure ``dlrig lr-range --plot`` draws for one sweep."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from markupsafe import Markup

from dlrig.errors import UserError
from dlrig.report.figures import _new_figure, _style, save_png
from dlrig.report.markup import finite, num, render
from dlrig.report.studies import Figures, study

# (label, lr, colour, line style) of each vertical line
Mark = tuple[str, float, str, str]


def lr_range_figure(band: Sequence[Mapping[str, float]], marks: Sequence[Mark],
                    span: Mapping[str, Any] | None, path: Path, dpi: int, *, seeds: int = 1) -> Path:
    """Smoothed training loss against lr (log x): the median over seeds as a line, min-max as a band;
    vertical lines at ``marks``; ``span`` (low, high) shaded: the suggested search range."""
    lr = [r["lr"] for r in band]
    with _style():
        fig = _new_figure(7.5, 4.2)
        ax = fig.subplots()
        if span:
            ax.axvspan(span["low"], span["high"], color="tab:green", alpha=0.08, linewidth=0,
                       label="suggested search range")
        if seeds > 1:
            ax.fill_between(lr, [r["min"] for r in band], [r["max"] for r in band], color="tab:blue",
                            alpha=0.2, linewidth=0, label=f"min–max over {seeds} seeds")
        ax.plot(lr, [r["median"] for r in band], color="tab:blue", linewidth=1.6,
                label="smoothed loss" + (" (median)" if seeds > 1 else ""))
        for label, x, colour, style in marks:
            if finite(x):
                ax.axvline(x, color=colour, linestyle=style, linewidth=1.3, label=f"{label} {x:.2g}")
        ax.set_xscale("log")
        if band:
            # the blow-up at the end runs to diverge x the minimum: keep the start and the dip readable
            top = max(r["median"] for r in band[: max(len(band) // 2, 1)])
            low = min(r["min"] for r in band)
            ax.set_ylim(max(low - 0.05 * (top - low), 0), top * 1.25)
        ax.set_xlabel("learning rate (log scale; one step each)")
        ax.set_ylabel("training loss (smoothed)")
        ax.legend(fontsize="small", loc="lower left")
        return save_png(fig, path, dpi)


def marks(results: Mapping[str, Any]) -> list[Mark]:
    """The suggestions (medians over seeds) and the nested CV's lr as vertical lines."""
    out: list[Mark] = [("valley", results["valley"].get("median"), "tab:green", "-"),
                       ("steepest", results["steepest"].get("median"), "tab:orange", "--")]
    cv = results.get("cv") or {}
    if finite(cv.get("lr")):
        out.append(("nested CV's lr", cv["lr"], "tab:red", ":"))
    return out


def _check(results: Mapping[str, Any]) -> None:
    ok = all(isinstance(results.get(k), t) for k, t in
             (("settings", dict), ("runs", list), ("band", list), ("valley", dict), ("steepest", dict),
              ("cv", dict)))
    if not ok:
        raise UserError("expected 'settings', 'runs', 'band', 'valley', 'steepest' and 'cv'")


def _lr(value: Any) -> str:
    return f"{value:.2g}" if finite(value) else "n/a"


@study("lr_range", "Learning-rate range test beside the nested CV's choice")
def lr_range_section(results: Mapping[str, Any], figures: Figures) -> Markup:
    """dlrig.studies.lr_range: the loss-vs-lr figure, per-seed suggestions, and the CV's lr beside them."""
    _check(results)
    s, cv = results["settings"], results["cv"]
    png = figures.add(
        "loss_vs_lr", partial(lr_range_figure, results["band"], marks(results), results.get("space"),
                              seeds=len(results["runs"])),
        "Smoothed training loss against learning rate, with the suggestions and the nested CV's lr",
        f"One {s.get('steps')}-step sweep per seed, lr from {s.get('start_lr'):g} to {s.get('end_lr'):g} "
        f"(x{s.get('factor'):.4g} per step), loss smoothed with beta {s.get('beta'):g}; line: median, band: "
        f"min–max over {len(results['runs'])} seeds (each stops once its smoothed loss exceeds "
        f"{s.get('diverge'):g}x its minimum). Vertical lines: the median suggestions and the lr nested CV "
        "chose; shaded: the suggested search range.",
    )
    runs = []
    for r in results["runs"]:
        found = r.get("suggestions") or {}
        runs.append((r.get("seed"), r.get("steps"), _lr(found.get("valley")), _lr(found.get("steepest")),
                     _lr(found.get("minimum")), r.get("stop_reason") or "ran every step"))
    grid = cv.get("grid")
    return render(
        "study_lr_range.html.j2",
        settings=s,
        png=png,
        runs=runs,
        valley=results["valley"],
        steepest=results["steepest"],
        lr=_lr,
        space_yaml=results.get("space_yaml"),
        cv=cv,
        cv_grid=", ".join(f"{v:g}" for v in grid) if isinstance(grid, list) else None,
        cv_score=num(cv.get("inner_score")),
        other_keys=", ".join(f"{k} = {v}" for k, v in sorted((cv.get("other_keys") or {}).items())),
    )
