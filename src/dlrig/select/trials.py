"""Every trial of every search as one flat table: scikit-learn's ``cv_results_``, for nested CV.

The train stage writes it to reports/cv/trials.csv from the records it already saves (reports/cv/folds.json
and the final search in reports/cv/summary.json): one row per (search, trial), where a search is an outer
fold's inner search (``outer-0``, ``outer-1``, ...) or the final selection on all training rows (``final``).
Columns follow ``cv_results_`` with "inner" for "test", since our test split is the held-out one:
``param_<key>`` per searched key, ``mean_inner_score`` / ``std_inner_score`` / ``rank_inner_score`` and
``split<k>_inner_score`` (the selection metric on each inner fold), ``mean_inner_<metric>`` for every metric
scored, then the trial's ``state`` and ``reason`` (failed and pruned trials have no score and no rank) and
whether it was ``chosen``.

No wall-clock seconds (``cv_results_`` has ``mean_fit_time``): two runs of the same params must write the same
bytes, and timings differ between runs; the train stage writes them to reports/run/train.json instead.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

# Written before the param_* columns; the per-fold and per-metric columns come after them.
LEAD = ("search", "outer_fold", "trial")


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _ranks(trials: Sequence[Mapping[str, Any]]) -> dict[int, int]:
    """Trial number -> rank among the complete trials (1 = best; ties share the better rank, as
    ``scipy.stats.rankdata(method="min")`` and ``cv_results_`` do). Failed and pruned trials are unranked."""
    scores = {int(t["trial"]): s for t in trials
              if t.get("state", "complete") == "complete" and (s := _number(t.get("score"))) is not None}
    ordered = sorted(scores.values(), reverse=True)
    return {n: 1 + ordered.index(s) for n, s in scores.items()}


def _std(values: Sequence[float]) -> float | None:
    """Population standard deviation (ddof 0), as ``cv_results_``'s ``std_test_score``."""
    if not values:
        return None
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


def _searches(folds: Sequence[Mapping[str, Any]], final: Mapping[str, Any] | None
              ) -> list[tuple[str, int | None, str | None, Mapping[str, Any]]]:
    """(search name, outer fold, depth-3 candidate, search record) for each search that was saved."""
    found = [(f"outer-{int(f['fold'])}", int(f["fold"]), f.get("candidate"), f["search"])
             for f in sorted(folds, key=lambda f: int(f["fold"])) if isinstance(f.get("search"), Mapping)]
    if final and isinstance(final.get("search"), Mapping):
        found.append(("final", None, final.get("candidate"), final["search"]))
    return found


def trial_rows(folds: Sequence[Mapping[str, Any]], final: Mapping[str, Any] | None,
               space: Sequence[str] = ()) -> list[dict[str, Any]]:
    """One row per (search, trial), from reports/cv/folds.json and summary.json's ``final``.

    ``space`` names the searched keys (summary.json's ``space``); a key found only in some trials' configs
    (a depth-3 candidate's overrides) gets its column too. At cv.depth 1 the folds carry no search of their
    own: the rows are the one search, whose inner folds are the folds of the estimate. At cv.depth 3 an outer
    fold's rows are the search of the candidate it chose (the middle loop's searches are not saved).
    """
    searches = _searches(folds, final)
    keys = list(space)
    for *_, search in searches:
        for t in search.get("trials") or []:
            keys += [k for k in t.get("config") or {} if k not in keys]
    n_splits = max((len(t.get("n_val") or t.get("scores") or []) for *_, s in searches
                    for t in s.get("trials") or []), default=0)
    metrics = sorted({m for *_, s in searches for t in s.get("trials") or [] for m in t.get("metrics") or {}})
    with_candidate = any(candidate for _, _, candidate, _ in searches)
    rows = []
    for name, fold, candidate, search in searches:
        trials = search.get("trials") or []
        ranks = _ranks(trials)
        best = search.get("best_trial")
        for t in sorted(trials, key=lambda t: int(t["trial"])):
            config = t.get("config") or {}
            scores = [float(s) for s in t.get("scores") or []]
            row: dict[str, Any] = {"search": name, "outer_fold": fold, "trial": int(t["trial"])}
            if with_candidate:
                row["candidate"] = candidate
            row.update({f"param_{k}": config.get(k) for k in keys})
            row["mean_inner_score"] = _number(t.get("score"))
            row["std_inner_score"] = _std(scores) if row["mean_inner_score"] is not None else None
            row["rank_inner_score"] = ranks.get(int(t["trial"]))
            for k in range(n_splits):
                row[f"split{k}_inner_score"] = scores[k] if k < len(scores) else None
            for m in metrics:
                values = [float(v) for v in (t.get("metrics") or {}).get(m) or []]
                row[f"mean_inner_{m}"] = sum(values) / len(values) if values else None
            epochs = t.get("epochs") or []
            row["mean_epochs"] = sum(epochs) / len(epochs) if epochs else None
            row["n_inner_val"] = sum(int(n) for n in t.get("n_val") or [])
            row["state"] = t.get("state") or ("pruned" if t.get("pruned") else "complete")
            row["reason"] = t.get("reason")
            row["chosen"] = best is not None and int(t["trial"]) == int(best)
            rows.append(row)
    return rows


def _cell(value: Any) -> str:
    """CSV text of one value: empty for None, round-trip floats rounded to 6 decimals as the records are."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(round(value, 6))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_cell(v) for v in value) + "]"
    return str(value)


def trials_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows as CSV text (columns in first-seen order; the same rows give the same bytes)."""
    columns = list(dict.fromkeys(k for row in rows for k in row)) or [*LEAD]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
    return out.getvalue()
