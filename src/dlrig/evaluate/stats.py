"""Comparing models honestly: intervals, paired tests that respect overlapping training sets, and a
Bayesian test that can say "practically equivalent".

Every comparison takes scores where **higher is better** (accuracy, not error) and works on the
differences ``a - b``: a positive mean difference favours model A. Each result is a frozen dataclass with
the statistic, the p-value (or posterior probabilities), a summary of the inputs, a plain-language
``verdict`` and ``to_dict()`` for JSON.

Why not the ordinary paired t-test on CV scores? Fold scores share most of their training data (and, for
repeated splits, test data), so they are positively correlated; the naive variance ``var/k`` is far too
small and the test finds "significant" differences between equally good models much more often than its
nominal rate. :func:`corrected_resampled_ttest` (Nadeau & Bengio, 2003) inflates the variance for that
overlap; :func:`naive_paired_ttest` is kept only to show the difference.

References: Nadeau & Bengio (2003) "Inference for the generalization error", Machine Learning 52;
Dietterich (1998) "Approximate statistical tests for comparing supervised classification learning
algorithms", Neural Computation 10; Benavoli, Corani, Demšar & Zaffalon (2017) "Time for a change: a
tutorial for comparing multiple classifiers through Bayesian analysis", JMLR 18.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from dlrig.evaluate.metrics import clip_proba

Labels = tuple[str, str]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN or infinity; the p-value still tells the story
    return value


class _Result:
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict; NaN and infinities become ``null``."""
        return _jsonable(dataclasses.asdict(self))  # type: ignore[call-overload]


def _p(p: float) -> str:
    """A p-value as a person reads it: 3 significant digits, never '0.0'."""
    return "< 0.001" if p < 0.001 else f"= {p:.3g}"


def _test_verdict(p: float, mean_diff: float, alpha: float, labels: Labels) -> str:
    a, b = labels
    if math.isnan(p):
        return "no test possible: not enough scores"
    if p < alpha:
        better, worse = (a, b) if mean_diff > 0 else (b, a)
        shown = "p < 0.001" if p < 0.001 else f"p = {p:.3g} < {alpha:g}"
        return f"model {better} is better than {worse} ({shown})"
    return f"no significant difference (p {_p(p)}): the data cannot tell {a} and {b} apart"


def _paired(scores_a: Any, scores_b: Any, min_k: int = 2) -> np.ndarray:
    a = np.asarray(scores_a, dtype=np.float64).ravel()
    b = np.asarray(scores_b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"scores_a and scores_b must pair up (got {a.size} and {b.size} scores)")
    if a.size < min_k:
        raise ValueError(f"need at least {min_k} paired scores (got {a.size})")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("scores contain NaN or infinite values")
    return a - b


def _t_and_p(mean: float, se: float, dof: float) -> tuple[float, float]:
    """Two-sided t-test of ``mean / se`` against 0; a zero standard error is handled, not divided by."""
    if se > 0:
        t = mean / se
        return float(t), float(2 * stats.t.sf(abs(t), dof))
    if mean == 0:
        return 0.0, 1.0  # identical scores everywhere: no evidence of any difference
    return math.copysign(math.inf, mean), 0.0  # a constant non-zero difference


# ---------------------------------------------------------------------------------------- mean +- CI
@dataclass(frozen=True)
class MeanCI(_Result):
    mean: float
    std: float  # sample standard deviation (ddof=1)
    low: float
    high: float
    confidence: float
    n: int
    verdict: str


def mean_ci(scores: Any, confidence: float = 0.95) -> MeanCI:
    """Mean, standard deviation and Student-t interval ``mean +- t_{n-1} * std / sqrt(n)``.

    For CV fold scores this interval is too narrow for the same reason the naive t-test is too eager
    (the folds are correlated); read it as a summary of the folds, not a guarantee.
    """
    x = np.asarray(scores, dtype=np.float64).ravel()
    if x.size == 0 or not np.isfinite(x).all():
        raise ValueError("scores must be a non-empty array of finite numbers")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1) (got {confidence})")
    n, mean = int(x.size), float(x.mean())
    if n == 1:
        nan = math.nan
        return MeanCI(mean, nan, nan, nan, confidence, n, f"{mean:.4g} (one score: no interval)")
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    low, high = mean - half, mean + half
    verdict = f"{mean:.4g} +- {std:.2g} ({confidence:.0%} CI {low:.4g} to {high:.4g}, n = {n})"
    return MeanCI(mean, std, low, high, confidence, n, verdict)


