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
- *Near the best*: a hyperparameter is judged where the others are sane, not averaged over values no
  one would pick. A value is sane when some trial at it comes within ``delicate_factor`` noise floors
  of the best trial (off a grid: times the trials' scatter about the additive fit when larger, and a
  trial of a binned numeric one is left out only when it and a trial at a neighbouring value both fall
  short). A learning rate that collapses every run to chance is not sane, so the wreckage's scatter
  cannot make dropout look delicate.
  The evidence names what was left out and why; the all-trials spread is kept beside it.
- *Delicate or permissive*: the spread (max - min) of the mean score over a hyperparameter's values,
  on the trials whose *other* hyperparameters are sane, against the noise floor. On a full grid the
  others are balanced across the values and the raw means serve. On an unstructured search (random,
  Bayesian) they are not: the trials at one value have their own mix of the others, so the means come
  from an additive least-squares fit on all hyperparameters' (binned) values, and a spread counts only
  when that fit's partial F-test also tells it from the scatter of the trials (the spread of several
  means of a few trials each is large by chance alone: about 2.3 SE for 5 means); a large spread the
  test cannot confirm is *undetermined*.
- *Importance*: Optuna's fANOVA on an in-memory study rebuilt from the trials, or the normalised
  marginal spread when there are too few trials for fANOVA. Evidence only: it averages over collapsed
  runs too, so it never decides a verdict.
- *Interactions*: two-way ANOVA on the table of mean scores of the top pairs near the best (every
  hyperparameter sane), where the trials form a grid on the pair; noted only when the table departs
  from additive by more than ``delicate_factor`` noise floors, in points of the metric.
- *Edge*: "widen the range" only when the best value is an end of a numeric range or list and the mean
  score still rises toward that end, near the best and over all trials.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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
    return [_stats(row, scores) for row in rows]


def _stats(row: dict[str, Any], scores: np.ndarray) -> dict[str, Any]:
    """Add the mean, sd and count of ``scores`` over the row's trials (``idx``) to a level row."""
    s = scores[row["idx"]]
    row["mean"] = float(np.mean(s))
    row["sd"] = float(np.std(s, ddof=1)) if len(s) >= 2 else None
    row["n"] = len(s)
    return row


