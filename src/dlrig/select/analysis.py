"""How much to trust a hyperparameter search: noise floor, importance, delicate/permissive, warnings.

Input is plain data (what the search writes): ``trials`` (one dict per evaluated config: ``trial``,
``config``, ``score`` = mean inner-fold validation score, higher is better, or ``None`` when pruned or
failed, ``scores`` per inner fold, ``n_val`` per inner fold, ``pruned``) and ``space`` (dotted name ->
``type``, ``low``, ``high``, ``log``, ``values``). Output is a JSON-able dict, floats rounded to 6 dp, the
same for the same input.

The questions it answers, after google-research/tuning_playbook:

- *Noise floor*: the standard error of the best config's score. Two estimates, the larger is used: the
  binomial SE ``sqrt(p(1-p)/N)`` over all ``N`` inner validation samples (accuracy-like metrics only) and
  the between-fold SE ``std/sqrt(k)``. Neither includes seed-to-seed variance of training; re-running the
  best config with other seeds measures that.
- *Delicate or permissive*: the spread (max - min) of the mean score over a hyperparameter's values
  (averaged over everything else) against the noise floor. On a full grid the other hyperparameters are
  balanced across the values and the raw means serve. On an unstructured search (random, Bayesian)
  they are not: the trials at one value have their own mix of the others, so the means come from an
  additive least-squares fit on all hyperparameters' (binned) values, and a spread counts only when
  that fit's partial F-test also tells it from the scatter of the trials (the spread of several means
  of a few trials each is large by chance alone: about 2.3 SE for 5 means); a large spread the test
  cannot confirm is *undetermined*.
- *Importance*: Optuna's fANOVA on an in-memory study rebuilt from the trials, or the normalised
  marginal spread when there are too few trials for fANOVA.
- *Interactions*: two-way ANOVA on the table of mean scores of the top pairs, where the trials form a
  grid on the pair.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from itertools import combinations
from typing import Any

import numpy as np

DECIMALS = 6
# Per-sample binomial SE applies where the score is (close to) a proportion of correct predictions.
ACCURACY_LIKE = frozenset({"accuracy", "balanced_accuracy"})
MIN_TRIALS_FANOVA = 8  # fewer trials than this and fANOVA's random forest is fitting noise
MAX_LEVELS = 8  # a numeric hyperparameter with more distinct values is binned for its marginal means
N_BINS = 5
EDGE_FRACTION = 0.1  # a continuous best value this close (in (log) range) to a bound counts as "on the edge"


def _r(x: float | None) -> float | None:
    return None if x is None else round(float(x), DECIMALS)


def _fmt(x: Any) -> str:
    """A short human form of a value: 0.0065, 1e-04, 128, relu."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        return str(x)
    if isinstance(x, int):
        return str(x)
    if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e5):
        return f"{x:.2g}"
    return f"{x:.3g}"


def _key(value: Any) -> str:
    """A hashable, order-stable identity for any JSON-able value (lists and dicts included)."""
    return json.dumps(value, sort_keys=True)


