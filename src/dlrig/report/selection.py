"""The report's "Model selection" section: how the hyperparameters were chosen and how far to trust it.

It reads ``reports/cv/summary.json`` and ``reports/cv/folds.json`` (already checked by
``dlrig.report.html.load_inputs``) and params.yaml's ``cv`` and ``search`` sections: the procedure in a
sentence, the final config and what was searched, the per-fold optimism of the search, the depth-3
candidates, which hyperparameters matter (verdicts, importance, interactions), and the search warnings.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from dlrig.report.markup import esc, figure, num
from dlrig.select.analysis import _fmt

VERDICT_HELP = (
    "Delicate: across its values the score moves by more than twice the noise floor, measured where the "
    "other hyperparameters sit at values that can score near the best, so its value matters and is worth "
    "tuning. Permissive: it moves less than that there, so any value in the range does about as well. "
    "Undetermined: the trials cannot tell yet. Values that wreck every run (a learning rate that collapses "
    "training) are left out when judging the others: nobody would pick them, and their scatter would make "
    "anything look delicate."
)
OPTIMISM_HELP = (
    "Optimism = best inner score − outer score: how much the search's winner flatters itself on the folds "
    "that chose it. The outer fold took no part in the choice, so its score is the honest one."
)


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


def _final_config(cv: Mapping[str, Any]) -> str:
    final, space = cv["final"], cv.get("space") or {}
    config = final["config"]
    if not config:
        return "<p>Nothing was searched (search.space is empty): the config in params.yaml was used.</p>"
    rows = "".join(
        f"<tr><td><code>{esc(name)}</code></td><td><code>{esc(_fmt(value))}</code></td>"
        f"<td>{esc(_range_text(space.get(name)))}</td></tr>"
        for name, value in config.items()
    )
    note = f"Its mean inner {esc(cv['metric'])}: {esc(num(final.get('inner_score')))}"
    if final.get("candidate"):
        note += f"; candidate <code>{esc(final['candidate'])}</code>"
    if (final.get("search") or {}).get("stopped_by_target"):
        note += "; the search stopped at the first config that reached search.stop_when"
    return (
        "<h3>Final config</h3><table><thead><tr><th>Hyperparameter</th><th>Chosen</th>"
        f"<th>Searched over</th></tr></thead><tbody>{rows}</tbody></table><p>{note}.</p>"
    )


def _fold_table(cv: Mapping[str, Any], folds: list[Mapping[str, Any]]) -> str:
    depth = int(cv["depth"])
    if depth == 1:
        rows = "".join(
            f'<tr><td>{esc(f["fold"])}</td><td class="num">{esc(num(f["outer_score"]))}</td></tr>'
            for f in folds
        )
        return (
            f'<table class="kv"><thead><tr><th>Fold</th><th class="num">{esc(cv["metric"])} of the chosen '
            f"config</th></tr></thead><tbody>{rows}</tbody></table>"
            "<p>No optimism to measure at cv.depth 1: every fold took part in the choice.</p>"
        )
    show_candidate = any(f.get("candidate") for f in folds)
    head = "<th>Outer fold</th>" + ("<th>Candidate</th>" if show_candidate else "")
    head += '<th>Chosen config</th><th class="num">Best inner score</th><th class="num">Outer score</th>'
    head += '<th class="num">Optimism</th>'
    rows = []
    for f in sorted(folds, key=lambda r: int(r["fold"])):
        optimism = float(f["best_inner_score"]) - float(f["outer_score"])
        rows.append(
            f"<tr><td>{esc(f['fold'])}</td>"
            + (f"<td><code>{esc(f.get('candidate') or '')}</code></td>" if show_candidate else "")
            + f"<td><code>{esc(_config_text(f['best_config']))}</code></td>"
            f'<td class="num">{esc(num(f["best_inner_score"]))}</td>'
            f'<td class="num">{esc(num(f["outer_score"]))}</td>'
            f'<td class="num">{esc(f"{optimism:+.4f}")}</td></tr>'
        )
    summary = (cv.get("optimism_summary") or {}).get("summary")
    sentence = f"<p><strong>{esc(summary[:1].upper() + summary[1:])}.</strong></p>" if summary else ""
    return (
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        f'<p class="note">{esc(OPTIMISM_HELP)}</p>{sentence}'
    )


def _candidates(cv: Mapping[str, Any], folds: list[Mapping[str, Any]]) -> str:
    """Depth 3: each candidate's middle-loop estimate, per outer fold and for the final choice."""
    records = [(str(f["fold"]), f) for f in sorted(folds, key=lambda r: int(r["fold"]))]
    records.append(("final", cv["final"]))
    names = sorted({n for _, r in records for n in r.get("candidates") or {}})
    if not names:
        return ""
    head = "".join(f'<th class="num"><code>{esc(n)}</code></th>' for n in names)
    rows = []
    for label, record in records:
        estimates = record.get("candidates") or {}
        cells = "".join(
            f'<td class="num">{"<strong>" if n == record.get("candidate") else ""}'
            f"{esc(num(estimates.get(n)))}{'</strong>' if n == record.get('candidate') else ''}</td>"
            for n in names
        )
        rows.append(f"<tr><td>{esc(label)}</td>{cells}</tr>")
    return (
        f"<h3>Candidates (middle loop)</h3><table><thead><tr><th>Outer fold</th>{head}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
        f'<p class="note">Each candidate\'s nested {esc(cv["metric"])} estimate on the outer-train; the '
        "chosen one is in bold.</p>"
    )


