"""The transfer study's section on the studies page (results: :mod:`dlrig.studies.transfer`).

A figure of target test accuracy against labelled samples per class (log scale), one line per transfer mode
and feature extractor with its min-max band over seeds; a table of the same means; and the differences to
scratch at each size (paired by seed, 95% t interval). The verdict sentence comes from the results.
"""

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


def curves_figure(results: Mapping[str, Any], path: Path, dpi: int) -> Path:
    """Accuracy vs samples per class: a line per method (dashed: fixed features + logistic regression)
    and its min-max band over seeds."""
    x = [float(n) for n in results["per_class"]]
    with _style():
        fig = _new_figure(7.8, 4.4)
        ax = fig.subplots()
        for method in results["methods"]:
            cells = results["curves"][method]
            line = "--" if method.endswith("logreg") else "-"
            (h,) = ax.plot(x, [c["mean"] for c in cells], line, marker="o", markersize=4, linewidth=1.6,
                           label=method)
            ax.fill_between(x, [c["min"] for c in cells], [c["max"] for c in cells], color=h.get_color(),
                            alpha=0.15, linewidth=0)
        ax.set_xscale("log")
        ax.set_xticks(x, [f"{int(v)}" + (" (all)" if s == "all" else "") for v, s in zip(x, results["sizes"],
                                                                                          strict=True)])
        ax.minorticks_off()
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        ax.set_xlabel("labelled target samples per class (log scale)")
        ax.set_ylabel("target test accuracy")
        fig.legend(loc="outside right upper")
        return save_png(fig, path, dpi)


def _check(results: Mapping[str, Any]) -> None:
    keys = ("methods", "curves", "vs_scratch", "per_class", "sizes", "seeds", "source", "target")
    missing = [k for k in keys if k not in results]
    if missing:
        raise UserError(f"expected {missing} in the transfer study's results")


def _diff(d: Mapping[str, Any]) -> str:
    if not all(finite(d.get(k)) for k in ("diff", "ci_low", "ci_high")):
        return "n/a"
    return f"{100 * d['diff']:+.1f} [{100 * d['ci_low']:+.1f}, {100 * d['ci_high']:+.1f}]"


@study("transfer", "Transfer learning, fine-tuning and feature extraction (nothing downloaded)")
def transfer_section(results: Mapping[str, Any], figures: Figures) -> Markup:
    _check(results)
    src, tgt = results["source"], results["target"]
    pairs = zip(results["per_class"], results["sizes"], strict=True)
    columns = [f"{n}" + (" (all)" if s == "all" else "") for n, s in pairs]
    curves: Sequence[tuple[str, list[str]]] = [
        (m, [num(c["mean"], 3) for c in results["curves"][m]]) for m in results["methods"]]
    diffs = [(m, [_diff(d) for d in rows]) for m, rows in results["vs_scratch"].items()]
    title = (f"Target test accuracy vs labelled samples per class (digits {', '.join(tgt['classes'])}; "
             f"body pretrained on {', '.join(src['classes'])})")
    png = figures.add("curves", partial(curves_figure, results), title,
                      f"{title}: one line per method, mean over {results['seeds']} seeds with the min-max "
                      "band; dashed lines are fixed features + logistic regression.")
    return render("study_transfer.html.j2", src=src, tgt=tgt, seeds=results["seeds"], columns=columns,
                  curves=curves, diffs=diffs, png=png, transfer=results.get("transfer") or {})
