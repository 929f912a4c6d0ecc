"""The report's "Compared with baselines" section, from ``compare.json`` (written by the compare stage with
``dlrig.evaluate.baselines.compare_with_baselines``).

Per baseline, every test the stage ran, each with its own plain-language verdict: the corrected resampled
t-test on the outer folds (the one to trust), the naive t-test beside it for contrast, the Bayesian
correlated t-test, McNemar on the held-out test split, and Dietterich's 5x2cv when it was run. The
sentences and numbers are computed here; the markup is ``templates/baselines.html.j2``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from markupsafe import Markup

from dlrig.errors import UserError
from dlrig.report.markup import finite, num, pct, pvalue, render

FOLD_TESTS = ("mean", "corrected_t", "naive_t", "bayes")


def check_compare(path: Path, compare: Mapping[str, Any]) -> None:
    """Refuse a compare.json without the keys the section reads (optional: ``test``, ``five_by_two``)."""
    missing = [k for k in ("metric", "reference", "baselines") if k not in compare]
    if missing or not isinstance(compare["baselines"], dict):
        raise UserError(f"{path}: lacks {missing or ['baselines']} (re-run the compare stage)")
    for name, entry in compare["baselines"].items():
        folds = entry.get("folds") if isinstance(entry, dict) else None
        if not isinstance(folds, dict) or any(k not in folds for k in FOLD_TESTS):
            raise UserError(
                f"{path}: baseline {name!r} must hold 'folds' with {list(FOLD_TESTS)} "
                "(re-run the compare stage)"
            )


def _t(result: Mapping[str, Any]) -> str:
    stat = result.get("statistic")
    shown = f"t = {stat:.2f}" if finite(stat) else "t = n/a"
    return f"{shown}, p = {pvalue(result.get('p_value'))} ({result.get('dof', '?')} dof)"


def _why_corrected(k: int | None) -> str:
    shared = f"any two share {k - 2} of the {k - 1} parts each trains on" if k and k > 2 else "they overlap"
    return (
        "Trust the corrected test: the outer folds' training sets overlap "
        f"({shared}), so the fold scores are correlated and the naive t-test, which treats them as "
        "independent, underestimates the variance and finds “significant” differences far more often than "
        "its nominal rate; the corrected resampled t-test (Nadeau & Bengio) widens the variance by "
        "n_test/n_train for that overlap."
    )


def _baseline_tests(name: str, entry: Mapping[str, Any], reference: str, metric: str) -> dict[str, Any]:
    """Every test the compare stage ran against one baseline: (test, result, verdict) rows."""
    folds = entry["folds"]
    mean, corrected, naive, bayes = (folds[k] for k in FOLD_TESTS)
    k = corrected.get("k")
    ours, theirs = mean.get(reference), mean.get(name)
    diff = f" (difference {ours - theirs:+.4f})" if finite(ours) and finite(theirs) else ""
    rows = [
        (
            f"Cross-validation means ({k} outer folds, {metric})",
            f"{reference} {num(ours)}, {name} {num(theirs)}{diff}",
            "",
        ),
        ("Corrected resampled t-test (the one to trust)", _t(corrected), corrected.get("verdict", "")),
        (
            "Naive paired t-test, for contrast only: anti-conservative on CV scores",
            _t(naive),
            naive.get("verdict", ""),
        ),
        (
            f"Bayesian correlated t-test (practically equivalent: |difference| < {bayes.get('rope', '?')})",
            f"P({reference} better) {num(bayes.get('p_a_better'), 2)}, P(equivalent) "
            f"{num(bayes.get('p_rope'), 2)}, P({name} better) {num(bayes.get('p_b_better'), 2)}",
            bayes.get("verdict", ""),
        ),
    ]
    test = entry.get("test")
    if isinstance(test, dict):
        acc = entry.get("test_accuracy") or {}
        rows.append(
            (
                f"McNemar on the held-out test split ({num(test.get('n'))} samples)",
                f"p = {pvalue(test.get('p_value'))} ({test.get('method', '?')}); {reference} right where "
                f"{name} is wrong: {num(test.get('b'))}, the reverse: {num(test.get('c'))}; test accuracy "
                f"{reference} {pct(acc.get(reference))}, {name} {pct(acc.get(name))}",
                test.get("verdict", ""),
            )
        )
    five = entry.get("five_by_two")
    if isinstance(five, dict):
        rows.append(("5x2cv paired t-test (Dietterich), training split", _t(five), five.get("verdict", "")))
    return {"name": name, "estimator": entry.get("estimator", "?"), "rows": rows}


def baselines_section(compare: Mapping[str, Any], cv_metric: str) -> Markup:
    reference, metric, baselines = compare["reference"], compare["metric"], compare["baselines"]
    if not baselines:
        return render("baselines.html.j2", overview=[])
    k = next(iter(baselines.values()))["folds"]["corrected_t"].get("k")
    intro = (
        f"The {reference} model against each baseline, on the same {k} outer folds of the training split "
        f"(each model refit on every outer-train, scored on its outer-test) and on the held-out test split."
    )
    if metric != cv_metric:
        intro += (
            f" Compared on {metric}, not {cv_metric}: the label-only baselines give no probabilities to "
            "score."
        )
    overview = [
        (
            name,
            num(e["folds"]["mean"].get(name)),
            num(e["folds"]["mean"].get(reference)),
            pvalue(e["folds"]["corrected_t"].get("p_value")),
            e["folds"]["corrected_t"].get("verdict", ""),
        )
        for name, e in baselines.items()
    ]
    return render(
        "baselines.html.j2",
        intro=intro,
        metric=metric,
        reference=reference,
        overview=overview,
        why_corrected=_why_corrected(k),
        details=[_baseline_tests(name, e, reference, metric) for name, e in baselines.items()],
    )