def _additive_fit(
    done: Sequence[Mapping[str, Any]], levels: Mapping[str, Sequence[Mapping[str, Any]]]
) -> tuple[dict[str, tuple[np.ndarray, float]], float] | None:
    """Main effects of every hyperparameter at once: least squares of score on one-hot levels.

    In an unstructured search the trials at one value of ``a`` have their own mix of values of ``b``,
    so ``a``'s raw marginal means carry ``b``'s effect too; the additive model separates them. Returns,
    per hyperparameter, the mean score at each level with the others averaged over the trials (equal to
    the raw marginal means on a full grid) and the p-value of the partial F-test that its levels differ
    at all, and the residual SD (the trials' scatter about the fit); None without the degrees of
    freedom to fit it.
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
    return out, math.sqrt(rss / dof)


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


# ------------------------------------------------------------------------ near the best: the others sane
@dataclass(frozen=True)
class _Ctx:
    """What every verdict of one search is judged with."""

    metric: str
    factor: float  # delicate / interacting / near-best thresholds, in units of the noise
    alpha: float
    se: float | None  # the noise floor
    grid: bool
    margin_text: str  # how far below the best a trial may fall and still count as near it, in words


def _is_binned(done: Sequence[Mapping[str, Any]], levels: Mapping[str, Sequence[Any]], name: str) -> bool:
    return len(levels[name]) < len({_key(t["config"].get(name)) for t in done})


def _margin(
    se: float | None, scatter: float | None, grid: bool, factor: float, best: float
) -> tuple[float | None, str]:
    """How far below the best score a trial may fall and still count as near the best.

    ``factor`` times the noise floor. Off a grid, times the trials' scatter about the additive fit when
    that is larger: there the trials are single draws at scattered values, so the floor alone would
    call ordinary scatter a failure; a collapse inflates the scatter too, but stays far beyond it.
    None without a noise estimate: then every trial counts.
    """
    if se is None:
        return None, ""
    noise, what = se, "the noise floor"
    if not grid and scatter is not None and scatter > se:
        noise, what = scatter, "the trials' scatter about the additive fit"
    margin = factor * noise
    return margin, f"{_fmt(margin)} of the best {_fmt(best)} ({_fmt(factor)}x {what} {_fmt(noise)})"


def _sane_in(
    done: Sequence[Mapping[str, Any]], name: str, rows: Sequence[Mapping[str, Any]], ok: np.ndarray
) -> np.ndarray:
    """Per trial, whether it sits where ``name`` can score near the best (``ok``: the trials that do).

    For a listed value: some trial at that value is ok (some setting of the others does about as well
    there as anywhere). For a numeric hyperparameter binned for its means: the trial is ok itself, or
    so are its neighbours on both sides in ``name``'s sorted values; a failed trial next to another
    failed one sits in a stretch where runs fail (a learning rate too high to train), and a bin may
    straddle where that stretch begins.
    """
    sane = np.zeros(len(done), dtype=bool)
    if not _is_binned(done, {name: rows}, name):
        for row in rows:
            sane[row["idx"]] = ok[row["idx"]].any()
        return sane
    order = sorted(range(len(done)), key=lambda i: (float(done[i]["config"][name]), int(done[i]["trial"])))
    for k, i in enumerate(order):
        sides = order[max(k - 1, 0) : k] + order[k + 1 : k + 2]
        sane[i] = ok[i] or all(ok[j] for j in sides)
    return sane


def _sane_trials(
    done: Sequence[Mapping[str, Any]], levels: Mapping[str, Sequence[Mapping[str, Any]]], margin: float | None
) -> dict[str, np.ndarray]:
    """Per hyperparameter, which trials sit where it can score near the best (``_sane_in``): a trial is
    ok when it comes within ``margin`` of the best trial. A value that wrecks every run (a learning
    rate that collapses training to chance) or is clearly worse whatever the others do is not sane."""
    scores = np.asarray([float(t["score"]) for t in done])
    ok = scores >= scores.max() - (math.inf if margin is None else margin)
    return {n: _sane_in(done, n, rows, ok) for n, rows in levels.items()}


def _near_best(sane: Mapping[str, np.ndarray], names: Sequence[str], n: int) -> np.ndarray:
    """Mask of the trials that are sane in every hyperparameter in ``names``."""
    mask = np.ones(n, dtype=bool)
    for name in names:
        mask &= sane[name]
    return mask


def _restrict(
    done: Sequence[Mapping[str, Any]], levels: Mapping[str, Sequence[Mapping[str, Any]]], mask: np.ndarray
) -> tuple[list[Mapping[str, Any]], dict[str, list[dict[str, Any]]]]:
    """The trials in ``mask`` and their levels re-indexed onto them (empty levels dropped, stats redone)."""
    keep = [int(i) for i in np.flatnonzero(mask)]
    pos = {i: j for j, i in enumerate(keep)}
    sub = [done[i] for i in keep]
    scores = np.asarray([float(t["score"]) for t in sub])
    out = {}
    for name, rows in levels.items():
        kept = [(r, [pos[int(i)] for i in r["idx"] if int(i) in pos]) for r in rows]
        out[name] = [
            _stats({"value": r["value"], "label": r["label"], "idx": idx}, scores) for r, idx in kept if idx
        ]
    return sub, out


def _runs(values: Sequence[float], ok: np.ndarray) -> list[str]:
    """The stretches of (sorted) values whose trials are not sane, as "low..high (n trials)"."""
    runs: list[list[float]] = []
    previous_ok = True
    for i in sorted(range(len(values)), key=lambda i: (values[i], i)):
        if not ok[i]:
            if previous_ok:
                runs.append([])
            runs[-1].append(values[i])
        previous_ok = bool(ok[i])
    return [f"{_fmt(min(r))}..{_fmt(max(r))} ({len(r)} trial{'s' * (len(r) > 1)})" for r in runs]


def _excluded(
    done: Sequence[Mapping[str, Any]],
    levels: Mapping[str, Sequence[Mapping[str, Any]]],
    sane: Mapping[str, np.ndarray],
    names: Sequence[str],
) -> dict[str, list[str]]:
    """What is not near the best, per hyperparameter in ``names``: its values, or stretches of values."""
    out = {}
    for n in (n for n in names if not sane[n].all()):
        if _is_binned(done, levels, n):
            out[n] = _runs([float(t["config"][n]) for t in done], sane[n])
        else:
            out[n] = [r["label"] for r in levels[n] if not sane[n][r["idx"][0]]]
    return out


def _excluded_text(excluded: Mapping[str, Sequence[str]], margin_text: str) -> str:
    """The sentence that says which values were left out as not near the best, and why."""
    listed = "; ".join(f"{n} = {', '.join(labels)}" for n, labels in excluded.items())
    return f"Near the best means all values but {listed}, where no trial comes within {margin_text}"


# ------------------------------------------------------------------------------------------ verdicts
def _effect(
    rows: Sequence[Mapping[str, Any]], fitted: tuple[np.ndarray, float] | None, grid: bool, se: float | None
) -> dict[str, Any]:
    """One hyperparameter's mean score per level, their spread, the noise to judge it by and the
    additive fit's F-test p-value (off a grid; None on one, where the raw means are balanced)."""
    means = np.asarray([r["mean"] for r in rows])
    noise, source, p_value = se, "the noise floor", None
    if fitted is not None:
        means, p_value = fitted
    elif not grid and len(rows) >= 2:  # too few trials for the fit: raw means and their own SE
        sds = [r["sd"] for r in rows if r["sd"] is not None]
        if sds:
            mean_se = float(np.sqrt(np.mean(np.square(sds)))) / math.sqrt(np.mean([r["n"] for r in rows]))
            if se is None or mean_se > se:
                noise, source = mean_se, "the SE of its marginal means"
    spread = float(means.max() - means.min())
    return {"rows": rows, "means": means, "spread": spread, "noise": noise, "source": source, "p": p_value}


