"""The report's verdicts for the run in issue 8: lr = 0.1 collapses, dropout makes no difference near the
best. The section must say permissive, show both spreads and what was left out, and print neither
"widen the range upward" nor "tune them together"; when dropout 0.2 wins everywhere the warning returns."""

from __future__ import annotations

from markupsafe import escape

from dlrig.report.selection import selection_section
from dlrig.select.analysis import analyze_search

SPACE = {
    "model.dropout": {"type": "float", "low": 0.0, "high": 0.2, "log": False, "values": [0.0, 0.2]},
    "optim.lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True, "values": [1e-4, 1e-3, 1e-2, 1e-1]},
}
# (dropout, lr) -> inner-fold accuracies of the reported run (reports/cv/summary.json at the time).
FOLDS = {
    (0.0, 1e-4): [0.933194, 0.881002, 0.924843],
    (0.0, 1e-3): [0.974948, 0.951983, 0.974948],
    (0.0, 1e-2): [0.960334, 0.956159, 0.979123],
    (0.0, 1e-1): [0.762004, 0.636743, 0.772443],
    (0.2, 1e-4): [0.91858, 0.858038, 0.91858],
    (0.2, 1e-3): [0.974948, 0.958246, 0.977035],
    (0.2, 1e-2): [0.958246, 0.951983, 0.979123],
    (0.2, 1e-1): [0.569937, 0.697286, 0.776618],
}


def trials(shift_dropout=0.0):
    """The run's trials; ``shift_dropout`` lifts every dropout-0.2 fold score (0.2 then wins everywhere)."""
    out = []
    for i, ((d, lr), folds) in enumerate(FOLDS.items()):
        scores = [s + (shift_dropout if d else 0.0) for s in folds]
        config = {"model.dropout": d, "optim.lr": lr}
        out.append(
            {"trial": i, "config": config, "score": sum(scores) / 3, "scores": scores, "n_val": [479] * 3}
        )
    return out


def section(found):
    analysis = analyze_search(found, SPACE, "accuracy")
    best = max(found, key=lambda t: t["score"])
    cv = {
        "metric": "accuracy",
        "depth": 2,
        "final": {"config": best["config"], "inner_score": best["score"], "search": {"trials": found}},
        "space": SPACE,
        "analysis": analysis,
        "optimism_summary": None,
    }
    fold = {"fold": 0, "best_config": best["config"], "best_inner_score": 0.97, "outer_score": 0.96}
    pngs = dict.fromkeys(("cv_folds", "cv_params", "cv_history"), b"png")
    return selection_section(cv, [fold], {}, pngs), analysis


def test_collapsed_run_reads_permissive_with_its_reasons():
    html, analysis = section(trials())
    assert '<td><code>model.dropout</code></td><td><span class="badge permissive">permissive</span>' in html
    assert '<td><code>optim.lr</code></td><td><span class="badge delicate">delicate</span>' in html
    # Both spreads in the dropout row: near the best (the verdict) and over all trials (the old one).
    assert '<td class="num">0.00035</td><td class="num">0.0141</td>' in html
    assert (
        "Near the best: a value counts when some trial at it comes within 0.0119 of the best 0.97 "
        "(2x the noise floor 0.00595). Left out: optim.lr = 0.0001, 0.1."
    ) in html
    assert escape(analysis["verdicts"]["model.dropout"]["evidence"]) in html
    assert "widen the range" not in html and "tune them together" not in html
    assert "the optim.lr x model.dropout interaction near the best" in html and ": additive" in html


def test_dropout_winning_everywhere_brings_the_edge_warning_back():
    html, analysis = section(trials(shift_dropout=0.02))
    (w,) = [w for w in analysis["warnings"] if "widen" in w]
    assert w.startswith("model.dropout: the best value 0.2 is the top of its range [0, 0.2]")
    assert w.endswith("widen the range upward")  # delicate now: no "matters little"
    assert f"<li>{escape(w)}</li>" in html


def test_failed_trials_are_listed_with_their_reason():
    from dlrig.report.selection import _failed_trials

    trial = {"trial": 1, "config": {"optim.lr": 1000.0}, "state": "failed",
             "reason": "diverged: non-finite training loss in epoch 1 (fold 1 of 3; 3 of 3 folds failed)"}
    ok = {"trial": 0, "config": {"optim.lr": 0.0001}, "state": "complete", "reason": None}
    cv = {"final": {"search": {"trials": [ok, trial]}}}
    html = _failed_trials(cv, [{"fold": 0, "search": {"trials": [ok, {**trial, "trial": 3}]}}])
    assert "<h3>Failed trials</h3>" in html and html.count("diverged: non-finite training loss") == 2
    assert "outer fold 0" in html and "1000.0" in html and "0.0001" not in html
    assert _failed_trials({"final": {"search": {"trials": [ok]}}}, []) == ""