def _verdict_badge(verdict: str) -> str:
    kind = verdict if verdict in {"delicate", "permissive"} else "neutral"
    return f'<span class="badge {kind}">{esc(verdict)}</span>'


def _verdicts(analysis: Mapping[str, Any]) -> str:
    verdicts = analysis.get("verdicts") or {}
    if not verdicts:
        return ""
    importance = analysis.get("importance") or {}
    order = [n for n in importance if n in verdicts] + [n for n in verdicts if n not in importance]
    rows = "".join(
        f"<tr><td><code>{esc(n)}</code></td><td>{_verdict_badge(verdicts[n]['verdict'])}</td>"
        f'<td class="num">{esc(f"{importance[n]:.0%}" if n in importance else "n/a")}</td>'
        f'<td class="num">{esc(_fmt(verdicts[n].get("spread")))}</td>'
        f'<td class="num">{esc(_fmt(verdicts[n].get("marginal_spread", verdicts[n].get("spread"))))}</td>'
        f'<td class="details">{esc(verdicts[n].get("evidence", ""))}</td></tr>'
        for n in order
    )
    method = {
        "fanova": "share of the score's variance explained (fANOVA over the trials)",
        "marginal": "share of the summed marginal spreads (too few trials for fANOVA)",
    }.get(analysis.get("importance_method"), "share")
    design = (analysis.get("design") or {}).get("note")
    return (
        f"<h3>Which hyperparameters matter</h3><p>{esc(VERDICT_HELP)}</p>"
        '<table><thead><tr><th>Hyperparameter</th><th>Verdict</th><th class="num">Importance</th>'
        '<th class="num">Spread near the best</th><th class="num">Spread, all trials</th>'
        "<th>Evidence</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
        f'<p class="note">Importance: {esc(method)}; it averages over every trial, wrecked ones included, '
        "so it is evidence, not the verdict. Spread: max − min of the mean score over its values, with the "
        "others near the best (what the verdict reads) and over all trials"
        f"{'; ' + esc(design) if design else ''}.</p>"
    )


def _near_best(analysis: Mapping[str, Any]) -> str:
    """One sentence: which values count as near the best, and which were left out of the verdicts."""
    near = analysis.get("near_best") or {}
    if not near.get("rule"):
        return ""
    excluded = near.get("excluded") or {}
    left_out = "; ".join(f"{n} = {', '.join(labels)}" for n, labels in excluded.items())
    text = f"Near the best: a value counts when some trial at it comes within {near['rule']}. " + (
        f"Left out: {left_out}." if left_out else "Every searched value does."
    )
    return f"<p>{esc(text)}</p>"


def _interactions(analysis: Mapping[str, Any]) -> str:
    found = analysis.get("interactions") or []
    if found:
        items = "".join(f"<li>{esc(i['evidence'])}</li>" for i in found)
        body = f"<ul>{items}</ul>"
        if analysis.get("interactions_note"):
            body += f'<p class="note">{esc(analysis["interactions_note"])}</p>'
    else:
        body = f"<p>{esc(analysis.get('interactions_note') or 'none tested')}</p>"
    return f"<h3>Interactions</h3>{body}"