# -------------------------------------------------------------------------------- paired t-tests
@dataclass(frozen=True)
class TTestResult(_Result):
    test: str
    statistic: float
    p_value: float
    dof: int
    mean_diff: float  # mean of a - b
    std_diff: float  # sample std (ddof=1) of a - b
    k: int  # number of paired scores
    alpha: float
    verdict: str
    details: dict[str, Any] = field(default_factory=dict)


def corrected_resampled_ttest(
    scores_a: Any,
    scores_b: Any,
    n_train: int,
    n_test: int,
    alpha: float = 0.05,
    labels: Labels = ("A", "B"),
) -> TTestResult:
    """Nadeau & Bengio's corrected resampled t-test on paired per-split scores.

    ``scores_a[j]`` and ``scores_b[j]`` come from the same train/test split ``j`` (random splits, or the
    folds of (repeated) k-fold CV); ``n_train``/``n_test`` are the sizes of one split. The variance of the
    mean difference is ``var * (1/k + n_test/n_train)`` instead of ``var / k``, and ``t`` has ``k - 1``
    degrees of freedom; the p-value is two-sided.
    """
    if n_train < 1 or n_test < 1:
        raise ValueError(f"n_train and n_test must be >= 1 (got {n_train}, {n_test})")
    d = _paired(scores_a, scores_b)
    k, mean, var = d.size, float(d.mean()), float(d.var(ddof=1))
    factor = 1 / k + n_test / n_train
    t, p = _t_and_p(mean, math.sqrt(factor * var), k - 1)
    return TTestResult(
        "corrected resampled t-test (Nadeau & Bengio)",
        t,
        p,
        k - 1,
        mean,
        math.sqrt(var),
        k,
        alpha,
        _test_verdict(p, mean, alpha, labels),
        {"n_train": int(n_train), "n_test": int(n_test), "variance_factor": factor},
    )


def naive_paired_ttest(
    scores_a: Any, scores_b: Any, alpha: float = 0.05, labels: Labels = ("A", "B")
) -> TTestResult:
    """The ordinary paired t-test (as ``scipy.stats.ttest_rel``): **overconfident on CV scores**.

    Kept to show how much the correction matters; do not base a decision on it for resampled scores.
    """
    d = _paired(scores_a, scores_b)
    k, mean, var = d.size, float(d.mean()), float(d.var(ddof=1))
    t, p = _t_and_p(mean, math.sqrt(var / k), k - 1)
    return TTestResult(
        "naive paired t-test",
        t,
        p,
        k - 1,
        mean,
        math.sqrt(var),
        k,
        alpha,
        _test_verdict(p, mean, alpha, labels),
        {"variance_factor": 1 / k},
    )


