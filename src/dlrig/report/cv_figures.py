"""Figures for the hyperparameter search and nested CV: score vs each hyperparameter, outer-fold scores
(the optimism of selecting on the inner folds), trial history.

Same house style as ``figures.py`` (matplotlib ``Figure`` on the Agg canvas, no pyplot, default style plus
``_STYLE``, atomic PNGs without varying metadata, so the same inputs give the same bytes). Inputs are the
plain data ``dlrig.select.analysis`` takes; the noise floor, marginal means and verdicts drawn here are
the ones ``analyze_search`` reports (pass its result as ``analysis`` to skip recomputing it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullLocator

from dlrig.report.figures import BEST_COLOR, TRAIN_COLOR, VAL_COLOR, _new_figure, _style, save_png
from dlrig.select.analysis import ACCURACY_LIKE, _fmt, analyze_search, noise_floor, optimism_summary

POINT_COLOR = TRAIN_COLOR
NEAR_COLOR = "#2ca02c"  # green: apart from the grey means and bounds, the red best
BAND_COLOR = VAL_COLOR
PRUNED_COLOR = "#9a9a9a"
FAILED_COLOR = "#8c2d04"
MEAN_COLOR = "#333333"
NEAR_LABEL = "mean with the others near the best"
# Scores that are proportions in [0, 1] read better as percentages.
PERCENT_METRICS = ACCURACY_LIKE | {"macro_f1"}


def _score_axis(ax: Axes, metric: str) -> None:
    if metric in PERCENT_METRICS:  # 97.6%, not 97.60%: as many digits as the ticks need
        ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{100 * y:.6g}%"))


def _finite(x: Any) -> bool:
    return x is not None and math.isfinite(float(x))


def _complete(trials: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [t for t in trials if not t.get("pruned") and _finite(t.get("score"))]


def _best(done: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    return min(done, key=lambda t: (-float(t["score"]), int(t["trial"])))


def _shared_legend(fig: Any, axes: Sequence[Axes]) -> None:
    """One legend for all panels, above them, so it never hides a point."""
    handles: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    if handles:
        # Three columns at most: one row of five entries overflows a figure of two panels.
        fig.legend(handles.values(), handles.keys(), loc="outside upper center", ncols=min(len(handles), 3))


# ------------------------------------------------------------------------- score vs hyperparameters
def _jitter(n: int, width: float = 0.3) -> np.ndarray:
    """Deterministic horizontal offsets that spread ``n`` points of one category across ``width``."""
    return np.zeros(1) if n == 1 else np.linspace(-width / 2, width / 2, n)


def _param_panel(
    ax: Axes,
    name: str,
    spec: Mapping[str, Any],
    done: Sequence[Mapping[str, Any]],
    best: Mapping[str, Any],
    verdict: Mapping[str, Any] | None,
) -> None:
    values = [t["config"].get(name) for t in done]
    scores = [float(t["score"]) for t in done]
    numeric = spec.get("type") in ("float", "int") and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in values
    )
    levels = (verdict or {}).get("levels") or []
    # Where values of the others were left out as not near the best, the means the verdict reads.
    near = (verdict or {}).get("conditional_levels") if (verdict or {}).get("excluded") else None
    if numeric:
        ax.scatter(values, scores, s=18, color=POINT_COLOR, alpha=0.75, zorder=3, label="trial")
        if len(levels) >= 2:
            ax.plot(
                [lv["value"] for lv in levels],
                [lv["mean"] for lv in levels],
                color=MEAN_COLOR,
                linewidth=1.2,
                marker="_",
                markersize=10,
                zorder=4,
                label="marginal mean (the others averaged out)",
            )
        if near and len(near) >= 2:
            ax.plot(
                [lv["value"] for lv in near],
                [lv["mean"] for lv in near],
                color=NEAR_COLOR,
                linewidth=1.2,
                linestyle="--",
                zorder=4,
                label=NEAR_LABEL,
            )
        best_x = best["config"].get(name)
        if spec.get("log") and min(values) > 0:
            ax.set_xscale("log")
        distinct = sorted(set(values))
        if len(distinct) <= 8:  # a grid: tick exactly the evaluated values
            ax.set_xticks(distinct, [_fmt(v) for v in distinct])
            ax.xaxis.set_minor_locator(NullLocator())
        if spec.get("low") is not None and spec.get("high") is not None:
            for bound in (spec["low"], spec["high"]):  # the edges of the range, to see a best on the edge
                ax.axvline(bound, color=BEST_COLOR, linewidth=0.8, linestyle=":", zorder=1)
    else:
        labels = [lv["label"] for lv in levels] or sorted({str(v) for v in values})
        keys = [str(lv["value"]) for lv in levels] or labels
        pos = {k: i for i, k in enumerate(keys)}
        xs = np.zeros(len(values))
        for k, i in pos.items():
            members = [j for j, v in enumerate(values) if str(v) == k]
            xs[members] = i + _jitter(len(members))
        ax.scatter(xs, scores, s=18, color=POINT_COLOR, alpha=0.75, zorder=3, label="trial")
        for lv in levels:
            i = pos[str(lv["value"])]
            ax.hlines(
                lv["mean"],
                i - 0.3,
                i + 0.3,
                color=MEAN_COLOR,
                linewidth=1.6,
                zorder=4,
                label="marginal mean (the others averaged out)",
            )
        for lv in near or []:
            i = pos.get(str(lv["value"]))
            if i is not None:
                ax.hlines(
                    lv["mean"], i - 0.3, i + 0.3, color=NEAR_COLOR, linestyle="--", zorder=4, label=NEAR_LABEL
                )
        ax.set_xticks(range(len(keys)), labels)
        ax.set_xlim(-0.6, len(keys) - 0.4)
        ax.grid(axis="x", visible=False)
        best_x = xs[next(j for j, t in enumerate(done) if t is best)]  # on its jittered point
    ax.plot(
        best_x,
        float(best["score"]),
        marker="*",
        markersize=13,
        color=VAL_COLOR,
        markeredgecolor="black",
        markeredgewidth=0.6,
        linestyle="none",
        zorder=5,
        label="best config",
    )
    title = name
    if verdict:
        title += f"\n{verdict['verdict']}"
        if verdict.get("spread") is not None and verdict.get("noise"):
            ratio = verdict["spread"] / verdict["noise"]
            where = " near the best" if verdict.get("excluded") else ""  # what the verdict reads
            digits = 2 if 1.95 <= ratio < 2.05 else 1  # never "2.0x" both ways
            title += f" (moves {ratio:.{digits}f}x noise{where})"
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(f"{name}{' (log scale)' if ax.get_xscale() == 'log' else ''}")


def score_vs_hyperparameters(
    trials: Sequence[Mapping[str, Any]],
    space: Mapping[str, Mapping[str, Any]],
    path: str | Path,
    dpi: int,
    metric: str,
    *,
    analysis: Mapping[str, Any] | None = None,
) -> Path:
    """One panel per searched hyperparameter: each complete trial's score against its value.

    Log x axis where the space is log; categorical values as a strip with the mean marked. The best
    config is a star; the shaded band is its score ± the noise floor (1 SE): configs inside it are not
    distinguishable from the best. Dotted vertical lines are the bounds of a numeric range. Where the
    analysis left out values of the other hyperparameters as not near the best (a collapsing learning
    rate), a dashed line gives the means the verdict reads: those with the others near the best.
    """
    names = list(space)
    done = _complete(trials)
    if analysis is None and done:
        analysis = analyze_search(trials, space, metric)
    verdicts = (analysis or {}).get("verdicts") or {}
    se = ((analysis or {}).get("noise_floor") or {}).get("se")
    ncols = max(1, min(3, len(names)))
    nrows = max(1, math.ceil(len(names) / ncols))
    with _style():
        fig = _new_figure(4.0 * ncols, 3.3 * nrows + 0.5)
        axes = list(np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel())
        for ax in axes[len(names) :]:
            ax.set_visible(False)
        if not done or not names:
            axes[0].set_visible(True)
            empty = "no hyperparameters searched" if not names else "no complete trials"
            axes[0].text(0.5, 0.5, empty, ha="center", va="center", transform=axes[0].transAxes)
            return save_png(fig, path, dpi)
        best = _best(done)
        for i, (ax, name) in enumerate(zip(axes, names, strict=False)):
            if se:
                ax.axhspan(
                    float(best["score"]) - se,
                    float(best["score"]) + se,
                    color=BAND_COLOR,
                    alpha=0.12,
                    linewidth=0,
                    zorder=0,
                    label=f"best ± 1 SE ({_fmt(se)})",
                )
            _param_panel(ax, name, space[name], done, best, verdicts.get(name))
            _score_axis(ax, metric)
            if i % ncols == 0:
                ax.set_ylabel(f"{metric} (inner validation)")
        _shared_legend(fig, axes[: len(names)])
        return save_png(fig, path, dpi)


# ------------------------------------------------------------------------------------ outer folds
def outer_fold_scores(
    outer_folds: Sequence[Mapping[str, Any]],
    path: str | Path,
    dpi: int,
    metric: str,
    *,
    optimistic: bool = False,
) -> Path:
    """Per outer fold: the best inner (validation) score and the outer test score, joined by a line whose
    length is the optimism of selecting on the inner folds; dashed lines are the means over folds.

    ``optimistic`` (plain CV, ``cv.depth`` 1): the folds chose the config and score it, so there is no
    inner/outer pair; the figure shows the chosen config's score per fold and their mean.
    """
    if optimistic:
        return _plain_fold_scores(outer_folds, path, dpi, metric)
    summary = optimism_summary(outer_folds, metric=metric)
    rows = summary["per_fold"]
    n = len(rows)
    with _style():
        fig = _new_figure(min(max(5.5, 0.7 * n + 3.0), 14), 4.2)
        ax = fig.subplots()
        if not rows:
            ax.text(0.5, 0.5, "no outer folds", ha="center", va="center", transform=ax.transAxes)
            return save_png(fig, path, dpi)
        x = np.arange(n)
        inner = [r["best_inner_score"] for r in rows]
        outer = [r["outer_score"] for r in rows]
        ax.vlines(
            x, np.minimum(inner, outer), np.maximum(inner, outer), color=BEST_COLOR, linewidth=1.2, zorder=2
        )
        ax.plot(
            x,
            inner,
            marker="o",
            markersize=8,
            linestyle="none",
            markerfacecolor="white",
            markeredgecolor=TRAIN_COLOR,
            markeredgewidth=1.8,
            zorder=3,
            label="best inner score (selection)",
        )
        ax.plot(
            x,
            outer,
            marker="o",
            markersize=8,
            linestyle="none",
            color=VAL_COLOR,
            zorder=3,
            label="outer test score",
        )
        ax.axhline(
            summary["mean_inner"],
            color=TRAIN_COLOR,
            linestyle="--",
            linewidth=1.2,
            zorder=1,
            label=f"mean inner {_fmt(summary['mean_inner'])}",
        )
        ax.axhline(
            summary["mean_outer"],
            color=VAL_COLOR,
            linestyle="--",
            linewidth=1.2,
            zorder=1,
            label=f"mean outer {_fmt(summary['mean_outer'])}",
        )
        if n <= 15:  # the optimism of each fold, beside its line
            for xi, r in zip(x, rows, strict=True):
                ax.annotate(
                    f"{r['optimism']:+.3f}",
                    (xi, (r["best_inner_score"] + r["outer_score"]) / 2),
                    xytext=(7, 0),
                    textcoords="offset points",
                    va="center",
                    fontsize=8,
                    color=BEST_COLOR,
                )
        ax.set_xticks(x, [str(r["fold"]) for r in rows])
        ax.set_xlim(-0.5, n - 0.5 + (0.4 if n <= 15 else 0))
        ax.grid(axis="x", visible=False)
        ax.set_xlabel("outer fold (numbers beside the lines: optimism = inner - outer)")
        ax.set_ylabel(metric)
        _score_axis(ax, metric)
        spread = f" ± {summary['se']:.3f} (SE)" if summary["se"] is not None else ""
        ax.set_title(
            "Nested CV: best inner score vs outer test score\n"
            f"mean optimism {summary['mean']:+.3f}{spread}, {summary['n_positive']} of {n} folds positive"
        )
        fig.legend(*ax.get_legend_handles_labels(), loc="outside upper center", ncols=2)
        return save_png(fig, path, dpi)


def _plain_fold_scores(folds: Sequence[Mapping[str, Any]], path: str | Path, dpi: int, metric: str) -> Path:
    rows = sorted(folds, key=lambda f: int(f["fold"]))
    with _style():
        fig = _new_figure(min(max(5.5, 0.7 * len(rows) + 3.0), 14), 4.0)
        ax = fig.subplots()
        if not rows:
            ax.text(0.5, 0.5, "no folds", ha="center", va="center", transform=ax.transAxes)
            return save_png(fig, path, dpi)
        x = np.arange(len(rows))
        scores = [float(r["outer_score"]) for r in rows]
        ax.plot(x, scores, marker="o", markersize=8, linestyle="none", color=VAL_COLOR, zorder=3)
        mean = float(np.mean(scores))
        ax.axhline(mean, color=VAL_COLOR, linestyle="--", linewidth=1.2, zorder=1)
        ax.set_xticks(x, [str(r["fold"]) for r in rows])
        ax.set_xlim(-0.5, len(rows) - 0.5)
        ax.grid(axis="x", visible=False)
        ax.set_xlabel("fold")
        ax.set_ylabel(metric)
        _score_axis(ax, metric)
        ax.set_title(
            "Plain CV (optimistic): the chosen config's score per fold\n"
            f"(dashed: mean {_fmt(mean)}; these folds also chose the config)"
        )
        return save_png(fig, path, dpi)


# ---------------------------------------------------------------------------------- trial history
def trial_history(trials: Sequence[Mapping[str, Any]], path: str | Path, dpi: int, metric: str) -> Path:
    """Score of each trial in the order evaluated, the running best, pruned and failed trials on a rail
    at the bottom (they have no score). The band is the final best ± its noise floor (1 SE)."""
    ordered = sorted(trials, key=lambda t: int(t["trial"]))
    done = _complete(ordered)
    pruned = [int(t["trial"]) for t in ordered if t.get("pruned")]
    failed = [int(t["trial"]) for t in ordered if not t.get("pruned") and not _finite(t.get("score"))]
    with _style():
        fig = _new_figure(min(max(6.5, 0.08 * len(ordered) + 5.0), 14), 4.2)
        ax = fig.subplots()
        if done:
            best = _best(done)
            se = noise_floor(best, metric)["se"]
            if se:
                ax.axhspan(
                    float(best["score"]) - se,
                    float(best["score"]) + se,
                    color=BAND_COLOR,
                    alpha=0.12,
                    linewidth=0,
                    zorder=0,
                    label=f"best ± 1 SE ({_fmt(se)})",
                )
            xs = [int(t["trial"]) for t in done]
            ys = [float(t["score"]) for t in done]
            ax.scatter(xs, ys, s=20, color=POINT_COLOR, alpha=0.8, zorder=3, label="complete trial")
            running = np.maximum.accumulate(ys)
            last = int(ordered[-1]["trial"])
            ax.step(
                xs + [last],
                list(running) + [running[-1]],
                where="post",
                color=VAL_COLOR,
                linewidth=1.6,
                zorder=4,
                label="best so far",
            )
            ax.plot(
                int(best["trial"]),
                float(best["score"]),
                marker="*",
                markersize=13,
                color=VAL_COLOR,
                markeredgecolor="black",
                markeredgewidth=0.6,
                linestyle="none",
                zorder=5,
                label=f"best (trial {int(best['trial'])})",
            )
        else:
            ax.text(0.5, 0.5, "no complete trials", ha="center", va="center", transform=ax.transAxes)
        rail = ax.get_xaxis_transform()  # x in data, y in axes: the rail sits at the bottom of the axes
        if pruned:
            ax.scatter(
                pruned,
                [0.03] * len(pruned),
                transform=rail,
                marker="x",
                s=28,
                color=PRUNED_COLOR,
                zorder=3,
                label="pruned (no score)",
                clip_on=False,
            )
        if failed:
            ax.scatter(
                failed,
                [0.03] * len(failed),
                transform=rail,
                marker="X",
                s=36,
                color=FAILED_COLOR,
                zorder=3,
                label="failed (no score)",
                clip_on=False,
            )
        if done and (pruned or failed):
            low, high = ax.get_ylim()  # leave room for the rail below the lowest score
            ax.set_ylim(low - 0.08 * (high - low), high)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("trial (order of evaluation)")
        ax.set_ylabel(f"{metric} (inner validation)")
        _score_axis(ax, metric)
        extra = f", {len(pruned)} pruned" if pruned else ""
        extra += f", {len(failed)} failed" if failed else ""
        ax.set_title(f"Trial history ({len(ordered)} trials{extra})")
        handles, labels = ax.get_legend_handles_labels()
        if handles:
            fig.legend(handles, labels, loc="outside upper center", ncols=min(len(handles), 3))
        return save_png(fig, path, dpi)