def _failed_trials(cv: Mapping[str, Any], folds: Sequence[Mapping[str, Any]]) -> str:
    """Every failed trial of every search (the final one, each outer fold's) with its reason."""
    searches = [("final", (cv.get("final") or {}).get("search"))]
    searches += [(f"outer fold {f['fold']}", f.get("search")) for f in folds]
    rows = [
        f'<tr><td>{esc(where)}</td><td class="num">{int(t["trial"])}</td>'
        f"<td>{esc(json.dumps(t['config'], sort_keys=True))}</td><td>{esc(t.get('reason') or '')}</td></tr>"
        for where, search in searches
        for t in (search or {}).get("trials") or []
        if t.get("state") == "failed"
    ]
    if not rows:
        return ""
    return (
        "<h3>Failed trials</h3><p>Fits that diverged or raised an error: kept in the records, scored worst, "
        'never chosen.</p><table><tr><th>Search</th><th class="num">Trial</th><th>Config</th><th>Reason</th>'
        "</tr>" + "".join(rows) + "</table>"
    )


def selection_section(
    cv: Mapping[str, Any],
    folds: list[Mapping[str, Any]],
    params: Mapping[str, Any],
    pngs: Mapping[str, bytes],
) -> str:
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
    warnings = analysis.get("warnings") or []
    warned = (
        '<ul class="warnings">' + "".join(f"<li>{esc(w)}</li>" for w in warnings) + "</ul>"
        if warnings
        else "<p>None.</p>"
    )
    depth = int(cv["depth"])
    folds_caption = (
        "The chosen config's score on each fold; the dashed line is their mean, the plain-CV estimate."
        if depth == 1
        else "Per outer fold: the best inner score (open circle, what the search saw) and the outer test "
        "score (filled, unseen); the line between them is the optimism. Dashed lines: means over folds."
    )
    parts = [
        f'<section id="selection"><h2>Model selection</h2><p>{esc(_procedure(cv, folds, params))}</p>',
        _final_config(cv),
        f"<h3>{'Per fold' if depth == 1 else 'Per outer fold'}</h3>",
        _fold_table(cv, folds),
        figure(pngs["cv_folds"], "Outer-fold scores", esc(folds_caption)),
        _candidates(cv, folds) if depth == 3 else "",
        f"<h3>How far to trust the choice</h3><p>{esc(noise)}</p>",
        _near_best(analysis),
        _verdicts(analysis),
    ]
    if pngs.get("cv_importance"):
        parts.append(
            figure(
                pngs["cv_importance"],
                "Hyperparameter importance",
                "Final search: each hyperparameter's share of the importance (the column of the table "
                "above), coloured by its verdict (orange delicate, green permissive, grey undetermined).",
            )
        )
    if pngs.get("cv_top_two"):
        parts.append(
            figure(
                pngs["cv_top_two"],
                "Score over the top two hyperparameters",
                "Final search: the mean inner score over the two most important hyperparameters, so an "
                "interaction shows as a ridge or a corner rather than stripes; the chosen config is "
                "outlined (a star among scattered trials).",
            )
        )
    if cv.get("space"):
        parts.append(
            figure(
                pngs["cv_params"],
                "Score against each hyperparameter",
                "Final search: each trial's mean inner score against one hyperparameter; the line is the "
                "marginal mean, the dashed green line (where values of the others were left out) the mean "
                "with the others near the best, which the verdict reads; the star is the chosen config, "
                "the band its score ± the noise floor (configs inside it are as good), dotted lines the "
                "edges of the searched range.",
            )
        )
    parts += [
        _interactions(analysis),
        f"<h3>Warnings</h3>{warned}",
        _failed_trials(cv, folds),
        "<p>Every trial of every search (each outer fold's and the final one), with its config, inner "
        "scores per fold, rank, state and reason: <code>reports/cv/trials.csv</code>, one row per search "
        "and trial (scikit-learn's <code>cv_results_</code>).</p>",
        figure(
            pngs["cv_history"],
            "Trial history",
            "Final search: each trial's score in the order evaluated and the best so far; pruned or failed "
            "trials sit on the bottom rail.",
        ),
        "</section>",
    ]
    return "".join(parts)
