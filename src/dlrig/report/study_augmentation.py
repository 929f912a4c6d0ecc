"""The augmentation study's section on the studies page (results of dlrig.studies.augmentation): test
accuracy against training rows per class, one line per arm with its min-max band over seeds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from markupsafe import Markup
from matplotlib.ticker import PercentFormatter

from dlrig.errors import UserError
from dlrig.report.figures import _new_figure, _style, save_png
from dlrig.report.markup import finite, num, render
from dlrig.report.studies import Figures, study

ARMS = ("none", "augment", "mixup")
_COLOURS = {"none": "tab:gray", "augment": "tab:blue", "mixup": "tab:orange"}


def _size(n: Any) -> str:
    return "all" if n == "all" else f"{n}"


def curves_figure(table: Sequence[Mapping[str, Any]], labels: Mapping[str, str], seeds: int, path: Path,
                  dpi: int) -> Path:
    """Mean test accuracy per arm against rows per class (evenly spaced, labelled), min-max band."""
    x = list(range(len(table)))
    with _style():
        fig = _new_figure(7.5, 4.2)
        ax = fig.subplots()
        for arm in ARMS:
            cells = [row[arm] for row in table]
            colour = _COLOURS[arm]
            ax.fill_between(x, [c["min"] for c in cells], [c["max"] for c in cells], color=colour, alpha=0.18,
                            linewidth=0)
            ax.plot(x, [c["mean"] for c in cells], marker="o", markersize=4, linewidth=1.6, color=colour,
                    label=labels.get(arm, arm))
        ax.set_xticks(x, [f"{_size(r['per_class'])}\n({r['rows']} rows)" for r in table])
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        ax.set_xlabel("training rows per class")
        ax.set_ylabel(f"test accuracy (mean; band: min–max of {seeds} seeds)")
        ax.legend(fontsize="small", loc="lower right")
        return save_png(fig, path, dpi)


def _check(results: Mapping[str, Any]) -> None:
    table = results.get("table")
    if not (isinstance(table, list) and table and all(isinstance(r, dict) and all(
            isinstance(r.get(a), dict) for a in ARMS) for r in table)):
        raise UserError(f"expected 'table': one row per training-set size with {', '.join(ARMS)}")


@study("augmentation", "Data augmentation and mixup against training-set size")
def augmentation_section(results: Mapping[str, Any], figures: Figures) -> Markup:
    _check(results)
    table, labels, seeds = results["table"], results.get("arms", {}), results.get("seeds", 0)
    png = figures.add(
        "curves", partial(curves_figure, table, labels, seeds),
        "Test accuracy against training rows per class, with and without augmentation and with mixup",
        f"Clean test accuracy against training rows per class: one line per arm (mean of {seeds} seeds), its "
        "band the min–max over seeds; each seed draws its own subset, shared by the three arms.",
    )
    rows = []
    for r in table:
        base = r["none"]["mean"]
        cells = []
        for arm in ARMS:
            c = r[arm]
            gain = "" if arm == "none" or not finite(c.get("mean")) else f" ({(c['mean'] - base) * 100:+.1f})"
            cells.append(f"{num(c.get('mean'))}{gain} [{num(c.get('min'))}–{num(c.get('max'))}]")
        rows.append((_size(r["per_class"]), r.get("rows"), cells))
    return render("study_augmentation.html.j2", png=png, arms=[labels.get(a, a) for a in ARMS], rows=rows,
                  seeds=seeds, epochs=results.get("epochs"), min_steps=results.get("min_steps"))
