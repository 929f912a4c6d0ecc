"""Report figures from saved results: learning curves, confusion matrix, per-class recall, reliability.

Figures are drawn on ``matplotlib.figure.Figure`` objects with the Agg canvas, never through pyplot: no
global backend switch (importing dlrig in a notebook leaves its backend alone), no figure registry to
leak into, nothing to close. Each figure is drawn under matplotlib's default style plus the few settings
below, so a user's matplotlibrc cannot change the output, and saved without the "Software" metadata
entry, so the same inputs give byte-identical PNGs (the report embeds them, and must be stable too).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.style
import numpy as np
from matplotlib import rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from dlrig.io import atomic_path

TRAIN_COLOR = "#1f77b4"
VAL_COLOR = "#d62728"
BEST_COLOR = "#555555"
BAR_COLOR = "#4c72b0"

_STYLE = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.titleweight": "bold",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e3e3e3",
    "grid.linewidth": 0.8,
    "legend.frameon": False,
    "savefig.facecolor": "white",
}


@contextlib.contextmanager
def _style() -> Iterator[None]:
    with matplotlib.style.context("default"), rc_context(_STYLE):
        yield


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, path: str | Path, dpi: int) -> Path:
    """Render ``fig`` to ``path`` atomically; no metadata that varies between runs."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, metadata={"Software": None})
    return path


# ---------------------------------------------------------------------------------- learning curves
def _series(rows: Sequence[Mapping[str, Any]], key: str) -> tuple[list[int], list[float]]:
    pairs = [
        (int(r["epoch"]), float(r[key]))
        for r in rows
        if r.get(key) is not None and math.isfinite(float(r[key]))
    ]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def learning_curves(history: Mapping[str, Any], path: str | Path, dpi: int) -> Path:
    """Loss, accuracy and learning rate per epoch; train vs validation, the best epoch marked.

    ``history`` is the content of ``reports/train/history.json`` (``val_*`` may be absent when early
    stopping is off).
    """
    rows = list(history.get("history") or [])
    best = history.get("best_epoch")
    marker = {"marker": "o", "markersize": 3} if len(rows) <= 40 else {}
    with _style():
        fig = _new_figure(12, 3.6)
        axes = fig.subplots(1, 3)
        panels = [
            (axes[0], "Loss", "loss"),
            (axes[1], "Accuracy", "accuracy"),
        ]
        for ax, title, name in panels:
            ax.set_title(title)
            for split, color in (("train", TRAIN_COLOR), ("val", VAL_COLOR)):
                x, y = _series(rows, f"{split}_{name}")
                if x:
                    label = "train" if split == "train" else "validation"
                    ax.plot(x, y, color=color, label=label, linewidth=1.6, **marker)
                    if best is not None and best in x:
                        ax.plot(
                            best,
                            y[x.index(best)],
                            marker="*",
                            markersize=13,
                            color=color,
                            markeredgecolor="black",
                            markeredgewidth=0.6,
                            zorder=5,
                            linestyle="none",
                        )
            if name == "accuracy":
                ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax_lr = axes[2]
        ax_lr.set_title("Learning rate")
        x, y = _series(rows, "lr")
        if x:
            ax_lr.plot(x, y, color="#2ca02c", linewidth=1.6, **marker)
            ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
            ax_lr.set_ylim(bottom=0)
        for ax in axes:
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if best is not None and rows:
                ax.axvline(best, color=BEST_COLOR, linestyle="--", linewidth=1, label=f"best epoch ({best})")
            if not rows:
                ax.text(0.5, 0.5, "no epochs recorded", ha="center", va="center", transform=ax.transAxes)
        # One legend for all panels, above them, so it never hides a curve.
        handles = {}
        for ax in axes:
            for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
                handles.setdefault(label, handle)
        if handles:
            fig.legend(handles.values(), handles.keys(), loc="outside upper center", ncols=len(handles))
        return save_png(fig, path, dpi)