def _ratio(x: float, noise: float, factor: float) -> str:
    """x / noise as "2.4x", with 2 decimals near the threshold so it never reads "2.0x < 2x"."""
    if noise <= 0:
        return "infinitely many times"
    close = abs(x / noise - factor) < 0.05
    return f"{x / noise:.{2 if close else 1}f}x"


def _judge(
    name: str, effect: Mapping[str, Any], values_text: str, ctx: _Ctx, where: str = ""
) -> tuple[str, str]:
    """Verdict and evidence from one effect: its spread against ``ctx.factor`` times its noise."""
    spread, noise, p_value = effect["spread"], effect["noise"], effect["p"]
    moves = f"{ctx.metric} moves {_fmt(spread)} across {name} ({values_text}){where}"
    if len(effect["rows"]) < 2:
        return "undetermined", f"only one value of {name} was evaluated{where} ({values_text}): undetermined"
    if noise is None:
        return "undetermined", f"{moves}, but there is no noise estimate: undetermined"
    large = spread > ctx.factor * noise
    real = p_value is None or p_value < ctx.alpha
    verdict = ("delicate" if real else "undetermined") if large else "permissive"
    text = f"{moves}, {_ratio(spread, noise, ctx.factor)} {effect['source']} {_fmt(noise)}"
    if not large:
        text += f" (delicate needs over {_fmt(ctx.factor)}x)"
    elif p_value is not None:
        text += (
            f", and the additive fit tells it from the trials' scatter (p = {p_value:.2g})"
            if real
            else f", but the additive fit cannot tell it from the trials' scatter (p = {p_value:.2g})"
        )
    return verdict, f"{text}: {verdict}"


