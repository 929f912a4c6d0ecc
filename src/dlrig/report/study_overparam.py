"""The over-parameterisation study's section on the studies page (results of dlrig.studies.overparam): the
ladder as a table (parameters, train and test accuracy, training loss, sharpness per width and batch size,
mean and min-max over seeds) and sharpness against width, one line per batch size."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from markupsafe import Markup

from dlrig.errors import UserError
from dlrig.report.figures import _new_figure, _style, save_png
from dlrig.report.markup import num, pct, render
from dlrig.report.studies import Figures, study

METRICS = ("train_accuracy", "test_accuracy", "train_loss", "sharpness", "relative_sharpness")
PANELS = {"sharpness": "training-loss rise under perturbation",
          "train_loss": "training loss (at the minimum)",
          "relative_sharpness": "rise / training loss"}


def sharpness_figure(table: Sequence[Mapping[str, Any]], seeds: Any, path: Path, dpi: int) -> Path:
    """Three panels against width (log): the loss rise, the training loss (log) and their ratio, one line
    per batch size, each the mean with its min-max band over seeds -- side by side, since near zero loss
    the rise tracks the loss level."""
    batches = sorted({r["batch_size"] for r in table})
    with _style():
        fig = _new_figure(11.0, 3.8)
        axes = fig.subplots(1, len(PANELS))
        for i, batch in enumerate(batches):
            rows = sorted((r for r in table if r["batch_size"] == batch), key=lambda r: r["width"])
            x = [r["width"] for r in rows]
            colour = f"C{i}"
            for ax, key in zip(axes, PANELS, strict=True):
                ax.fill_between(x, [r[key]["min"] for r in rows], [r[key]["max"] for r in rows], color=colour,
                                alpha=0.2, linewidth=0)
                ax.plot(x, [r[key]["mean"] for r in rows], marker="o", markersize=4, linewidth=1.6,
                        color=colour, label=f"batch {batch}")
        widths = sorted({r["width"] for r in table})
        for ax, (key, label) in zip(axes, PANELS.items(), strict=True):
            ax.set_xscale("log")
            if key != "relative_sharpness":  # the ratio spans little: a linear axis keeps its ticks
                ax.set_yscale("log")
            ax.set_xticks(widths, [str(w) for w in widths])
            ax.minorticks_off()
            ax.set_xlabel("hidden width (log scale)")
            ax.set_ylabel(f"{label}\n(mean; band: min–max of {seeds} seeds)", fontsize="small")
        axes[0].legend(fontsize="small")
        return save_png(fig, path, dpi)


def _check(results: Mapping[str, Any]) -> None:
    table = results.get("table")
    if not (isinstance(table, list) and table and all(
            isinstance(r, dict) and "width" in r and "batch_size" in r
            and all(isinstance(r.get(k), dict) for k in METRICS) for r in table)):
        raise UserError("expected 'table': one row per (width, batch_size) with " + ", ".join(METRICS))


@study("overparam", "Over-parameterisation and flat minima")
def overparam_section(results: Mapping[str, Any], figures: Figures) -> Markup:
    _check(results)
    s, table = results.get("settings", {}), results["table"]
    png = figures.add(
        "sharpness", partial(sharpness_figure, table, s.get("seeds", "?")),
        "Sharpness, training loss and their ratio against width, one line per batch size",
        f"Left: mean rise of the training loss over {s.get('directions')} random directions (each as +d and "
        f"-d), every weight row moved by {s.get('rho')} x its norm. Middle: the training loss itself. Right: "
        "rise / loss per model. Mean and min–max band over seeds.",
    )

    def cell(c: Mapping[str, Any], fmt) -> str:
        return f"{fmt(c.get('mean'))} [{fmt(c.get('min'))}–{fmt(c.get('max'))}]"

    def sci(v: Any) -> str:
        return num(v) if not isinstance(v, (int, float)) else f"{v:.3g}"

    rows = [(r["width"], r.get("params"), r["batch_size"], r.get("epochs"),
             cell(r["train_accuracy"], pct), cell(r["test_accuracy"], pct), cell(r["train_loss"], sci),
             cell(r["sharpness"], sci), cell(r["relative_sharpness"], sci)) for r in table]
    return render("study_overparam.html.j2", png=png, rows=rows, s=s)