# --------------------------------------------------------------------------------- confusion matrix
def confusion_matrix_figure(
    cm: Sequence[Sequence[int]] | np.ndarray, classes: Sequence[str], path: str | Path, dpi: int
) -> Path:
    """Counts in the cells, coloured by share of the true class (row-normalised).

    Rows are true classes, columns predicted classes.
    """
    counts = np.asarray(cm, dtype=np.int64)
    k = len(classes)
    if counts.shape != (k, k):
        raise ValueError(f"confusion matrix must be {k}x{k} for {k} classes (got {list(counts.shape)})")
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros(counts.shape, float), where=totals > 0)
    names = [str(c) for c in classes]
    long_names = max((len(n) for n in names), default=0) > 4
    side = min(max(4.2, 0.5 * k + 2.2), 14)
    with _style(), rc_context({"axes.grid": False}):
        fig = _new_figure(side + 1.0, side)
        ax = fig.subplots()
        image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
        colorbar = fig.colorbar(image, ax=ax, shrink=0.8, format=PercentFormatter(1.0))
        colorbar.set_label("share of the true class")
        if k <= 30:
            fontsize = 10 if k <= 10 else (8 if k <= 20 else 6)
            for i in range(k):
                for j in range(k):
                    color = "white" if share[i, j] > 0.55 else ("black" if counts[i, j] else "#9a9a9a")
                    ax.text(j, i, str(counts[i, j]), ha="center", va="center", color=color, fontsize=fontsize)
        ax.set_xticks(
            range(k), names, rotation=45 if long_names else 0, ha="right" if long_names else "center"
        )
        ax.set_yticks(range(k), names)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(f"Confusion matrix (n = {int(counts.sum())})")
        ax.tick_params(length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
        return save_png(fig, path, dpi)


# --------------------------------------------------------------------------------- per-class recall
def per_class_recall_figure(
    recall: Mapping[str, float | None], path: str | Path, dpi: int, *, balanced_accuracy: float | None = None
) -> Path:
    """One bar per class; a line at balanced accuracy (the mean recall over classes that occur).

    A class with recall ``None`` (absent from the test set) gets no bar and an "n/a" label.
    ``balanced_accuracy`` defaults to the mean of the recalls given.
    """
    names = [str(c) for c in recall]
    values = [None if v is None else float(v) for v in recall.values()]
    known = [v for v in values if v is not None]
    if balanced_accuracy is None and known:
        balanced_accuracy = float(np.mean(known))
    k = len(names)
    long_names = max((len(n) for n in names), default=0) > 4
    with _style():
        fig = _new_figure(min(max(5.5, 0.45 * k + 2.5), 16), 4.0)
        ax = fig.subplots()
        x = np.arange(k)
        heights = [0.0 if v is None else v for v in values]
        ax.bar(x, heights, color=BAR_COLOR, width=0.7, zorder=2)
        # Values go in the tick labels, where neither the bars nor the balanced-accuracy line can hide them.
        shown = ["n/a" if v is None else f"{v:.0%}" for v in values]
        form = "{} ({})" if long_names else "{}\n{}"
        ticks = [form.format(n, v) for n, v in zip(names, shown, strict=True)] if k <= 30 else names
        title = "Recall per class"
        if balanced_accuracy is not None:
            # Named in the title rather than a legend, which would sit on top of some bar.
            ax.axhline(balanced_accuracy, color=VAL_COLOR, linestyle="--", linewidth=1.2, zorder=3)
            title += f"\n(dashed line: balanced accuracy {balanced_accuracy:.1%})"
        ax.set_xticks(
            x,
            ticks,
            rotation=45 if long_names else 0,
            ha="right" if long_names else "center",
            fontsize=8 if k > 12 else None,
        )
        ax.set_ylim(0, 1.05)
        ax.set_yticks(np.linspace(0, 1, 6))
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.grid(axis="x", visible=False)
        ax.set_xlabel("class and its recall")
        ax.set_ylabel("recall (test)")
        ax.set_title(title)
        return save_png(fig, path, dpi)


# ------------------------------------------------------------------------------- reliability diagram
def _bins(rows: Sequence[Mapping[str, Any]] | None) -> list[Mapping[str, Any]]:
    """The non-empty bins of a reliability curve (``dlrig.evaluate.calibration.reliability_curve`` rows)."""
    return [
        r
        for r in rows or []
        if int(r.get("count") or 0) > 0 and r.get("confidence") is not None and r.get("accuracy") is not None
    ]


def reliability_figure(
    before: Sequence[Mapping[str, Any]],
    path: str | Path,
    dpi: int,
    *,
    after: Sequence[Mapping[str, Any]] | None = None,
    ece_before: float | None = None,
    ece_after: float | None = None,
    temperature: float | None = None,
) -> Path:
    """Reliability diagram: mean confidence against accuracy per confidence bin, before and after
    temperature scaling, with the diagonal a calibrated model lies on.

    ``before``/``after`` are the rows ``reports/plots/reliability_{before,after}.json`` hold
    (``bin_low``, ``bin_high``, ``confidence``, ``accuracy``, ``count``); empty bins are skipped. A point's
    area grows with its bin's sample count; the lower panel gives the counts themselves.
    """
    curves = [("before", _bins(before), VAL_COLOR, ece_before, None)]
    if after is not None:
        curves.append(("after", _bins(after), TRAIN_COLOR, ece_after, temperature))
    rows = [r for _, bins, *_ in curves for r in bins]
    biggest = max((int(r["count"]) for r in rows), default=1)
    lo = math.floor(10 * min((float(r["bin_low"]) for r in rows), default=0.0)) / 10
    width = min((float(r["bin_high"]) - float(r["bin_low"]) for r in rows), default=0.1)
    with _style():
        fig = _new_figure(6.4, 6.2)
        ax, ax_n = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
        ax.plot([lo, 1], [lo, 1], color=BEST_COLOR, linestyle="--", linewidth=1, label="perfectly calibrated")
        for i, (name, bins, color, ece, t) in enumerate(curves):
            label = "test predictions" if after is None else f"{name} temperature scaling"
            if t is not None:
                label += f" (T = {t:.2f})"
            if ece is not None:
                label += f", ECE {ece:.2%}"
                # Said on the figure too: a scaled curve that is worse must not read as the better one.
                if name == "after" and ece_before is not None and f"{ece:.2%}" != f"{ece_before:.2%}":
                    label += " (worse)" if ece > ece_before else " (better)"
            x = [float(r["confidence"]) for r in bins]
            y = [float(r["accuracy"]) for r in bins]
            n = [int(r["count"]) for r in bins]
            ax.plot(x, y, color=color, linewidth=0.9, alpha=0.5, zorder=3)
            ax.scatter(
                x,
                y,
                s=[20 + 380 * c / biggest for c in n],
                color=color,
                alpha=0.75,
                edgecolors="white",
                linewidths=0.6,
                zorder=4,
                label=label,
            )
            # Counts per bin, side by side when both curves are drawn.
            shift = (i - (len(curves) - 1) / 2) * width / len(curves)
            centres = [(float(r["bin_low"]) + float(r["bin_high"])) / 2 + shift for r in bins]
            ax_n.bar(centres, n, width=0.9 * width / len(curves), color=color, alpha=0.75, zorder=2)
        if not rows:
            ax.text(0.5, 0.5, "no predictions", ha="center", va="center", transform=ax.transAxes)
        pad = 0.02 * (1 - lo)  # room for the points on the edges
        ax.set_xlim(lo - pad, 1 + pad)
        ax.set_ylim(-0.03, 1.03)
        ax.set_ylabel("accuracy in the bin")
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        # Above the panels, where it cannot hide a point; it carries the title.
        fig.legend(
            loc="outside upper center",
            ncols=1,
            fontsize=9,
            markerscale=0.6,
            title="Reliability on the test split",
            title_fontproperties={"weight": "bold", "size": 11},
        )
        if rows:
            ax_n.set_yscale("log")
        ax_n.grid(axis="x", visible=False)
        ax_n.set_ylabel("samples (log)" if rows else "samples")
        ax_n.set_xlabel("mean confidence in the bin (probability of the predicted class)")
        ax_n.xaxis.set_major_formatter(PercentFormatter(1.0))
        return save_png(fig, path, dpi)


# ------------------------------------------------------------------------------- precision-recall
def precision_recall_figure(
    curve: Sequence[Mapping[str, Any]],
    path: str | Path,
    dpi: int,
    *,
    macro_ap: float | None = None,
    prevalence: float | None = None,
) -> Path:
    """The micro-averaged precision-recall curve (``reports/plots/precision_recall.json``: interpolated
    precision at each recall level), its macro average precision in the title, and the chance line (the
    share of positive (sample, class) pairs, 1/K for K classes) that a model guessing at random sits on."""
    rows = [r for r in curve if r.get("recall") is not None and r.get("precision") is not None]
    with _style():
        fig = _new_figure(5.6, 4.6)
        ax = fig.subplots()
        if rows:
            ax.step([float(r["recall"]) for r in rows], [float(r["precision"]) for r in rows], where="post",
                    color=TRAIN_COLOR, linewidth=1.8, label="test, micro-averaged over classes")
        else:
            ax.text(0.5, 0.5, "no precision-recall data", ha="center", va="center", transform=ax.transAxes)
        if prevalence is not None:
            ax.axhline(prevalence, color=BEST_COLOR, linestyle="--", linewidth=1,
                       label=f"chance ({prevalence:.0%} of the pairs are positive)")
        ax.set_xlim(0, 1.01)
        ax.set_ylim(0, 1.03)
        ax.xaxis.set_major_formatter(PercentFormatter(1.0))
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.set_xlabel("recall (share of the true (sample, class) pairs found)")
        ax.set_ylabel("precision (best at this recall or more)")
        title = "Precision-recall on the test split"
        if macro_ap is not None:
            title += f"\nmacro average precision {macro_ap:.3f}"
        ax.set_title(title)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="center left", fontsize=9)  # a good curve hugs the top, chance the bottom
        return save_png(fig, path, dpi)