def _level_rows(effect: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {"value": r["value"], "label": r["label"], "mean": _r(m), "raw_mean": _r(r["mean"]), "n": r["n"]}
        for r, m in zip(effect["rows"], effect["means"], strict=True)
    ]


def _verdict(
    name: str,
    done: Sequence[Mapping[str, Any]],
    levels: Mapping[str, Sequence[Mapping[str, Any]]],
    fit: Any,
    sane: Mapping[str, np.ndarray],
    ctx: _Ctx,
) -> dict[str, Any]:
    """Delicate / permissive / undetermined for ``name``, judged where the others can score near the best.

    The spread of its mean scores is measured on the trials whose other hyperparameters all sit at
    sane values (``_sane_trials``), so a value of another one that wrecks every run cannot make it look
    delicate by the scatter of the wreckage. The spread over all trials (``marginal_spread``) is kept
    as evidence beside it, and ``levels`` are still the all-trials means.
    """
    marginal = _effect(levels[name], fit[0][name] if fit else None, ctx.grid, ctx.se)
    others = [m for m in levels if m != name]
    excluded = _excluded(done, levels, sane, others)
    sub, conditional = done, marginal
    if excluded:
        sub, sub_levels = _restrict(done, levels, _near_best(sane, others, len(done)))
        sub_fit = None if ctx.grid else _additive_fit(sub, sub_levels)
        conditional = _effect(sub_levels[name], sub_fit[0][name] if sub_fit else None, ctx.grid, ctx.se)
    values_text = _values_text([t["config"].get(name) for t in sub], conditional["rows"])
    verdict, evidence = _judge(
        name, conditional, values_text, ctx, " with the others near the best" * bool(excluded)
    )
    if excluded:
        evidence += f". {_excluded_text(excluded, ctx.margin_text)}; over all trials it moves "
        evidence += _fmt(marginal["spread"])
        if marginal["noise"]:
            evidence += f" ({_ratio(marginal['spread'], marginal['noise'], ctx.factor)} {marginal['source']})"
    return {
        "verdict": verdict,
        "spread": _r(conditional["spread"]),
        "noise": _r(conditional["noise"]),
        "p_value": _r(conditional["p"]),
        "marginal_spread": _r(marginal["spread"]),
        "excluded": excluded,
        "best_value": done[0]["config"].get(name),
        "evidence": evidence,
        "levels": _level_rows(marginal),
        "conditional_levels": _level_rows(conditional),
    }


# -------------------------------------------------------------------------------------- interactions
def _interaction(
    sub: Sequence[Mapping[str, Any]], a: str, b: str, ctx: _Ctx, excluded: Mapping[str, Sequence[str]]
) -> dict[str, Any]:
    """Two-way ANOVA on the table of mean scores (rows: values of a, columns: values of b) of ``sub``.

    Interacting when the table's largest departure from additive (a cell minus its row and column
    effects) exceeds ``ctx.factor`` times the noise floor, measured in points of the metric.
    """
    rows = sorted({_key(t["config"].get(a)) for t in sub})
    cols = sorted({_key(t["config"].get(b)) for t in sub})
    sums, counts = np.zeros((len(rows), len(cols))), np.zeros((len(rows), len(cols)))
    for t in sub:
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
    noise = ctx.se
    if noise is None:
        verdict, versus = "undetermined", "with no noise floor to compare it with"
    else:
        verdict = "interacting" if largest > ctx.factor * noise else "additive"
        versus = f"{_ratio(largest, noise, ctx.factor)} the noise floor {_fmt(noise)}"
        versus += "" if verdict == "interacting" else f" (interacting needs over {_fmt(ctx.factor)}x)"
    evidence = (
        f"the {a} x {b} interaction{' near the best' * bool(excluded)}: over the {len(rows)}x{len(cols)} "
        f"table of mean {ctx.metric} the largest departure from additive is {_fmt(largest)}, {versus}: "
        f"{verdict} (it holds {shares[2]:.0%} of the table's variance)"
    )
    if excluded:
        evidence += f". {_excluded_text(excluded, ctx.margin_text)}"
    return {
        "params": [a, b],
        "share": _r(shares[2]),
        "main_shares": [_r(shares[0]), _r(shares[1])],
        "max_residual": _r(largest),
        "noise": _r(noise),
        "excluded": dict(excluded),
        "verdict": verdict,
        "evidence": evidence,
    }


