"""The report's "Model selection" section: how the hyperparameters were chosen and how far to trust it.

It reads ``reports/cv/summary.json`` and ``reports/cv/folds.json`` (already checked by
``dlrig.report.html.load_inputs``) and params.yaml's ``cv`` and ``search`` sections: the procedure in a
sentence, the final config and what was searched, the per-fold optimism of the search, the depth-3
candidates, which hyperparameters matter (verdicts, importance, interactions), and the search warnings.
The sentences and numbers are computed here; the markup is ``templates/selection.html.j2``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from markupsafe import Markup

from dlrig.report.markup import num, render
from dlrig.select.analysis import _fmt


def _config_text(config: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in config.items()) or "params.yaml as is"


def _range_text(spec: Mapping[str, Any] | None) -> str:
    if spec is None:
        return "fixed (not searched)"
    values = spec.get("values") or []
    if values and len(values) <= 6:
        text = ", ".join(_fmt(v) for v in values)
    else:
        text = f"{_fmt(spec.get('low'))} .. {_fmt(spec.get('high'))}"
        text += f" ({len(values)} values)" if values else ""
    return text + (" (log scale)" if spec.get("log") else "")


def _count_text(counts: list[int]) -> str:
    if not counts:
        return "no trials"
    lo, hi = min(counts), max(counts)
    return f"{lo} trial{'s' if lo != 1 else ''}" if lo == hi else f"{lo}–{hi} trials"


def _procedure(cv: Mapping[str, Any], folds: list[Mapping[str, Any]], params: Mapping[str, Any]) -> str:
    """What was done, in a sentence or two (fold counts read from the saved trials where they can be)."""
    metric, depth = cv["metric"], int(cv["depth"])
    final_search = cv["final"].get("search") or {}
    searches = [final_search] + [f["search"] for f in folds if isinstance(f.get("search"), dict)]
    n_trials = _count_text([len(s.get("trials") or []) for s in searches])
    raw_cv = params.get("cv") if isinstance(params.get("cv"), dict) else {}
    raw_search = params.get("search") if isinstance(params.get("search"), dict) else {}
    strategy = raw_search.get("strategy", "hyperparameter")
    k_inner = next(
        (len(t["scores"]) for t in final_search.get("trials") or [] if t.get("scores")),
        raw_cv.get("inner_folds", "?"),
    )
    if depth == 1:
        return (
            f"Plain cross-validation (cv.depth 1): a {strategy} search ({n_trials}) scored each config by "
            f"its mean {metric} over {len(folds)} folds of the training split, and the estimate is the "
            "winner's score on those same folds: optimistic, since the folds that chose it also score it."
        )
    middle = ""
    if depth == 3:
        names = ", ".join(sorted(raw_cv.get("candidates") or cv["final"].get("candidates") or {}))
        middle = (
            f"a middle loop of {raw_cv.get('middle_folds', '?')} folds chose among the candidates "
            f"({names}) by their own nested estimate, then "
        )
    return (
        f"Nested cross-validation (cv.depth {depth}) on the training split: in each of {len(folds)} outer "
        f"folds {middle}a {strategy} search ({n_trials}) picked the config with the best mean {metric} "
        f"over {k_inner} inner folds of the outer-train, refit it there and scored it once on the "
        "outer-test. The final config was picked the same way on all training rows."
    )


def _final_config(cv: Mapping[str, Any]) -> dict[str, Any]:
    final, space = cv["final"], cv.get("space") or {}
    return {
        "rows": [(n, _fmt(value), _range_text(space.get(n))) for n, value in final["config"].items()],
        "inner_score": num(final.get("inner_score")),
        "candidate": final.get("candidate"),
        "stopped_by_target": bool((final.get("search") or {}).get("stopped_by_target")),
    }


def _fold_rows(cv: Mapping[str, Any], folds: list[Mapping[str, Any]]) -> list[Any]:
    """Depth 1: (fold, score); deeper: each outer fold's choice, its inner and outer score and optimism."""
    if int(cv["depth"]) == 1:
        return [(f["fold"], num(f["outer_score"])) for f in folds]
    return [
        {
            "fold": f["fold"],
            "candidate": f.get("candidate") or "",
            "config": _config_text(f["best_config"]),
            "inner": num(f["best_inner_score"]),
            "outer": num(f["outer_score"]),
            "optimism": f"{float(f['best_inner_score']) - float(f['outer_score']):+.4f}",
        }
        for f in sorted(folds, key=lambda r: int(r["fold"]))
    ]


