"""The distillation study's section on the studies page (results of dlrig.studies.distillation): per-fold
held-out accuracy of the teacher, the student from labels and the distilled student, and the corrected
resampled t-test on the students' paired differences."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

from markupsafe import Markup
from matplotlib.ticker import PercentFormatter

from dlrig.errors import UserError
from dlrig.report.figures import _new_figure, _style, save_png
from dlrig.report.markup import num, pvalue, render
from dlrig.report.studies import Figures, study


def folds_figure(teacher: list[float], labels: list[float], distilled: list[float], path: Path,
                 dpi: int) -> Path:
    """Held-out accuracy per fold: the two students joined by a line (the paired difference), the teacher."""
    x = list(range(1, len(labels) + 1))
    with _style():
        fig = _new_figure(7.0, 4.0)
        ax = fig.subplots()
        for i, a, b in zip(x, labels, distilled, strict=True):
            ax.plot([i - 0.12, i + 0.12], [a, b], color="tab:gray", linewidth=1, zorder=1)
        ax.scatter([i - 0.12 for i in x], labels, color="tab:blue", label="student from labels", zorder=2)
        ax.scatter([i + 0.12 for i in x], distilled, color="tab:orange", label="student distilled", zorder=2)
        ax.scatter(x, teacher, color="tab:green", marker="^", label="teacher", zorder=2)
        ax.set_xticks(x, [str(i) for i in x])
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=1))
        ax.set_xlabel("fold (held-out rows of the training split)")
        ax.set_ylabel("held-out accuracy")
        ax.legend(fontsize="small", loc="lower right")
        return save_png(fig, path, dpi)


def _check(results: Mapping[str, Any]) -> None:
    ok = all(isinstance(results.get(k), dict) and isinstance(results[k].get("scores"), list)
             for k in ("teacher", "labels", "distilled")) and isinstance(results.get("test"), dict)
    if not ok:
        raise UserError("expected 'teacher', 'labels', 'distilled' (each with 'scores') and 'test'")


def _p(shown: str) -> str:
    return f"p {shown}" if shown.startswith("<") or shown == "n/a" else f"p = {shown}"


def _overrides(value: Any) -> str:
    return ", ".join(f"{k}={v}" for k, v in (value or {}).items()) or "the pipeline's config"


@study("distillation", "Knowledge distillation: a small student from labels vs from a teacher")
def distillation_section(results: Mapping[str, Any], figures: Figures) -> Markup:
    _check(results)
    t, lab, dis, test = results["teacher"], results["labels"], results["distilled"], results["test"]
    png = figures.add(
        "folds", partial(folds_figure, t["scores"], lab["scores"], dis["scores"]),
        "Held-out accuracy per fold of the teacher and the two students",
        "Held-out accuracy per fold: the student trained on the labels and the distilled one (same rows, "
        "same seed; the grey line is their paired difference) and the fold's teacher, trained on that "
        "fold's training rows only.",
    )
    folds = list(zip(range(1, len(lab["scores"]) + 1), map(num, t["scores"]), map(num, lab["scores"]),
                     map(num, dis["scores"]), [f"{(b - a) * 100:+.2f}" for a, b in
                                               zip(lab["scores"], dis["scores"], strict=True)], strict=True))
    d = results.get("distill", {})
    return render(
        "study_distillation.html.j2", png=png, folds=folds, teacher=_overrides(t.get("overrides")),
        student=_overrides(results.get("student", {}).get("overrides")), temperature=d.get("temperature"),
        alpha=d.get("alpha"), means=(num(t.get("mean")), num(lab.get("mean")), num(dis.get("mean"))),
        diff=f"{test.get('mean_difference', 0) * 100:+.2f}", p=_p(pvalue(test.get("p_value"))),
        test_name=test.get("name"), n_train=test.get("n_train"), n_test=test.get("n_test"),
    )
