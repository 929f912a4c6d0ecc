"""The grokking study's section on the studies page (results of dlrig.studies.grokking)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from markupsafe import Markup
from matplotlib.ticker import PercentFormatter

from dlrig.errors import UserError
from dlrig.report.figures import _new_figure, _style, save_png
from dlrig.report.markup import finite, num, render
from dlrig.report.studies import Figures, study

_COLOURS = {"decay": "tab:blue", "control": "tab:red"}
_OPS = {"add": "+", "sub": "−", "mul": "×", "div": "÷"}


def _band(ax: Any, x: Sequence[float], runs: Sequence[Sequence[float]], colour: str, style: str,
          label: str) -> None:
    """Median over seeds as a line, min-max as a shaded band."""
    values = np.asarray(runs, dtype=float)
    ax.fill_between(x, values.min(axis=0), values.max(axis=0), color=colour, alpha=0.18, linewidth=0)
    ax.plot(x, np.median(values, axis=0), color=colour, linestyle=style, linewidth=1.6, label=label)


def curves_figure(results: Mapping[str, Any], path: Path, dpi: int) -> Path:
    """Left: train and test accuracy vs step (log x) for both settings; right: total weight norm."""
    steps, curves, setup = results["steps"], results["curves"], results["setup"]
    names = {"decay": f"weight decay {setup['weight_decay']:g}",
             "control": f"weight decay {setup['control_weight_decay']:g}"}
    with _style():
        fig = _new_figure(10.0, 4.0)
        acc, norm = fig.subplots(1, 2, width_ratios=[3, 2])
        for key, name in names.items():
            colour = _COLOURS[key]
            _band(acc, steps, curves[key]["train"], colour, "--", f"train, {name}")
            _band(acc, steps, curves[key]["test"], colour, "-", f"test, {name}")
            _band(norm, steps, curves[key]["norm"], colour, "-", name)
        for ax in (acc, norm):
            ax.set_xscale("log")
            ax.set_xlabel("step (full batch, log scale)")
        acc.axhline(setup["chance"], color="0.5", linewidth=0.8, linestyle=":")
        acc.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        acc.set_ylabel("accuracy")
        acc.legend(loc="center left", fontsize="small")
        norm.set_ylabel("total weight norm (L2)")
        norm.legend(fontsize="small")
        return save_png(fig, path, dpi)


def _check(results: Mapping[str, Any]) -> None:
    ok = all(isinstance(results.get(k), t) for k, t in
             (("setup", dict), ("steps", list), ("curves", dict), ("runs", list)))
    ok = ok and all(isinstance(results["curves"].get(k), dict) for k in ("decay", "control"))
    ok = ok and {"p", "op", "seeds", "weight_decay", "control_weight_decay", "chance", "train_threshold",
                 "test_threshold"} <= set(results["setup"])
    if not ok:
        raise UserError("expected 'setup', 'steps', 'curves' (with 'decay' and 'control') and 'runs'")


@study("grokking", "Grokking: generalisation long after memorisation")
def grokking_section(results: Mapping[str, Any], figures: Figures) -> Markup:
    """dlrig.studies.grokking: the accuracy/weight-norm figure and the per-seed crossing steps."""
    _check(results)
    setup = results["setup"]
    op = _OPS.get(setup["op"], setup["op"])
    png = figures.add(
        "curves", partial(curves_figure, results),
        "Train and test accuracy and weight norm against step, with and without weight decay",
        f"Accuracy on (a {op} b) mod {setup['p']} against training step (log scale): dashed train, "
        f"solid test, line the median and band the min-max over {setup['seeds']} seeds; dotted: chance. "
        "Right: the total L2 norm of the weights.",
    )
    rows = []
    for r in results["runs"]:
        a, b = r.get("train_step"), r.get("test_step")
        delay = f"{b / a:.1f}x" if finite(a) and finite(b) and a else "n/a"
        rows.append((f"{r.get('weight_decay', 'n/a'):g}" if finite(r.get("weight_decay")) else "n/a",
                     r.get("seed"), a if a is not None else "never", b if b is not None else "never", delay,
                     num(r.get("final_train"), 3), num(r.get("final_test"), 3), num(r.get("final_norm"), 1)))
    return render("study_grokking.html.j2", setup=setup, png=png, rows=rows, op=op,
                  train_threshold=f"{setup['train_threshold']:.0%}",
                  test_threshold=f"{setup['test_threshold']:.0%}")