def _candidates(cv: Mapping[str, Any], folds: list[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Depth 3: each candidate's middle-loop estimate, per outer fold and for the final choice."""
    records = [(str(f["fold"]), f) for f in sorted(folds, key=lambda r: int(r["fold"]))]
    records.append(("final", cv["final"]))
    names = sorted({n for _, r in records for n in r.get("candidates") or {}})
    if not names:
        return None
    rows = [
        (label, [(num((record.get("candidates") or {}).get(n)), n == record.get("candidate")) for n in names])
        for label, record in records
    ]
    return {"names": names, "rows": rows}


def _verdicts(analysis: Mapping[str, Any]) -> list[dict[str, Any]]:
    verdicts = analysis.get("verdicts") or {}
    importance = analysis.get("importance") or {}
    order = [n for n in importance if n in verdicts] + [n for n in verdicts if n not in importance]
    return [
        {
            "name": n,
            "verdict": verdicts[n]["verdict"],
            "importance": f"{importance[n]:.0%}" if n in importance else "n/a",
            "spread": _fmt(verdicts[n].get("spread")),
            "marginal_spread": _fmt(verdicts[n].get("marginal_spread", verdicts[n].get("spread"))),
            "evidence": verdicts[n].get("evidence", ""),
        }
        for n in order
    ]


def _near_best(analysis: Mapping[str, Any]) -> str:
    """One sentence: which values count as near the best, and which were left out of the verdicts."""
    near = analysis.get("near_best") or {}
    if not near.get("rule"):
        return ""
    excluded = near.get("excluded") or {}
    left_out = "; ".join(f"{n} = {', '.join(labels)}" for n, labels in excluded.items())
    return f"Near the best: a value counts when some trial at it comes within {near['rule']}. " + (
        f"Left out: {left_out}." if left_out else "Every searched value does."
    )


def _failed_trials(cv: Mapping[str, Any], folds: Sequence[Mapping[str, Any]]) -> Markup:
    """Every failed trial of every search (the final one, each outer fold's) with its reason."""
    searches = [("final", (cv.get("final") or {}).get("search"))]
    searches += [(f"outer fold {f['fold']}", f.get("search")) for f in folds]
    rows = [
        (where, int(t["trial"]), json.dumps(t["config"], sort_keys=True), t.get("reason") or "")
        for where, search in searches
        for t in (search or {}).get("trials") or []
        if t.get("state") == "failed"
    ]
    return render("failed_trials.html.j2", rows=rows) if rows else Markup("")


def selection_section(
    cv: Mapping[str, Any],
    folds: list[Mapping[str, Any]],
    params: Mapping[str, Any],
    pngs: Mapping[str, bytes],
) -> Markup:
    analysis = cv.get("analysis") or {}
    floor = analysis.get("noise_floor") or {}
    if floor.get("se") is not None:
        noise = (
            f"Noise floor: {_fmt(floor['se'])}, one standard error of the best config's inner score, the "
            f"{floor.get('explanation', '')}. Scores closer than that cannot be told apart; it leaves out "
            "the seed-to-seed variance of training."
        )
    else:
        noise = f"Noise floor: none ({floor.get('explanation') or 'no complete trials'})."
    depth = int(cv["depth"])
    summary = (cv.get("optimism_summary") or {}).get("summary")
    return render(
        "selection.html.j2",
        procedure=_procedure(cv, folds, params),
        metric=cv["metric"],
        depth=depth,
        final=_final_config(cv),
        fold_rows=_fold_rows(cv, folds),
        show_candidate=any(f.get("candidate") for f in folds),
        optimism_summary=summary[:1].upper() + summary[1:] if summary else None,
        candidates=_candidates(cv, folds) if depth == 3 else None,
        noise=noise,
        near_best=_near_best(analysis),
        verdicts=_verdicts(analysis),
        importance_method={
            "fanova": "share of the score's variance explained (fANOVA over the trials)",
            "marginal": "share of the summed marginal spreads (too few trials for fANOVA)",
        }.get(analysis.get("importance_method"), "share"),
        design=(analysis.get("design") or {}).get("note"),
        searched=bool(cv.get("space")),
        interactions=[i["evidence"] for i in analysis.get("interactions") or []],
        interactions_note=analysis.get("interactions_note"),
        warnings=analysis.get("warnings") or [],
        failed_trials=_failed_trials(cv, folds),
        pngs=pngs,
    )