def _pair(
    done: Sequence[Mapping[str, Any]],
    levels: Mapping[str, Sequence[Mapping[str, Any]]],
    sane: Mapping[str, np.ndarray],
    pair: tuple[str, str],
    ctx: _Ctx,
) -> dict[str, Any] | None:
    """The a x b interaction where every hyperparameter (a and b too) sits at a sane level.

    An interaction among values that no one would pick (a collapsed learning rate) says nothing about
    how to tune; near the best it says whether the best value of one moves with the other. None when
    the trials do not form a grid on the pair (or a numeric one is binned).
    """
    if any(_is_binned(done, levels, n) for n in pair):
        return None
    sub = [done[i] for i in np.flatnonzero(_near_best(sane, list(levels), len(done)))]
    excluded = _excluded(done, levels, sane, list(levels))
    single = [n for n in pair if len({_key(t["config"].get(n)) for t in sub}) < 2]
    if single:
        n = single[0]
        return {
            "params": list(pair),
            "share": None,
            "main_shares": [None, None],
            "max_residual": None,
            "noise": _r(ctx.se),
            "excluded": excluded,
            "verdict": "untestable",
            "evidence": f"the {pair[0]} x {pair[1]} interaction cannot be measured near the best: only "
            f"{n} = {_fmt(sub[0]['config'].get(n))} has a trial within {ctx.margin_text}, so there is no "
            "second good value to compare it with: untestable",
        }
    if not _is_grid(sub, list(pair)):
        return None
    return _interaction(sub, *pair, ctx, excluded)


def _interaction_warning(inter: Mapping[str, Any], ctx: _Ctx) -> str:
    a, b = inter["params"]
    near = " near the best" if inter.get("excluded") else ""
    ratio = _ratio(inter["max_residual"], inter["noise"], ctx.factor)
    return (
        f"{a} and {b} interact{near}: their table of mean {ctx.metric} departs from additive by up to "
        f"{_fmt(inter['max_residual'])} ({ratio} the noise floor {_fmt(inter['noise'])}): tune them "
        "together; their separate verdicts average over each other"
    )


# ------------------------------------------------------------------------------------------ warnings
def _number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _outward_step(levels: Sequence[Mapping[str, Any]], at_low: bool) -> tuple[float, str] | None:
    """How much the mean score rises from the next level inward to the end level, and that level's
    label; None with fewer than two numeric levels."""
    rows = sorted((lv for lv in levels if _number(lv["value"])), key=lambda lv: lv["value"])
    if len(rows) < 2:
        return None
    end, inner = (rows[0], rows[1]) if at_low else (rows[-1], rows[-2])
    return float(end["mean"]) - float(inner["mean"]), inner["label"]


