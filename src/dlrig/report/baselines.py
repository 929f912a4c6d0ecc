"""The report's "Compared with baselines" section, from ``compare.json`` (written by the compare stage with
``dlrig.evaluate.baselines.compare_with_baselines``).

Per baseline, every test the stage ran, each with its own plain-language verdict: the corrected resampled
t-test on the outer folds (the one to trust), the naive t-test beside it for contrast, the Bayesian
correlated t-test, McNemar on the held-out test split, and Dietterich's 5x2cv when it was run.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dlrig.errors import UserError
from dlrig.report.markup import esc, finite, num, pct, pvalue

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


def _baseline_table(name: str, entry: Mapping[str, Any], reference: str, metric: str) -> str:
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
    trust = ' class="trust"'  # the corrected t-test's row
    body = "".join(
        f"<tr{trust if i == 1 else ''}><td>{esc(test_name)}</td><td>{esc(result)}</td>"
        f"<td>{esc(verdict)}</td></tr>"
        for i, (test_name, result, verdict) in enumerate(rows)
    )
    return (
        f"<h3>{esc(reference)} vs <code>{esc(name)}</code> ({esc(entry.get('estimator', '?'))})</h3>"
        '<table class="tests"><thead><tr><th>Test</th><th>Result</th><th>Verdict</th></tr></thead>'
        f"<tbody>{body}</tbody></table>"
    )


def baselines_section(compare: Mapping[str, Any], cv_metric: str) -> str:
    reference, metric, baselines = compare["reference"], compare["metric"], compare["baselines"]
    head = '<section id="baselines"><h2>Compared with baselines</h2>'
    if not baselines:
        return head + "<p>No baselines were configured (compare.baselines is empty).</p></section>"
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
    overview = "".join(
        f"<tr><td><code>{esc(name)}</code></td>"
        f'<td class="num">{esc(num(e["folds"]["mean"].get(name)))}</td>'
        f'<td class="num">{esc(num(e["folds"]["mean"].get(reference)))}</td>'
        f'<td class="num">{esc(pvalue(e["folds"]["corrected_t"].get("p_value")))}</td>'
        f"<td>{esc(e['folds']['corrected_t'].get('verdict', ''))}</td></tr>"
        for name, e in baselines.items()
    )
    table = (
        f'<table><thead><tr><th>Baseline</th><th class="num">Its CV {esc(metric)}</th>'
        f'<th class="num">{esc(reference)} CV {esc(metric)}</th><th class="num">Corrected t-test p</th>'
        f"<th>Verdict (corrected t-test)</th></tr></thead><tbody>{overview}</tbody></table>"
    )
    details = "".join(_baseline_table(name, e, reference, metric) for name, e in baselines.items())
    return f"{head}<p>{esc(intro)}</p>{table}<p>{esc(_why_corrected(k))}</p>{details}</section>"