def _complete(trials: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    done = [
        t
        for t in trials
        if not t.get("pruned") and t.get("score") is not None and math.isfinite(float(t["score"]))
    ]
    return sorted(done, key=lambda t: (-float(t["score"]), int(t["trial"])))


def _is_numeric(spec: Mapping[str, Any]) -> bool:
    return spec.get("type") in ("float", "int")


# ---------------------------------------------------------------------------------------- noise floor
def noise_floor(trial: Mapping[str, Any], metric: str) -> dict[str, Any]:
    """Standard error of one config's score: the larger of the binomial and the between-fold SE."""
    p = float(trial["score"])
    scores = [float(s) for s in trial.get("scores") or [] if s is not None]
    n_val = int(sum(trial.get("n_val") or []))
    binomial = None
    if metric in ACCURACY_LIKE and n_val > 0 and 0.0 <= p <= 1.0:
        binomial = math.sqrt(p * (1.0 - p) / n_val)
    between = float(np.std(scores, ddof=1) / math.sqrt(len(scores))) if len(scores) >= 2 else None
    candidates = [(v, m) for v, m in ((binomial, "binomial"), (between, "between-fold")) if v is not None]
    if not candidates:
        return {
            "se": None,
            "method": "none",
            "binomial_se": None,
            "between_fold_se": None,
            "n_val": n_val,
            "k": len(scores),
            "explanation": "no noise estimate: one inner fold and a metric that is not a proportion",
        }
    se, method = max(candidates, key=lambda c: c[0])
    if method == "binomial":
        why = f"binomial SE of {metric} {_fmt(p)} over {n_val} validation samples" + (
            f" (larger than the between-fold SE {_fmt(between)})" if between is not None else ""
        )
    else:
        why = f"between-fold SE: std of the {len(scores)} inner-fold scores / sqrt({len(scores)})" + (
            f" (larger than the binomial SE {_fmt(binomial)})" if binomial is not None else ""
        )
    return {
        "se": _r(se),
        "method": method,
        "binomial_se": _r(binomial),
        "between_fold_se": _r(between),
        "n_val": n_val,
        "k": len(scores),
        "explanation": why,
    }


# ------------------------------------------------------------------------------- marginal mean scores
def _levels(done: Sequence[Mapping[str, Any]], name: str, spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Mean score per value of ``name`` (or per bin of values, for a numeric one with many values)."""
    values = [t["config"].get(name) for t in done]
    groups: dict[str, list[int]] = {}
    for i, v in enumerate(values):
        groups.setdefault(_key(v), []).append(i)
    numeric = _is_numeric(spec) and all(isinstance(v, int | float) for v in values)
    if numeric and len(groups) > MAX_LEVELS:
        tf = np.log if spec.get("log") and min(values) > 0 else (lambda a: a)
        order = sorted(range(len(values)), key=lambda i: (values[i], int(done[i]["trial"])))
        n_bins = min(max(3, len(values) // 4), N_BINS)  # about 4+ trials a bin: means worth comparing
        chunks = [list(c) for c in np.array_split(np.asarray(order), n_bins)]
        rows = []
        for chunk in chunks:
            vals = [values[i] for i in chunk]
            rep = (
                float(np.exp(np.mean(tf(np.asarray(vals, float))))) if tf is np.log else float(np.mean(vals))
            )
            rows.append({"value": _r(rep), "label": f"{_fmt(min(vals))}..{_fmt(max(vals))}", "idx": chunk})
    else:
        order_keys = [_key(v) for v in spec.get("values") or []]
        if numeric:
            keys = sorted(groups, key=lambda k: json.loads(k))
        else:
            keys = sorted(
                groups, key=lambda k: (order_keys.index(k) if k in order_keys else len(order_keys), k)
            )
        rows = [{"value": json.loads(k), "label": _fmt(json.loads(k)), "idx": groups[k]} for k in keys]
    scores = np.asarray([float(t["score"]) for t in done])
    for row in rows:
        s = scores[row["idx"]]
        row["mean"] = float(np.mean(s))
        row["sd"] = float(np.std(s, ddof=1)) if len(s) >= 2 else None
        row["n"] = len(s)
    return rows


def _additive_fit(
    done: Sequence[Mapping[str, Any]], levels: Mapping[str, Sequence[Mapping[str, Any]]]
) -> dict[str, tuple[np.ndarray, float]] | None:
    """Main effects of every hyperparameter at once: least squares of score on one-hot levels.

    In an unstructured search the trials at one value of ``a`` have their own mix of values of ``b``,
    so ``a``'s raw marginal means carry ``b``'s effect too; the additive model separates them. Returns,
    per hyperparameter, the mean score at each level with the others averaged over the trials (equal to
    the raw marginal means on a full grid) and the p-value of the partial F-test that its levels differ
    at all; None without the degrees of freedom to fit it.
    """
    from scipy.stats import f as f_dist

    y = np.asarray([float(t["score"]) for t in done])
    columns, blocks = [np.ones(len(y))], {}
    for name, rows in levels.items():
        member = np.zeros(len(y), dtype=int)
        for j, row in enumerate(rows):
            member[row["idx"]] = j
        blocks[name] = (len(columns), len(rows), member)
        columns += [(member == j).astype(float) for j in range(1, len(rows))]
    X = np.column_stack(columns)
    rank = np.linalg.matrix_rank(X)
    dof = len(y) - rank
    if dof < 2:
        return None
    beta = np.linalg.lstsq(X, y, rcond=None)[0]
    fitted = X @ beta
    rss = float(((y - fitted) ** 2).sum())
    out = {}
    for name, (start, n_levels, member) in blocks.items():
        effect = np.concatenate([[0.0], beta[start : start + n_levels - 1]])
        means = fitted.mean() - effect[member].mean() + effect
        p_value = 1.0
        if n_levels >= 2:
            X_red = np.delete(X, range(start, start + n_levels - 1), axis=1)
            rss_red = float(((y - X_red @ np.linalg.lstsq(X_red, y, rcond=None)[0]) ** 2).sum())
            df_num = rank - np.linalg.matrix_rank(X_red)
            if df_num > 0 and rss_red - rss > 1e-12 * max(rss_red, 1e-300):
                stat = (rss_red - rss) / df_num / (rss / dof) if rss > 0 else math.inf
                p_value = float(f_dist.sf(stat, df_num, dof))
        out[name] = (means, p_value)
    return out


def _values_text(values: Sequence[Any], rows: Sequence[Mapping[str, Any]]) -> str:
    """The evaluated range of a numeric hyperparameter (0.0001..0.01), or its values (relu, gelu)."""
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return f"{_fmt(min(values))}..{_fmt(max(values))}"
    labels = [r["label"] for r in rows]
    return ", ".join(labels) if len(labels) <= 4 else f"{', '.join(labels[:3])}, ... ({len(labels)} values)"


def _is_grid(done: Sequence[Mapping[str, Any]], names: Sequence[str]) -> bool:
    """Every combination of the distinct values of ``names`` was evaluated at least once."""
    seen = {tuple(_key(t["config"].get(n)) for n in names) for t in done}
    size = math.prod(len({_key(t["config"].get(n)) for t in done}) for n in names)
    return len(seen) == size


# ---------------------------------------------------------------------------------------- importance
def _distribution(spec: Mapping[str, Any], observed: Sequence[Any]) -> tuple[Any, str]:
    """The optuna distribution for one hyperparameter, and how a value maps onto it.

    Optuna's fANOVA measures variance over the *linear* extent of a range even when the distribution is
    log (it builds its search-space transform with ``transform_log=False``), so a log-range learning rate
    would be judged almost only on its top decade. A log range is therefore handed over as a uniform
    range of log10(value), the scale the search samples in.
    """
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if spec.get("type") == "categorical" or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in observed
    ):
        keys = sorted({_key(v) for v in list(spec.get("values") or []) + list(observed)})
        return CategoricalDistribution(keys), "key"
    candidates = [float(v) for v in list(spec.get("values") or []) + list(observed)]
    low = spec.get("low") if spec.get("low") is not None else min(candidates)
    high = spec.get("high") if spec.get("high") is not None else max(candidates)
    low, high = min(low, min(candidates)), max(high, max(candidates))
    if spec.get("log") and low > 0:
        return FloatDistribution(math.log10(low), math.log10(high)), "log10"
    if spec.get("type") == "int" and all(isinstance(v, int) for v in observed):
        return IntDistribution(int(low), int(high)), "int"
    return FloatDistribution(float(low), float(high)), "float"


def _as_param(value: Any, how: str) -> Any:
    return {"key": _key, "log10": lambda v: math.log10(v), "int": int, "float": float}[how](value)


def _fanova(
    done: Sequence[Mapping[str, Any]], names: Sequence[str], space: Mapping[str, Any], seed: int
) -> dict[str, float]:
    import optuna

    dists, how = {}, {}
    for n in names:
        dists[n], how[n] = _distribution(space.get(n, {}), [t["config"].get(n) for t in done])
    frozen = [
        optuna.trial.create_trial(
            params={n: _as_param(t["config"][n], how[n]) for n in names},
            distributions=dists,
            value=float(t["score"]),
        )
        for t in sorted(done, key=lambda t: int(t["trial"]))
    ]
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created in memory" line
    try:
        study = optuna.create_study(direction="maximize")
        study.add_trials(frozen)
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
        shares = optuna.importance.get_param_importances(study, evaluator=evaluator, params=list(names))
    finally:
        optuna.logging.set_verbosity(verbosity)
    return {n: float(shares.get(n, 0.0)) for n in names}


# -------------------------------------------------------------------------------------- interactions
def _interaction(
    done: Sequence[Mapping[str, Any]], a: str, b: str, noise: float | None, factor: float, metric: str
) -> dict[str, Any]:
    """Two-way ANOVA on the table of mean scores (rows: values of a, columns: values of b)."""
    rows = sorted({_key(t["config"].get(a)) for t in done})
    cols = sorted({_key(t["config"].get(b)) for t in done})
    sums, counts = np.zeros((len(rows), len(cols))), np.zeros((len(rows), len(cols)))
    for t in done:
        i, j = rows.index(_key(t["config"].get(a))), cols.index(_key(t["config"].get(b)))
        sums[i, j] += float(t["score"])
        counts[i, j] += 1
    table = sums / counts
    grand = table.mean()
    row_eff = table.mean(axis=1, keepdims=True) - grand
    col_eff = table.mean(axis=0, keepdims=True) - grand
    resid = table - grand - row_eff - col_eff
    ss_total = float(((table - grand) ** 2).sum())
    shares = [
        float((row_eff**2).sum() * len(cols)),
        float((col_eff**2).sum() * len(rows)),
        float((resid**2).sum()),
    ]
    shares = [s / ss_total if ss_total > 0 else 0.0 for s in shares]
    largest = float(np.abs(resid).max())
    if noise is None:
        verdict, versus = "undetermined", "no noise floor to compare with"
    else:
        verdict = "interacting" if largest > factor * noise else "additive"
        versus = f"{largest / noise:.1f}x the noise floor {_fmt(noise)}" if noise > 0 else "noise floor 0"
    evidence = (
        f"the {a} x {b} interaction holds {shares[2]:.0%} of the variance of the mean {metric} "
        f"over the {len(rows)}x{len(cols)} grid; its largest cell departure {_fmt(largest)} is "
        f"{versus}: {verdict}"
    )
    return {
        "params": [a, b],
        "share": _r(shares[2]),
        "main_shares": [_r(shares[0]), _r(shares[1])],
        "max_residual": _r(largest),
        "verdict": verdict,
        "evidence": evidence,
    }


# ------------------------------------------------------------------------------------------ warnings
def _edge_warning(name: str, spec: Mapping[str, Any], best: Any, verdict: str) -> str | None:
    if not _is_numeric(spec) or isinstance(best, bool) or not isinstance(best, int | float):
        return None
    values = [v for v in spec.get("values") or [] if isinstance(v, int | float)]
    if values:  # discrete candidates: on the edge means the smallest or largest one
        low, high = min(values), max(values)
        at_low, at_high = best <= low, best >= high
    else:
        low, high = spec.get("low"), spec.get("high")
        if low is None or high is None or high <= low:
            return None
        log = bool(spec.get("log")) and low > 0 and best > 0
        tf = math.log if log else float
        pos = (tf(best) - tf(low)) / (tf(high) - tf(low))
        at_low, at_high = pos <= EDGE_FRACTION, pos >= 1 - EDGE_FRACTION
    if not (at_low or at_high):
        return None
    where, way = ("bottom", "downward") if at_low else ("top", "upward")
    exact = best == (low if at_low else high)
    text = (
        f"{name}: the best value {_fmt(best)} is {'the' if exact else 'near the'} {where} of its range "
        f"[{_fmt(low)}, {_fmt(high)}]; widen the range {way}"
    )
    if verdict == "permissive":
        text += " (it is permissive, so this matters little)"
    return text


# -------------------------------------------------------------------------------------------- public
def analyze_search(
    trials: Sequence[Mapping[str, Any]],
    space: Mapping[str, Mapping[str, Any]],
    metric: str,
    *,
    delicate_factor: float = 2.0,
    alpha: float = 0.05,
    top_k: int = 3,
    seed: int = 0,
) -> dict[str, Any]:
    """Noise floor, importance, verdicts, interactions, warnings and ranking for one search.

    A hyperparameter is *delicate* when the spread of its marginal mean score exceeds
    ``delicate_factor`` times the noise, *permissive* when it does not, *undetermined* when only one of
    its values was evaluated or no noise estimate exists. Off a grid, delicate also needs the additive
    fit's F-test p-value below ``alpha``; a large spread that fails it is *undetermined* (more trials
    would tell). ``seed`` seeds fANOVA's forest.
    """
    names = list(space)
    done = _complete(trials)
    n_pruned = sum(1 for t in trials if t.get("pruned"))
    counts = {
        "trials": len(trials),
        "complete": len(done),
        "pruned": n_pruned,
        "failed": len(trials) - len(done) - n_pruned,
    }
    out: dict[str, Any] = {
        "metric": metric,
        "counts": counts,
        "design": None,
        "noise_floor": None,
        "importance": {},
        "importance_method": None,
        "verdicts": {},
        "interactions": [],
        "interactions_note": None,
        "warnings": [],
        "ranking": [],
    }
    warnings: list[str] = out["warnings"]
    if not done:
        warnings.append(f"all {len(trials)} trials were pruned or failed: nothing to analyse")
        out["interactions_note"] = "no complete trials"
        return out
    if counts["failed"]:
        kept = {id(t) for t in done}
        failed = sorted(int(t["trial"]) for t in trials if not t.get("pruned") and id(t) not in kept)
        warnings.append(
            f"{counts['failed']} trial(s) failed without a score (trials {failed}); check their logs"
        )

    best = done[0]
    floor = noise_floor(best, metric)
    out["noise_floor"] = floor
    se = floor["se"]
    varying = [n for n in names if len({_key(t["config"].get(n)) for t in done}) >= 2]
    levels = {n: _levels(done, n, space[n]) for n in names}
    binned = any(len(levels[n]) < len({_key(t["config"].get(n)) for t in done}) for n in names)
    grid = bool(varying) and not binned and _is_grid(done, varying)
    out["design"] = {
        "kind": "grid" if grid else "unstructured",
        "note": (
            "every combination of the searched values was evaluated: marginal means are balanced"
            if grid
            else "not a full grid: each hyperparameter's means come from an additive fit that takes the "
            "others' effects out (numeric values with many distinct values binned)"
        ),
    }

    # Verdicts: spread of the marginal means against the noise floor. Off a grid, the means come from
    # the additive fit (each hyperparameter's effect with the others' taken out), and a spread counts only
    # if the fit also tells it from the scatter of the trials (partial F-test): the spread of several
    # means of a few trials each is large by chance alone.
    fit = None if grid else _additive_fit(done, levels)
    for n in names:
        rows = levels[n]
        means = np.asarray([r["mean"] for r in rows])
        noise, source, p_value = se, "the noise floor", None
        if fit is not None:
            means, p_value = fit[n]
        elif not grid and len(rows) >= 2:  # too few trials for the fit: raw means and their own SE
            sds = [r["sd"] for r in rows if r["sd"] is not None]
            if sds:
                mean_se = float(np.sqrt(np.mean(np.square(sds)))) / math.sqrt(np.mean([r["n"] for r in rows]))
                if se is None or mean_se > se:
                    noise, source = mean_se, "the SE of its marginal means"
        spread = float(means.max() - means.min())
        values_text = _values_text([t["config"].get(n) for t in done], rows)
        if len(rows) < 2:
            verdict = "undetermined"
            evidence = f"only one value of {n} was evaluated ({values_text}): undetermined"
        elif noise is None:
            verdict = "undetermined"
            evidence = (
                f"{metric} moves {_fmt(spread)} across {n} ({values_text}), but there is no noise estimate"
            )
        else:
            large = spread > delicate_factor * noise
            real = p_value is None or p_value < alpha
            verdict = ("delicate" if real else "undetermined") if large else "permissive"
            close = noise > 0 and abs(spread / noise - delicate_factor) < 0.05  # 2 decimals, no "2.0x < 2x"
            ratio = f"{spread / noise:.{2 if close else 1}f}x" if noise > 0 else "infinitely many times"
            evidence = (
                f"{metric} moves {_fmt(spread)} across {n} ({values_text}), {ratio} {source} {_fmt(noise)}"
            )
            if not large:
                evidence += f" (delicate needs over {_fmt(delicate_factor)}x)"
            elif p_value is not None:
                evidence += (
                    f", and the additive fit tells it from the trials' scatter (p = {p_value:.2g})"
                    if real
                    else f", but the additive fit cannot tell it from the trials' scatter (p = {p_value:.2g})"
                )
            evidence += f": {verdict}"
        out["verdicts"][n] = {
            "verdict": verdict,
            "spread": _r(spread),
            "noise": _r(noise),
            "p_value": _r(p_value),
            "best_value": best["config"].get(n),
            "evidence": evidence,
            "levels": [
                {
                    "value": r["value"],
                    "label": r["label"],
                    "mean": _r(m),
                    "raw_mean": _r(r["mean"]),
                    "n": r["n"],
                }
                for r, m in zip(rows, means, strict=True)
            ],
        }

    # Importance: fANOVA when there are enough trials, else the normalised marginal spread.
    importance: dict[str, float] = {}
    if len(done) >= MIN_TRIALS_FANOVA and varying:
        try:
            importance = _fanova(done, varying, space, seed)
            out["importance_method"] = "fanova"
        except Exception as exc:  # optuna's forest can refuse odd inputs; the marginal spread still works
            warnings.append(f"fANOVA failed ({type(exc).__name__}: {exc}); importance is the marginal spread")
    elif varying:
        warnings.append(
            f"only {len(done)} complete trial(s): importance is the marginal spread "
            f"(fANOVA needs at least {MIN_TRIALS_FANOVA})"
        )
    if not importance:
        out["importance_method"] = "marginal"
        spreads = {n: out["verdicts"][n]["spread"] if n in varying else 0.0 for n in names}
        total = sum(spreads.values())
        importance = {
            n: (s / total if total > 0 else (1 / len(varying) if n in varying else 0.0))
            for n, s in spreads.items()
        }
    order = sorted(names, key=lambda n: (-importance.get(n, 0.0), n))
    out["importance"] = {n: _r(importance.get(n, 0.0)) for n in order}

    # Interactions between the most important pairs, where the trials form a grid on the pair.
    top = [n for n in order if n in varying][:top_k]
    skipped = []
    for a, b in combinations(top, 2):
        if (
            len(levels[a]) == len({_key(t["config"].get(a)) for t in done})
            and len(levels[b]) == len({_key(t["config"].get(b)) for t in done})
            and _is_grid(done, [a, b])
        ):
            out["interactions"].append(_interaction(done, a, b, se, delicate_factor, metric))
        else:
            skipped.append(f"{a} x {b}")
    if len(top) < 2:
        out["interactions_note"] = "fewer than two hyperparameters vary: no pair to test"
    elif skipped:
        out["interactions_note"] = (
            f"{', '.join(skipped)}: needs a grid on the pair (every combination of "
            "their values evaluated); a random or Bayesian search gives none"
        )

    # Warnings: interacting pairs; best value on the edge of its range; top configs within the noise floor.
    for inter in out["interactions"]:
        if inter["verdict"] == "interacting":
            a, b = inter["params"]
            warnings.append(
                f"{a} and {b} interact ({inter['share']:.0%} of the variance of their mean-score table): "
                "tune them together; their separate verdicts average over each other"
            )
    for n in names:
        text = _edge_warning(n, space[n], best["config"].get(n), out["verdicts"][n]["verdict"])
        if text:
            warnings.append(text)
    if se is not None and len(done) >= 2:
        close = [t for t in done if float(best["score"]) - float(t["score"]) <= se]
        if len(close) >= 2:
            warnings.append(
                f"the best {len(close)} configs are within 1 SE ({_fmt(se)}) of each other: the ranking "
                f"among them is noise — watch the size of the validation set ({floor['n_val']} samples; "
                "halving the SE takes four times as many)"
            )

    out["ranking"] = [
        {
            "rank": i + 1,
            "trial": int(t["trial"]),
            "config": dict(t["config"]),
            "score": _r(t["score"]),
            "gap": _r(float(best["score"]) - float(t["score"])),
            "gap_se": _r((float(best["score"]) - float(t["score"])) / se) if se else None,
        }
        for i, t in enumerate(done[:5])
    ]
    return out


def optimism_summary(
    outer_folds: Sequence[Mapping[str, Any]], *, metric: str = "score", factor: float = 2.0
) -> dict[str, Any]:
    """How much the best inner score overstates the outer (unseen) score, per fold and on average.

    Optimism = best inner score - outer score. "Nested CV matters" when the mean optimism is more than
    ``factor`` standard errors (std over folds / sqrt(folds)) above zero.
    """
    folds = sorted(outer_folds, key=lambda f: int(f["fold"]))
    if not folds:
        return {
            "n_folds": 0,
            "mean": None,
            "std": None,
            "se": None,
            "n_positive": 0,
            "per_fold": [],
            "mean_inner": None,
            "mean_outer": None,
            "summary": "no outer folds",
        }
    inner = np.asarray([float(f["best_inner_score"]) for f in folds])
    outer = np.asarray([float(f["outer_score"]) for f in folds])
    gap = inner - outer
    n = len(folds)
    mean = float(gap.mean())
    std = float(gap.std(ddof=1)) if n >= 2 else None
    se = std / math.sqrt(n) if std is not None else None
    n_pos = int((gap > 0).sum())
    verb = "overstated" if mean >= 0 else "understated"
    head = (
        f"selection on the inner folds {verb} {metric} by {_fmt(abs(mean))} on average "
        f"({n_pos} of {n} folds positive)"
    )
    if se is None:
        summary = f"{head}; one outer fold gives no spread to judge it by"
    elif mean > factor * se:
        summary = f"{head}: nested CV matters here (more than {_fmt(factor)} SE, SE {_fmt(se)})"
    elif mean < -factor * se:
        summary = (
            f"{head}: the outer folds scored higher than the inner ones "
            f"(more than {_fmt(factor)} SE, SE {_fmt(se)})"
        )
    else:
        summary = (
            f"{head}: within noise ({_fmt(factor)} SE = {_fmt(factor * se)}); "
            "the inner score is a fair guide here"
        )
    return {
        "n_folds": n,
        "mean": _r(mean),
        "std": _r(std),
        "se": _r(se),
        "n_positive": n_pos,
        "mean_inner": _r(inner.mean()),
        "mean_outer": _r(outer.mean()),
        "per_fold": [
            {"fold": int(f["fold"]), "best_inner_score": _r(i), "outer_score": _r(o), "optimism": _r(g)}
            for f, i, o, g in zip(folds, inner, outer, gap, strict=True)
        ],
        "summary": summary,
    }