# ---------------------------------------------------------------------- per-fold learning curves
def fold_learning_curves(folds: Sequence[Mapping[str, Any]], path: str | Path, dpi: int) -> Path | None:
    """Validation (and train) loss per epoch of each outer fold's refit, one colour per fold.

    Each fold record holds ``refit.history`` (rows as in ``reports/train/history.json``) and
    ``refit.best_epoch`` when the train stage saved them; None (no figure) when no record has one.
    """
    refits = [(f["fold"], f.get("refit") or {}) for f in sorted(folds, key=lambda f: int(f["fold"]))]
    curves = [(fold, r["history"], r.get("best_epoch")) for fold, r in refits if r.get("history")]
    if not curves:
        return None
    colors = [f"C{i % 10}" for i in range(len(curves))]
    with _style():
        fig = _new_figure(12, 3.8)
        axes = fig.subplots(1, 2)
        for ax, name, title in ((axes[0], "loss", "Loss"), (axes[1], "accuracy", "Accuracy")):
            ax.set_title(f"{title} per epoch, each outer fold's refit")
            for (fold, rows, best), color in zip(curves, colors, strict=True):
                x, y = _series(rows, f"train_{name}")
                if x:
                    ax.plot(x, y, color=color, linewidth=1, linestyle=":", alpha=0.8)
                x, y = _series(rows, f"val_{name}")
                if x:
                    ax.plot(x, y, color=color, linewidth=1.6, label=f"fold {fold}")
                    if best in x:
                        ax.plot(best, y[x.index(best)], marker="*", markersize=11, color=color,
                                markeredgecolor="black", markeredgewidth=0.5, linestyle="none", zorder=5)
            if name == "accuracy":
                ax.yaxis.set_major_formatter(PercentFormatter(1.0))
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        handles, labels = axes[0].get_legend_handles_labels()
        if handles:
            fig.legend(handles, labels, loc="outside upper center", ncols=min(len(handles), 8),
                       title="solid: validation (early-stopping rows), dotted: train; star: the epoch kept")
        return save_png(fig, path, dpi)