def _edge_warning(name: str, spec: Mapping[str, Any], best: Any, entry: Mapping[str, Any]) -> str | None:
    """Advise widening the range when the best value is at an end of a numeric range or list AND the
    mean score still rises toward that end, both where the others are near the best and over all trials.

    A best value on the edge whose score falls toward it (a two-value list won at one end by noise, a
    slope pointing inward) is no reason to search further out; a non-numeric list has no outward.
    """
    values = list(spec.get("values") or [])
    if not _number(best) or not (_is_numeric(spec) or (values and all(_number(v) for v in values))):
        return None
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
    if at_low and low == 0:  # 0 is "off" (dropout, weight decay, l1): nothing lies below it to search
        return None
    steps = [_outward_step(entry[k], at_low) for k in ("conditional_levels", "levels")]
    if any(s is None or s[0] <= 0 for s in steps):
        return None
    (rise, inner), where, way = steps[0], *(("bottom", "downward") if at_low else ("top", "upward"))
    exact = best == (low if at_low else high)
    others = ", the others near the best" if entry.get("excluded") else ""
    text = (
        f"{name}: the best value {_fmt(best)} is {'the' if exact else 'near the'} {where} of its range "
        f"[{_fmt(low)}, {_fmt(high)}] and the mean score still rises toward it (+{_fmt(rise)} from "
        f"{inner}{others}); widen the range {way}"
    )
    if entry["verdict"] == "permissive":
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

    Verdicts are judged near the best: a value (or bin) of a hyperparameter counts as sane when its best
    trial comes within ``delicate_factor`` times the noise floor of the best trial (off a grid: times the
    trials' scatter about the additive fit, if larger); collapsed or clearly worse values are not.
    A hyperparameter is *delicate* when, on the trials whose *other* hyperparameters are all sane, the
    spread of its mean score exceeds ``delicate_factor`` times the noise, *permissive* when it does not,
    *undetermined* when only one of its values was evaluated there or no noise estimate exists. Off a
    grid, delicate also needs the additive fit's F-test p-value below ``alpha``; a large spread that
    fails it is *undetermined* (more trials would tell). Interactions are measured on the trials where
    every hyperparameter is sane, and noted only above ``delicate_factor`` times the noise floor.
    fANOVA / marginal importance is reported as evidence, never used for a verdict. ``seed`` seeds
    fANOVA's forest.
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
        "near_best": None,
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
    binned = any(_is_binned(done, levels, n) for n in names)
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

    # Verdicts, near the best: each hyperparameter's spread where the others sit at sane levels. Off a
    # grid the means come from the additive fit and a spread counts only if its F-test confirms it.
    fit = None if grid else _additive_fit(done, levels)
    margin, margin_text = _margin(se, fit[1] if fit else None, grid, delicate_factor, float(best["score"]))
    sane = _sane_trials(done, levels, margin)
    ctx = _Ctx(metric, delicate_factor, alpha, se, grid, margin_text)
    excluded = _excluded(done, levels, sane, names)
    out["near_best"] = {"margin": _r(margin), "rule": margin_text, "excluded": excluded}
    for n in names:
        out["verdicts"][n] = _verdict(n, done, levels, fit, sane, ctx)

    # Importance (evidence only): fANOVA when there are enough trials, else the normalised marginal spread.
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
        spreads = {n: out["verdicts"][n]["marginal_spread"] if n in varying else 0.0 for n in names}
        total = sum(spreads.values())
        importance = {
            n: (s / total if total > 0 else (1 / len(varying) if n in varying else 0.0))
            for n, s in spreads.items()
        }
    order = sorted(names, key=lambda n: (-importance.get(n, 0.0), n))
    out["importance"] = {n: _r(importance.get(n, 0.0)) for n in order}

    # Interactions between the most important pairs, near the best, where the trials form a grid on them.
    top = [n for n in order if n in varying][:top_k]
    skipped = []
    for a, b in combinations(top, 2):
        inter = _pair(done, levels, sane, (a, b), ctx)
        if inter is None:
            skipped.append(f"{a} x {b}")
        else:
            out["interactions"].append(inter)
    if len(top) < 2:
        out["interactions_note"] = "fewer than two hyperparameters vary: no pair to test"
    elif skipped:
        out["interactions_note"] = (
            f"{', '.join(skipped)}: needs a grid on the pair (every combination of "
            "their values evaluated); a random or Bayesian search gives none"
        )

    # Warnings: interacting pairs; best value on the edge with the score rising toward it; top configs
    # within the noise floor.
    warnings += [_interaction_warning(i, ctx) for i in out["interactions"] if i["verdict"] == "interacting"]
    for n in names:
        text = _edge_warning(n, space[n], best["config"].get(n), out["verdicts"][n])
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
