"""The double-descent study's section on the studies page (results of dlrig.studies.double_descent): test
and train error against hidden width, noisy labels vs the noise-free control, each a mean with its min-max
band over seeds, with the interpolation threshold and the width where parameters = n x K marked."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

from markupsafe import Markup
from matplotlib.ticker import PercentFormatter

from dlrig.errors import UserError
from dlrig.report.figures import _new_figure, _style, save_png
from dlrig.report.markup import finite, pct, render
from dlrig.report.studies import Figures, study

CURVES = {"noisy": ("tab:red", "noisy labels"), "control": ("tab:blue", "noise-free control")}


def curves_figure(results: Mapping[str, Any], path: Path, dpi: int) -> Path:
    """Test error (solid, band) and train error (dashed) against width on a log axis; vertical lines at
    the interpolation threshold of the noisy curve and at parameters = n x K."""
    widths, settings = results["widths"], results.get("settings", {})
    with _style():
        fig = _new_figure(7.8, 4.4)
        ax = fig.subplots()
        for name, (colour, label) in CURVES.items():
            test, train = results["curves"][name]["test_error"], results["curves"][name]["train_error"]
            if name == "noisy":
                label = f"{label} ({settings.get('noise', 0):.0%})"
            ax.fill_between(widths, test["min"], test["max"], color=colour, alpha=0.18, linewidth=0)
            ax.plot(widths, test["mean"], marker="o", markersize=4, linewidth=1.6, color=colour,
                    label=f"test, {label}")
            ax.plot(widths, train["mean"], linestyle="--", linewidth=1.2, color=colour,
                    label=f"train, {label}")
        threshold = (results.get("interpolation_width") or {}).get("noisy")
        if threshold is not None:
            ax.axvline(threshold, color="black", linestyle=":", linewidth=1.2,
                       label=f"interpolation threshold (width {threshold})")
        nk = results.get("nk_width")
        if finite(nk):
            ax.axvline(nk, color="tab:gray", linestyle="-.", linewidth=1.2,
                       label=f"parameters = n x K (width {nk:.0f})")
        ax.set_xscale("log", base=2)
        ax.set_xticks(widths, [str(w) for w in widths], fontsize="small", rotation=45)
        ax.minorticks_off()
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        ax.set_xlabel("hidden width (one hidden layer; log scale)")
        ax.set_ylabel(f"error (mean; band: min–max of {settings.get('seeds', '?')} seeds)")
        ax.legend(loc="upper right", fontsize="small")  # the curves are low on the right: room above
        return save_png(fig, path, dpi)


def epochs_figure(epochwise: Mapping[str, Any], seeds: Any, path: Path, dpi: int) -> Path:
    """Test error (solid, band) and train error (dashed) per epoch at one width, noisy and control."""
    x = epochwise["epochs"]
    with _style():
        fig = _new_figure(7.8, 3.8)
        ax = fig.subplots()
        for name, (colour, label) in CURVES.items():
            test, train = epochwise[name]["test_error"], epochwise[name]["train_error"]
            ax.fill_between(x, test["min"], test["max"], color=colour, alpha=0.18, linewidth=0)
            ax.plot(x, test["mean"], linewidth=1.6, color=colour, label=f"test, {label}")
            ax.plot(x, train["mean"], linestyle="--", linewidth=1.2, color=colour, label=f"train, {label}")
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        ax.set_xlabel(f"epoch (width {epochwise['width']})")
        ax.set_ylabel(f"error (mean; band: min–max of {seeds} seeds)")
        ax.legend(loc="upper right", fontsize="small")
        return save_png(fig, path, dpi)


def _check(results: Mapping[str, Any]) -> None:
    widths, curves = results.get("widths"), results.get("curves")
    ok = isinstance(widths, list) and len(widths) >= 2 and isinstance(curves, dict)
    ok = ok and all(isinstance(curves.get(c), dict) and all(
        isinstance(curves[c].get(k), dict) and len(curves[c][k].get("mean", [])) == len(widths)
        for k in ("train_error", "test_error")) for c in CURVES)
    if not ok:
        raise UserError("expected 'widths' and 'curves' (noisy and control, each with train_error and "
                        "test_error as mean/min/max per width)")


@study("double_descent", "Double descent: test error against model width")
def double_descent_section(results: Mapping[str, Any], figures: Figures) -> Markup:
    _check(results)
    s, widths = results.get("settings", {}), results["widths"]
    png = figures.add(
        "curves", partial(curves_figure, results),
        "Test and train error against hidden width, noisy labels and noise-free control",
        f"One-hidden-layer MLPs trained {s.get('epochs')} epochs ({s.get('optimizer')}, lr {s.get('lr')}, "
        f"batch {s.get('batch_size')}, no early stopping, dropout or weight decay) on {s.get('subset')} "
        "training rows; "
        "test error on the clean test split. Solid: test error, mean and min–max band over seeds; dashed: "
        "training error on the labels trained on.",
    )
    epochwise = results.get("epochwise")
    epochs_png = None
    if isinstance(epochwise, dict):
        epochs_png = figures.add(
            "epochs", partial(epochs_figure, epochwise, s.get("seeds", "?")),
            f"Test and train error per epoch at width {epochwise.get('width')}",
            f"The same runs at width {epochwise.get('width')} traced epoch by epoch (fit() with a callback "
            "that scores the model): solid test error (mean, min–max band), dashed training error.",
        )
    rows = []
    for i, w in enumerate(widths):
        cells = []
        for c in CURVES:
            cur = results["curves"][c]
            t = cur["test_error"]
            cells += [pct(cur["train_error"]["mean"][i]),
                      f"{pct(t['mean'][i])} [{pct(t['min'][i])}–{pct(t['max'][i])}]"]
        rows.append((w, (results.get("params") or [None] * len(widths))[i], cells))
    return render("study_double_descent.html.j2", png=png, epochs_png=epochs_png, rows=rows, s=s,
                  threshold=results.get("interpolation_width") or {}, nk_width=results.get("nk_width"),
                  nk_params=results.get("nk_params"))
