"""The gradients study's section on the studies page (results of dlrig.studies.gradients)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from markupsafe import Markup

from dlrig.errors import UserError
from dlrig.report.figures import _new_figure, _style, save_png
from dlrig.report.markup import render
from dlrig.report.studies import Figures, study


def _profile(norms: Sequence[float | None]) -> np.ndarray:
    """Per-layer norms as floats (missing or 0 -> NaN: nothing to draw on a log axis)."""
    return np.array([v if v is not None and v > 0 else np.nan for v in norms], dtype=float)


def layers_figure(grid: Sequence[Mapping[str, Any]], when: str, path: Path, dpi: int) -> Path:
    """Small multiples: one panel per activation (rows) x init (columns), one line per depth."""
    activations = list(dict.fromkeys(g["activation"] for g in grid))
    inits = list(dict.fromkeys(g["init"] for g in grid))
    depths = sorted({g["depth"] for g in grid})
    colours = dict(zip(depths, ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown",
                                "tab:pink", "tab:gray"), strict=False))
    with _style():
        fig = _new_figure(2.6 * len(inits) + 1.2, 2.1 * len(activations) + 0.6)
        axes = np.atleast_2d(fig.subplots(len(activations), len(inits), sharex=True, squeeze=False))
        for i, act in enumerate(activations):
            for j, init in enumerate(inits):
                ax = axes[i, j]
                for g in grid:
                    if (g["activation"], g["init"]) != (act, init):
                        continue
                    y = _profile(g["norms"].get(when) or [])
                    ax.plot(np.arange(1, len(y) + 1), y, color=colours.get(g["depth"]), linewidth=1.3,
                            marker=".", markersize=3, label=f"depth {g['depth']}")
                ax.set_yscale("log")
                ax.set_title(f"{act}, {init}", fontsize="small")
                if j == 0:
                    ax.set_ylabel("grad norm")
                if i == len(activations) - 1:
                    ax.set_xlabel("layer (1 = input)")
        handles, labels = axes[0, 0].get_legend_handles_labels()
        if handles:
            fig.legend(handles, labels, loc="outside right upper", fontsize="small")
        return save_png(fig, path, dpi)


def remedies_figure(base: Mapping[str, Any], remedies: Sequence[Mapping[str, Any]], path: Path,
                    dpi: int) -> Path:
    """Per-layer gradient norm of the remedy setting without and with each remedy; init and trained."""
    with _style():
        fig = _new_figure(9.0, 3.6)
        axes = fig.subplots(1, 2, sharey=True)
        titles = ("at initialisation (step 1)", "after training")
        for ax, when, title in zip(axes, ("init", "trained"), titles, strict=True):
            for g in (base, *remedies):
                y = _profile(g["norms"].get(when) or [])
                label = "no remedy" if g.get("remedy") is None else str(g["remedy"]).replace("_", " ")
                # the baseline wide and grey underneath: clipping, which leaves the ratio alone, overlays it
                dashed = "--" if g.get("remedy") == "grad_clip" else "-"
                style = ({"color": "0.6", "linewidth": 3.2} if g.get("remedy") is None
                         else {"linewidth": 1.4, "linestyle": dashed})
                ax.plot(np.arange(1, len(y) + 1), y, label=label, **style)
            ax.set_yscale("log")
            ax.set_title(title, fontsize="small")
            ax.set_xlabel("layer (1 = input)")
        axes[0].set_ylabel("gradient norm (median over seeds)")
        axes[1].legend(fontsize="small")
        return save_png(fig, path, dpi)


def _sci(v: Any) -> str:
    return "n/a" if not isinstance(v, int | float) else f"{v:.1e}"


def _ratio_text(b: Mapping[str, Any]) -> str:
    text = f"{_sci(b.get('median'))} ({_sci(b.get('min'))}–{_sci(b.get('max'))})"
    return text + (f", {b['missing']} n/a" if b.get("missing") else "")


def _rows(settings: Sequence[Mapping[str, Any]]) -> list[tuple[str, ...]]:
    rows = []
    for g in settings:
        acc = g.get("test_accuracy") or {}
        first = (g["norms"].get("init") or [None])[0]
        rows.append((str(g["depth"]), g["activation"], g["init"], (g.get("remedy") or "—").replace("_", " "),
                     _sci(first), _ratio_text(g["ratio"]["init"]), _ratio_text(g["ratio"]["trained"]),
                     "n/a" if acc.get("median") is None else f"{acc['median']:.3f}",
                     "; ".join(g.get("stopped") or [])))
    return rows


def _check(results: Mapping[str, Any]) -> None:
    ok = isinstance(results.get("setup"), dict) and isinstance(results.get("grid"), list)
    ok = ok and {"seeds", "steps", "remedy_setting"} <= set(results["setup"])
    ok = ok and isinstance(results.get("remedies"), list) and all(
        isinstance(g, dict) and {"norms", "ratio", "depth", "activation", "init"} <= set(g)
        for g in [*results["grid"], *results["remedies"]])
    if not ok:
        raise UserError("expected 'setup', 'grid' and 'remedies' (each setting with 'norms' and 'ratio')")


@study("gradients", "Vanishing and exploding gradients, and their remedies")
def gradients_section(results: Mapping[str, Any], figures: Figures) -> Markup:
    """dlrig.studies.gradients: per-layer norms (small multiples), the remedies, the ratio table."""
    _check(results)
    setup, grid, remedies = results["setup"], results["grid"], results["remedies"]
    base = results.get("baseline")
    pngs = [
        figures.add(f"layers_{when}", partial(layers_figure, grid, when),
                    f"Gradient norm per layer {text}, per activation and init",
                    f"Gradient norm of every Linear layer's weights {text} (log scale; median over "
                    f"{setup['seeds']} seeds), one panel per activation (rows) and init (columns), one line "
                    "per depth. A line that falls towards layer 1 is a vanishing gradient; one that rises, "
                    "an exploding one.")
        for when, text in (("init", "at initialisation"), ("trained", f"after {setup['steps']} steps"))
    ]
    remedy_png = None
    if remedies and base is not None:
        s = setup["remedy_setting"]
        remedy_png = figures.add(
            "remedies", partial(remedies_figure, base, remedies),
            "Gradient norm per layer with and without each remedy",
            f"Depth {s['depth']}, {s['activation']}, default init: the gradient norm per layer without a "
            "remedy (black) and with each remedy, at initialisation and after training (median over seeds).")
    return render("study_gradients.html.j2", setup=setup, pngs=pngs, remedy_png=remedy_png,
                  rows=_rows(grid), remedy_rows=_rows([*([base] if base is not None else []), *remedies]))