# --------------------------------------------------------------------------------------- 5x2cv
def paired_ttest_5x2cv(diffs: Any, alpha: float = 0.05, labels: Labels = ("A", "B")) -> TTestResult:
    """Dietterich's 5x2cv paired t-test from the ``[5, 2]`` array of score differences ``p_i^(j)``.

    Row ``i`` is replication ``i`` of 2-fold CV, column ``j`` the fold; each entry is
    ``score_a - score_b`` on that fold. With ``pbar_i`` the row mean and
    ``s_i^2 = (p_i^(1) - pbar_i)^2 + (p_i^(2) - pbar_i)^2``, ``t = p_1^(1) / sqrt(mean_i s_i^2)`` has 5
    degrees of freedom. (Only ``p_1^(1)`` enters the numerator: that is the test as published.)
    """
    p = np.asarray(diffs, dtype=np.float64)
    if p.shape != (5, 2):
        raise ValueError(f"diffs must have shape [5, 2] (got {list(p.shape)})")
    if not np.isfinite(p).all():
        raise ValueError("diffs contain NaN or infinite values")
    s2 = ((p - p.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
    t, pv = _t_and_p(float(p[0, 0]), math.sqrt(float(s2.mean())), 5)
    return TTestResult(
        "5x2cv paired t-test (Dietterich)",
        t,
        pv,
        5,
        float(p.mean()),
        float(p.ravel().std(ddof=1)),
        10,
        alpha,
        _test_verdict(pv, float(p[0, 0]), alpha, labels),
        {"diffs": p.tolist(), "s2": s2.tolist()},
    )


def _fresh(make: Any) -> Any:
    """An unfitted estimator: a clone of an sklearn-like estimator, or the result of a factory."""
    if hasattr(make, "fit") and not isinstance(make, type):
        from sklearn.base import clone

        return clone(make)
    if callable(make):
        return make()
    raise TypeError(f"expected an estimator with fit() or a factory callable (got {type(make).__name__})")


def run_5x2cv(
    make_a: Any,
    make_b: Any,
    X: np.ndarray,
    y: np.ndarray,
    scoring: str | Callable[[Any, np.ndarray, np.ndarray], float] = "accuracy",
    seed: int = 0,
    alpha: float = 0.05,
    labels: Labels = ("A", "B"),
) -> TTestResult:
    """Run 5 replications of stratified 2-fold CV on both models and apply :func:`paired_ttest_5x2cv`.

    ``make_a``/``make_b`` are sklearn-like estimators (cloned before every fit, so no fold sees another's
    state) or zero-argument factories returning one. ``scoring`` is an sklearn scorer name or a callable
    ``scorer(estimator, X, y)`` (higher is better). Both models see exactly the same splits; replication
    ``i`` shuffles with a seed derived from ``seed``.
    """
    from sklearn.metrics import get_scorer
    from sklearn.model_selection import StratifiedKFold

    scorer = get_scorer(scoring) if isinstance(scoring, str) else scoring
    X, y = np.asarray(X), np.asarray(y)
    seeds = [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(5)]
    scores = np.zeros((2, 5, 2))
    for i, rep_seed in enumerate(seeds):
        folds = StratifiedKFold(n_splits=2, shuffle=True, random_state=rep_seed).split(X, y)
        for j, (train, test) in enumerate(folds):
            for m, make in enumerate((make_a, make_b)):
                est = _fresh(make).fit(X[train], y[train])
                scores[m, i, j] = scorer(est, X[test], y[test])
    result = paired_ttest_5x2cv(scores[0] - scores[1], alpha=alpha, labels=labels)
    scoring_name = scoring if isinstance(scoring, str) else getattr(scoring, "__name__", "custom")
    details = {
        **result.details,
        "scores_a": scores[0].tolist(),
        "scores_b": scores[1].tolist(),
        "seed": seed,
        "scoring": scoring_name,
    }
    return dataclasses.replace(result, details=details)


# -------------------------------------------------------------------------------------- McNemar
@dataclass(frozen=True)
class McNemarResult(_Result):
    test: str
    statistic: float  # chi-square statistic, or b for the exact test
    p_value: float
    method: str  # "exact" (binomial) or "chi2" (with continuity correction)
    b: int  # A right, B wrong
    c: int  # A wrong, B right
    n: int
    alpha: float
    verdict: str


def mcnemar(
    y_true: Any,
    pred_a: Any,
    pred_b: Any,
    exact: bool | None = None,
    alpha: float = 0.05,
    labels: Labels = ("A", "B"),
) -> McNemarResult:
    """McNemar's test on one test set: do A and B make *different* mistakes more often one way?

    Only the discordant samples count: ``b`` (A right, B wrong) and ``c`` (A wrong, B right). Under the null
    each is equally likely, so ``b ~ Binomial(b + c, 1/2)``. ``exact=None`` uses the exact two-sided
    binomial test when ``b + c < 25`` and the chi-square test with continuity correction,
    ``(|b - c| - 1)^2 / (b + c)`` with 1 dof, otherwise; ``True``/``False`` force one.
    """
    y_true, pred_a, pred_b = (np.asarray(v).ravel() for v in (y_true, pred_a, pred_b))
    if not (y_true.shape == pred_a.shape == pred_b.shape):
        raise ValueError(
            f"y_true, pred_a and pred_b must have the same length (got {y_true.size}, {pred_a.size}, "
            f"{pred_b.size})"
        )
    right_a, right_b = pred_a == y_true, pred_b == y_true
    b, c = int((right_a & ~right_b).sum()), int((~right_a & right_b).sum())
    use_exact = (b + c < 25) if exact is None else bool(exact)
    if b + c == 0:
        stat, p = 0.0, 1.0
    elif use_exact:
        stat, p = float(b), float(stats.binomtest(b, b + c, 0.5).pvalue)
    else:
        stat = (abs(b - c) - 1) ** 2 / (b + c)
        p = float(stats.chi2.sf(stat, 1))
    method = "exact" if use_exact else "chi2"
    verdict = _test_verdict(p, b - c, alpha, labels) + f" [{b} vs {c} discordant samples]"
    return McNemarResult("McNemar", stat, p, method, b, c, int(y_true.size), alpha, verdict)


# ---------------------------------------------------------------------- Bayesian correlated t-test
@dataclass(frozen=True)
class BayesResult(_Result):
    test: str
    p_a_better: float  # P(diff > rope)
    p_rope: float  # P(|diff| <= rope): practically equivalent
    p_b_better: float  # P(diff < -rope)
    mean_diff: float  # posterior location
    scale: float  # posterior scale
    dof: int
    rho: float
    rope: float
    k: int
    verdict: str


def bayesian_correlated_ttest(
    scores_a: Any,
    scores_b: Any,
    rho: float,
    rope: float = 0.01,
    labels: Labels = ("A", "B"),
) -> BayesResult:
    """Benavoli et al.'s (2017) Bayesian correlated t-test on paired per-fold scores.

    The posterior of the mean difference ``a - b`` is Student t with ``k - 1`` dof, location the mean
    difference and scale ``sqrt((1/k + rho/(1 - rho)) * var)`` (``var`` with ddof=1). ``rho`` is the
    correlation between folds, usually ``n_test / (n_test + n_train)`` (``1/K`` for K-fold CV).
    ``rope`` is the region of practical equivalence: differences within ``+-rope`` do not matter.
    Returns ``P(A better) = P(diff > rope)``, ``P(rope)`` and ``P(B better) = P(diff < -rope)``.
    """
    if not 0 <= rho < 1:
        raise ValueError(f"rho must lie in [0, 1) (got {rho})")
    if rope < 0:
        raise ValueError(f"rope must be >= 0 (got {rope})")
    d = _paired(scores_a, scores_b)
    k, mean, var = d.size, float(d.mean()), float(d.var(ddof=1))
    scale = math.sqrt((1 / k + rho / (1 - rho)) * var)
    if scale > 0:
        post = stats.t(df=k - 1, loc=mean, scale=scale)
        p_a, p_b = float(post.sf(rope)), float(post.cdf(-rope))
    else:  # every fold gave the same difference: the posterior is a point mass there
        p_a, p_b = float(mean > rope), float(mean < -rope)
    p_rope = max(0.0, 1.0 - p_a - p_b)
    a, b = labels
    verdict = (
        f"P({a} better) = {p_a:.2f}, P(practically equivalent, |diff| < {rope:g}) = {p_rope:.2f}, "
        f"P({b} better) = {p_b:.2f}"
    )
    best = max((p_a, f"{a} is better"), (p_rope, "practically equivalent"), (p_b, f"{b} is better"))
    verdict += f": {best[1]}" if best[0] >= 0.95 else ": no decision at 95%"
    return BayesResult(
        "Bayesian correlated t-test (Benavoli et al.)",
        p_a,
        p_rope,
        p_b,
        mean,
        scale,
        k - 1,
        rho,
        rope,
        k,
        verdict,
    )


# ----------------------------------------------------------------------------------- bootstrap
@dataclass(frozen=True)
class BootstrapCI(_Result):
    metric: str
    estimate: float  # the metric on the full test set
    low: float
    high: float
    std: float  # standard deviation of the bootstrap distribution
    confidence: float
    n_boot: int
    n: int
    seed: int
    method: str  # "BCa", or "percentile" where asked for or where BCa failed
    verdict: str


def _labels_of(pred: np.ndarray) -> np.ndarray:
    return pred.argmax(axis=1) if pred.ndim == 2 else pred


def _accuracy_boot(y: np.ndarray, pred: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return (_labels_of(pred) == y)[idx].mean(axis=1)


def _balanced_accuracy_boot(y: np.ndarray, pred: np.ndarray, idx: np.ndarray) -> np.ndarray:
    # Per resample and class: how many drawn, how many of those right; recall averaged over the classes
    # that were drawn (sklearn's definition when a class is absent).
    classes, yi = np.unique(y, return_inverse=True)
    k, n_boot = classes.size, idx.shape[0]
    flat = (np.arange(n_boot)[:, None] * k + yi[idx]).ravel()
    drawn = np.bincount(flat, minlength=n_boot * k).reshape(n_boot, k)
    right = np.bincount(flat, weights=(_labels_of(pred) == y)[idx].ravel(), minlength=n_boot * k)
    right = right.reshape(n_boot, k)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nanmean(np.where(drawn > 0, right / drawn, np.nan), axis=1)


def _log_loss_boot(y: np.ndarray, proba: np.ndarray, idx: np.ndarray) -> np.ndarray:
    if proba.ndim != 2:
        raise ValueError("log_loss needs class probabilities of shape [n, K]")
    per_sample = -np.log(clip_proba(proba)[np.arange(y.size), y])
    return per_sample[idx].mean(axis=1)


def _macro_f1_boot(y: np.ndarray, pred: np.ndarray, idx: np.ndarray) -> np.ndarray:
    # Per resample and class: F1 = 2 TP / (2 TP + FP + FN) = 2 TP / (true count + predicted count), averaged
    # over the classes that occur among the drawn labels or predictions (sklearn's f1_score with
    # average="macro", zero_division=0).
    labels = _labels_of(pred)
    classes = np.union1d(y, labels)
    yi, pi = np.searchsorted(classes, y), np.searchsorted(classes, labels)
    k, n_boot = classes.size, idx.shape[0]
    row = np.arange(n_boot)[:, None] * k

    def count(cls: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        w = None if weights is None else weights[idx].ravel()
        return np.bincount((row + cls[idx]).ravel(), weights=w, minlength=n_boot * k).reshape(n_boot, k)

    tp, true, predicted = count(yi, (yi == pi).astype(np.float64)), count(yi), count(pi)
    total = true + predicted
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nanmean(np.where(total > 0, 2 * tp / total, np.nan), axis=1)


_VECTORISED: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]] = {
    "accuracy": _accuracy_boot,
    "balanced_accuracy": _balanced_accuracy_boot,
    "macro_f1": _macro_f1_boot,
    "log_loss": _log_loss_boot,
}


def _fast_name(metric_fn: Any) -> str | None:
    if isinstance(metric_fn, str):
        if metric_fn not in _VECTORISED:
            allowed = sorted(_VECTORISED)
            raise ValueError(f"metric_fn must be a callable or one of {allowed} (got {metric_fn!r})")
        return metric_fn
    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    return {accuracy_score: "accuracy", balanced_accuracy_score: "balanced_accuracy"}.get(metric_fn)


def _index_statistic(
    y: np.ndarray, pred: np.ndarray, metric_fn: str | Callable[[np.ndarray, np.ndarray], float]
) -> tuple[Callable[..., Any], bool, str]:
    """The metric as a function of row indices, for ``scipy.stats.bootstrap`` to resample: (statistic,
    vectorized, name). Resampling the indices keeps each test row's label and prediction together (what
    ``paired=True`` does inside scipy) and lets a ``[n, K]`` probability array travel with its row."""
    fast = _fast_name(metric_fn)
    if fast is not None:
        fn = _VECTORISED[fast]

        def vectorised(idx: np.ndarray, axis: int = -1) -> np.ndarray:
            # idx is [n] (the estimate), [n_boot, n] (the resamples) or [n, n - 1] (BCa's jackknife).
            idx = np.asarray(idx)
            return fn(y, pred, idx.reshape(-1, idx.shape[-1])).reshape(idx.shape[:-1])

        return vectorised, True, fast

    def one(idx: np.ndarray) -> float:
        return float(metric_fn(y[idx], pred[idx]))  # type: ignore[operator]

    return one, False, getattr(metric_fn, "__name__", "metric")


def bootstrap_ci(
    y_true: Any,
    y_pred_or_proba: Any,
    metric_fn: str | Callable[[np.ndarray, np.ndarray], float] = "accuracy",
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    *,
    method: str = "BCa",
) -> BootstrapCI:
    """Bootstrap interval of a test-set metric, resampling test samples with replacement: a
    bias-corrected and accelerated (BCa) interval by ``scipy.stats.bootstrap`` (Efron & Tibshirani 1993,
    ch. 14), which corrects the plain percentile interval for a skewed or biased bootstrap distribution
    -- as an accuracy near 1 has. ``method="percentile"`` gives the plain percentile interval.

    ``metric_fn`` is ``"accuracy"``, ``"balanced_accuracy"``, ``"macro_f1"`` or ``"log_loss"`` (vectorised
    over all resamples at once: 1000 resamples of a few hundred samples, plus BCa's leave-one-out
    jackknife, take milliseconds), or any callable ``metric_fn(y_true, y_pred_or_proba) -> float``, called
    once per resample and once per left-out sample (seconds). sklearn's ``accuracy_score`` and
    ``balanced_accuracy_score`` take the vectorised path (same numbers). For the label metrics a 2-d
    ``[n, K]`` probability array is turned into its argmax. The resamples come from
    ``numpy.random.default_rng(seed)``: the same ``seed`` gives the same interval; ``estimate`` is the
    metric on the full test set, ``std`` the standard deviation (ddof 1) of the ``n_boot`` resampled
    metrics.

    Degenerate cases: when every resample gives the same value (every prediction right, or every one
    wrong) there is nothing to interval -- scipy's BCa returns NaN there -- and ``low == high ==
    estimate``. Should BCa fail (NaN) on a distribution that does vary, the percentile interval of the
    same resamples is returned and ``method`` says so.
    """
    y = np.asarray(y_true).ravel()
    pred = np.asarray(y_pred_or_proba)
    if y.size == 0 or pred.shape[0] != y.size:
        raise ValueError(
            f"y_true and y_pred_or_proba must have the same non-zero length "
            f"(got {y.size} and {pred.shape[0] if pred.ndim else 0})"
        )
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1 (got {n_boot})")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1) (got {confidence})")
    n = y.size
    statistic, vectorized, name = _index_statistic(y, pred, metric_fn)
    estimate = float(statistic(np.arange(n)))
    if n < 2:  # one test row: every resample is that row (and scipy refuses fewer than two)
        verdict = f"{name} = {estimate:.4g} (one test sample: no interval)"
        return BootstrapCI(name, estimate, estimate, estimate, 0.0, confidence, int(n_boot), 1, int(seed),
                           method, verdict)
    with warnings.catch_warnings():
        # A constant distribution makes BCa 0/0: scipy warns and returns NaN, handled below.
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.bootstrap(
            (np.arange(n),),
            statistic,
            n_resamples=n_boot,
            vectorized=vectorized,
            confidence_level=confidence,
            method=method,
            rng=np.random.default_rng(seed),
        )
    boots = np.asarray(res.bootstrap_distribution, dtype=np.float64)
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    used = {"bca": "BCa"}.get(method.lower(), method.lower())
    if not (math.isfinite(low) and math.isfinite(high)):
        if np.ptp(boots) == 0:
            low = high = estimate  # nothing varies: the interval is the point
        else:
            used = "percentile"
            low, high = (float(q) for q in np.quantile(boots, [0.5 - confidence / 2, 0.5 + confidence / 2]))
    std = float(boots.std(ddof=1)) if n_boot > 1 else 0.0
    interval = f"{confidence:.0%} {used} bootstrap CI {low:.4g} to {high:.4g}"
    verdict = f"{name} = {estimate:.4g} ({interval}, n = {n})"
    return BootstrapCI(
        name, estimate, low, high, std, confidence, int(n_boot), int(n), int(seed), used, verdict
    )
