"""Which hyperparameters matter, drawn: an importance bar chart and a heat map (or contour) of the score over
the two most important ones, from the final search's trials and ``analyze_search``'s result.

Same house style as ``figures.py``: matplotlib ``Figure`` on the Agg canvas, default style plus ``_STYLE``,
PNGs without varying metadata, so the same inputs give the same bytes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import rc_context
from matplotlib.patches import Rectangle
from matplotlib.ticker import FuncFormatter, MaxNLocator, PercentFormatter

from dlrig.report.figures import BEST_COLOR, VAL_COLOR, _new_figure, _style, save_png
from dlrig.select.analysis import ACCURACY_LIKE, _fmt

VERDICT_COLORS = {"delicate": "#bc4c00", "permissive": "#1a7f37"}  # the report's badge colours
OTHER_COLOR = "#6e7781"
GRID_MAX = 12  # up to this many distinct values on both axes: a heat map of cells, else a contour
PERCENT_METRICS = ACCURACY_LIKE | {"macro_f1"}


def _complete(trials: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [t for t in trials if t.get("state", "complete") == "complete" and t.get("score") is not None
            and math.isfinite(float(t["score"]))]


def importance_figure(analysis: Mapping[str, Any], path: str | Path, dpi: int) -> Path | None:
    """One bar per searched hyperparameter: its share of the importance, coloured by its verdict.

    ``analysis`` is ``analyze_search``'s result; ``importance`` is fANOVA's share of the score's variance
    (or the marginal spreads' share with too few trials, as ``importance_method`` says). None (no figure)
    when there is nothing to rank.
    """
    importance = {k: float(v) for k, v in (analysis.get("importance") or {}).items() if v is not None}
    if not importance:
        return None
    names = sorted(importance, key=lambda n: (-importance[n], n))
    verdicts = analysis.get("verdicts") or {}
    kinds = [(verdicts.get(n) or {}).get("verdict", "undetermined") for n in names]
    method = {"fanova": "fANOVA: share of the score's variance",
              "marginal": "share of the marginal spreads (too few trials for fANOVA)"}.get(
        analysis.get("importance_method"), "share")
    with _style():
        fig = _new_figure(6.4, 1.3 + 0.45 * len(names))
        ax = fig.subplots()
        y = np.arange(len(names))[::-1]
        ax.barh(y, [importance[n] for n in names], color=[VERDICT_COLORS.get(k, OTHER_COLOR) for k in kinds],
                height=0.6, zorder=2)
        for yi, n, kind in zip(y, names, kinds, strict=True):
            ax.annotate(f"{importance[n]:.0%} ({kind})", (importance[n], yi), xytext=(4, 0),
                        textcoords="offset points", va="center", fontsize=9)
        ax.set_yticks(y, names)
        ax.set_xlim(0, 1.3)  # room for the labels right of the bars
        ax.set_xticks(np.linspace(0, 1, 6))
        ax.xaxis.set_major_formatter(PercentFormatter(1.0))
        ax.grid(axis="y", visible=False)
        ax.set_xlabel(f"importance ({method})")
        ax.set_title("Which hyperparameters matter (final search)")
        return save_png(fig, path, dpi)


def top_two(analysis: Mapping[str, Any], space: Mapping[str, Any]) -> list[str]:
    """The two most important searched hyperparameters (the first two of the space without importance)."""
    importance = analysis.get("importance") or {}
    ranked = sorted((n for n in space if importance.get(n) is not None), key=lambda n: (-importance[n], n))
    return (ranked + [n for n in space if n not in ranked])[:2]


def _axis_values(values: list[Any]) -> tuple[list[Any], bool]:
    """The distinct values in order, and whether they are numbers (else drawn as categories)."""
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    distinct = sorted(set(values)) if numeric else sorted({str(v) for v in values})
    return distinct, numeric


def top_two_figure(trials: Sequence[Mapping[str, Any]], space: Mapping[str, Mapping[str, Any]],
                   analysis: Mapping[str, Any], path: str | Path, dpi: int, metric: str) -> Path | None:
    """The mean inner score over the two most important hyperparameters (:func:`top_two`).

    A grid search (at most ``GRID_MAX`` values on each axis) gives a heat map: one cell per pair of values,
    the mean score of its trials written in it, blank where no trial ran. Other searches give the trials as
    points coloured by score over a filled contour interpolated between them. The best is outlined (heat
    map) or a star (contour).
    None (no figure) with fewer than two searched hyperparameters or no complete trial.
    """
    names = top_two(analysis, space)
    done = [t for t in _complete(trials) if all(n in (t.get("config") or {}) for n in names)]
    if len(names) < 2 or not done:
        return None
    a, b = names
    xs, ys = [t["config"][a] for t in done], [t["config"][b] for t in done]
    scores = np.array([float(t["score"]) for t in done])
    (xv, x_num), (yv, y_num) = _axis_values(xs), _axis_values(ys)
    best = min(done, key=lambda t: (-float(t["score"]), int(t["trial"])))
    fmt = (lambda v, _=None: f"{100 * v:.4g}%") if metric in PERCENT_METRICS else (lambda v, _=None: _fmt(v))
    with _style(), rc_context({"axes.grid": False}):
        fig = _new_figure(6.6, 5.0)
        ax = fig.subplots()
        if len(xv) <= GRID_MAX and len(yv) <= GRID_MAX or not (x_num and y_num):
            key = (lambda v: v) if x_num else str
            ykey = (lambda v: v) if y_num else str
            grid = np.full((len(yv), len(xv)), np.nan)
            for i, yy in enumerate(yv):
                for j, xx in enumerate(xv):
                    pairs = zip(xs, ys, scores, strict=True)
                    cell = [s for x0, y0, s in pairs if key(x0) == xx and ykey(y0) == yy]
                    if cell:
                        grid[i, j] = float(np.mean(cell))
            image = ax.imshow(grid, origin="lower", cmap="viridis", aspect="auto", interpolation="nearest")
            finite = grid[np.isfinite(grid)]
            middle = (finite.min() + finite.max()) / 2 if finite.size else 0
            if len(xv) * len(yv) <= 64:
                for i in range(len(yv)):
                    for j in range(len(xv)):
                        if np.isfinite(grid[i, j]):
                            ax.text(j, i, fmt(grid[i, j]), ha="center", va="center", fontsize=8,
                                    color="black" if grid[i, j] > middle else "white")
            ax.set_xticks(range(len(xv)), [_fmt(v) for v in xv])
            ax.set_yticks(range(len(yv)), [_fmt(v) for v in yv])
            bx, by = xv.index(key(best["config"][a])), yv.index(ykey(best["config"][b]))
            ax.add_patch(Rectangle((bx - 0.5, by - 0.5), 1, 1, fill=False, edgecolor=VAL_COLOR, linewidth=2.5,
                                   zorder=5))
            kind = "mean inner score per pair of values, blank: not tried; outlined: the best"
            log = {n: "" for n in names}  # cells in value order: no scale to name
        else:
            # A log-scale hyperparameter is drawn (and triangulated) in log10 units, its ticks labelled with
            # the values: a contour interpolated on the raw values would stretch across decades.
            logs = [bool((space.get(n) or {}).get("log")) and min(v) > 0 for n, v in ((a, xs), (b, ys))]
            tx, ty = (np.log10(v) if lg else np.asarray(v, float)
                      for v, lg in zip((xs, ys), logs, strict=True))
            if len(set(zip(tx, ty, strict=True))) >= 4:
                try:  # a contour needs points that span an area; a line of points cannot be triangulated
                    ax.tricontourf(tx, ty, scores, levels=12, cmap="viridis", alpha=0.55, zorder=1)
                except (ValueError, RuntimeError):
                    pass
            image = ax.scatter(tx, ty, c=scores, cmap="viridis", s=30, edgecolors="white", linewidths=0.5,
                               zorder=3)
            for axis, lg in zip((ax.xaxis, ax.yaxis), logs, strict=True):
                if lg:  # ticks at whole decades
                    axis.set_major_locator(MaxNLocator(integer=True))
                    axis.set_major_formatter(FuncFormatter(lambda v, _: _fmt(10**v)))
            bx, by = (math.log10(best["config"][n]) if lg else best["config"][n]
                      for n, lg in zip((a, b), logs, strict=True))
            ax.plot(bx, by, marker="*", markersize=16, color=VAL_COLOR, markeredgecolor="black",
                    markeredgewidth=0.7, linestyle="none", zorder=5)
            kind = "each trial's inner score, contours interpolated between them; star: the best"
            log = {n: " (log scale)" if lg else "" for n, lg in zip((a, b), logs, strict=True)}
        colorbar = fig.colorbar(image, ax=ax, shrink=0.85, format=FuncFormatter(fmt))
        colorbar.set_label(f"{metric} (inner validation)")
        ax.set_xlabel(a + log[a])
        ax.set_ylabel(b + log[b])
        ax.set_title(f"Score over the two most important hyperparameters\n({kind})", fontsize=10)
        for spine in ax.spines.values():
            spine.set_color(BEST_COLOR)
        return save_png(fig, path, dpi)
