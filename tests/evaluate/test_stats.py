"""Statistical comparisons against hand-worked numbers, scipy/sklearn oracles and a simulated null."""

from __future__ import annotations

import json
import math
import time
import warnings

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, log_loss
from sklearn.tree import DecisionTreeClassifier

from dlrig.evaluate.stats import (
    bayesian_correlated_ttest,
    bootstrap_ci,
    corrected_resampled_ttest,
    mcnemar,
    mean_ci,
    naive_paired_ttest,
    paired_ttest_5x2cv,
    run_5x2cv,
)

# Five folds of 5-fold CV on 100 samples (n_train 80, n_test 20). Differences a - b:
#   d = [0.02, 0.04, 0.00, 0.02, 0.02]   mean 0.02, deviations [0, .02, -.02, 0, 0]
#   var (ddof=1) = (0.0004 + 0.0004) / 4 = 0.0002
A = np.array([0.82, 0.84, 0.80, 0.83, 0.81])
B = A - np.array([0.02, 0.04, 0.00, 0.02, 0.02])


def test_mean_ci_is_the_student_t_interval():
    # mean 0.82, std sqrt(0.00025) (deviations 0, .02, -.02, .01, -.01 -> 0.001 / 4)
    r = mean_ci(A)
    half = sps.t.ppf(0.975, 4) * math.sqrt(0.00025) / math.sqrt(5)
    assert r.mean == pytest.approx(0.82)
    assert r.std == pytest.approx(math.sqrt(0.00025))
    assert (r.low, r.high) == pytest.approx((0.82 - half, 0.82 + half))
    assert "95% CI" in r.verdict


def test_corrected_ttest_hand_worked():
    # corrected variance of the mean: 0.0002 * (1/5 + 20/80) = 0.0002 * 0.45 = 0.00009
    # t = 0.02 / sqrt(0.00009) = 2 * sqrt(10) / 3 = 2.108..., 4 dof, two-sided p = 2 * sf(t, 4)
    r = corrected_resampled_ttest(A, B, n_train=80, n_test=20)
    assert r.statistic == pytest.approx(2 * math.sqrt(10) / 3)
    assert r.dof == 4 and r.k == 5 and r.mean_diff == pytest.approx(0.02)
    assert r.p_value == pytest.approx(2 * sps.t.sf(2 * math.sqrt(10) / 3, 4))
    assert r.p_value > 0.05 and r.verdict.startswith("no significant difference")
    # naive: variance of the mean 0.0002 / 5 = 0.00004 -> t = 0.02 / 0.0063246 = sqrt(10) = 3.162
    n = naive_paired_ttest(A, B)
    assert n.statistic == pytest.approx(math.sqrt(10))
    ref = sps.ttest_rel(A, B)
    assert (n.statistic, n.p_value) == pytest.approx((ref.statistic, ref.pvalue))
    assert n.p_value < 0.05 and n.verdict.startswith("model A is better than B (p = 0.0")


def test_ttest_verdict_names_the_better_model_and_handles_zero_variance():
    r = naive_paired_ttest(B, A, labels=("mlp", "cnn"))
    assert r.verdict.startswith("model cnn is better than mlp")
    same = corrected_resampled_ttest(A, A, 80, 20)
    assert (same.statistic, same.p_value) == (0.0, 1.0)
    shifted = corrected_resampled_ttest(A + 0.01, A, 80, 20)
    assert shifted.p_value == 0.0 and math.isinf(shifted.statistic)
    json.dumps(shifted.to_dict(), allow_nan=False)  # infinity becomes null, still valid JSON


def _nearest_centroid_accuracy(Xtr, ytr, Xte, yte):
    m0, m1 = Xtr[ytr == 0].mean(0), Xtr[ytr == 1].mean(0)
    pred = ((Xte - m1) ** 2).sum(1) < ((Xte - m0) ** 2).sum(1)
    return (pred == (yte == 1)).mean()


def test_corrected_ttest_keeps_type_one_error_near_alpha_where_naive_does_not():
    # The null holds by symmetry: A is nearest-centroid on features 0-3, B on features 4-7, all eight
    # equally informative. Each of 400 data sets (n = 200) is split 20 times at random 90/10; the
    # splits overlap, so the 20 paired scores are correlated and the naive test rejects far too often.
    rng = np.random.default_rng(0)
    reps, splits, n, d, n_test = 400, 20, 200, 4, 20
    naive = corrected = 0
    for _ in range(reps):
        y = rng.integers(0, 2, n)
        X = rng.normal(size=(n, 2 * d)) + 0.35 * y[:, None]
        a, b = [], []
        for _ in range(splits):
            perm = rng.permutation(n)
            te, tr = perm[:n_test], perm[n_test:]
            a.append(_nearest_centroid_accuracy(X[tr, :d], y[tr], X[te, :d], y[te]))
            b.append(_nearest_centroid_accuracy(X[tr, d:], y[tr], X[te, d:], y[te]))
        naive += naive_paired_ttest(a, b).p_value < 0.05
        corrected += corrected_resampled_ttest(a, b, n - n_test, n_test).p_value < 0.05
    naive_rate, corrected_rate = naive / reps, corrected / reps
    assert naive_rate > 0.2  # 0.30 with this seed: six times the nominal 5%
    assert corrected_rate < 0.09  # 0.06 with this seed
    assert naive_rate > 3 * corrected_rate


def test_5x2cv_hand_worked():
    # Every replication's two folds differ by 0.02, so s_i^2 = 2 * 0.01^2 = 0.0002 for all i;
    # t = p_1^(1) / sqrt(mean s_i^2) = 0.02 / sqrt(0.0002) = sqrt(2), 5 dof.
    diffs = np.array([[0.02, 0.04], [0.01, 0.03], [0.05, 0.03], [0.00, 0.02], [0.03, 0.01]])
    r = paired_ttest_5x2cv(diffs)
    assert r.statistic == pytest.approx(math.sqrt(2))
    assert r.dof == 5
    assert r.p_value == pytest.approx(2 * sps.t.sf(math.sqrt(2), 5))
    assert r.details["s2"] == pytest.approx([0.0002] * 5)
    with pytest.raises(ValueError, match=r"shape \[5, 2\]"):
        paired_ttest_5x2cv(diffs[:4])


def test_run_5x2cv_on_two_sklearn_classifiers(blobs):
    X, y = blobs
    r = run_5x2cv(LogisticRegression(max_iter=500), lambda: DecisionTreeClassifier(random_state=0), X, y, seed=3)
    assert math.isfinite(r.statistic) or r.p_value in (0.0, 1.0)
    assert 0.0 <= r.p_value <= 1.0
    scores_a = np.array(r.details["scores_a"])
    assert scores_a.shape == (5, 2) and (scores_a > 0.5).all()
    diffs = scores_a - np.array(r.details["scores_b"])
    assert r.statistic == pytest.approx(paired_ttest_5x2cv(diffs).statistic)
    # Deterministic for a seed.
    again = run_5x2cv(LogisticRegression(max_iter=500), lambda: DecisionTreeClassifier(random_state=0), X, y, seed=3)
    assert again.to_dict() == r.to_dict()
    json.dumps(r.to_dict(), allow_nan=False)


def test_mcnemar_exact_hand_worked():
    # b = 10 (A right, B wrong), c = 2 (A wrong, B right), 8 samples both right.
    # Exact two-sided: 2 * P(X <= 2 | n = 12, p = 1/2) = 2 * (1 + 12 + 66) / 4096 = 158 / 4096 = 0.0386
    y = np.zeros(20, dtype=int)
    pred_a = np.array([0] * 10 + [1] * 2 + [0] * 8)
    pred_b = np.array([1] * 10 + [0] * 2 + [0] * 8)
    r = mcnemar(y, pred_a, pred_b)
    assert (r.b, r.c, r.method, r.n) == (10, 2, "exact", 20)
    assert r.p_value == pytest.approx(158 / 4096)
    assert r.p_value == pytest.approx(0.0386, abs=5e-5)
    assert r.verdict.startswith("model A is better than B (p = 0.0386 < 0.05)")


def test_mcnemar_chi2_hand_worked():
    # b = 40, c = 20: chi2 = (|40 - 20| - 1)^2 / 60 = 361 / 60 = 6.0167, 1 dof;
    # for 1 dof, P(chi2 > x) = erfc(sqrt(x / 2)) = 0.01417
    y = np.zeros(100, dtype=int)
    pred_a = np.array([0] * 40 + [1] * 20 + [0] * 40)
    pred_b = np.array([1] * 40 + [0] * 20 + [0] * 40)
    r = mcnemar(y, pred_a, pred_b)
    assert r.method == "chi2"
    assert r.statistic == pytest.approx(361 / 60)
    assert r.p_value == pytest.approx(math.erfc(math.sqrt(361 / 120)))
    assert r.p_value == pytest.approx(0.01417, abs=1e-5)
    forced = mcnemar(y, pred_a, pred_b, exact=True)
    assert forced.method == "exact" and forced.p_value == pytest.approx(sps.binomtest(40, 60).pvalue)


def test_mcnemar_no_discordant_samples_is_no_difference():
    y = np.array([0, 1, 1, 0])
    r = mcnemar(y, y, y)
    assert (r.b, r.c, r.p_value) == (0, 0, 1.0)
    assert r.verdict.startswith("no significant difference")


def test_bayesian_correlated_ttest_hand_worked():
    # 5-fold CV: rho = 1/5, rho / (1 - rho) = 1/4. Posterior: t with 4 dof, location mean(d) = 0.02,
    # scale = sqrt((1/5 + 1/4) * 0.0002) = sqrt(0.00009) = 0.0094868.
    # P(A better) = P(diff > 0.01)  = sf((0.01 - 0.02) / 0.0094868)  = sf(-1.0541, 4)
    # P(B better) = P(diff < -0.01) = cdf((-0.01 - 0.02) / 0.0094868) = cdf(-3.1623, 4)
    r = bayesian_correlated_ttest(A, B, rho=0.2, rope=0.01)
    scale = math.sqrt(0.00009)
    assert r.scale == pytest.approx(scale) and r.dof == 4 and r.mean_diff == pytest.approx(0.02)
    assert r.p_a_better == pytest.approx(sps.t.sf(-0.01 / scale, 4))
    assert r.p_b_better == pytest.approx(sps.t.cdf(-0.03 / scale, 4))
    assert r.p_a_better + r.p_rope + r.p_b_better == pytest.approx(1.0)
    assert r.verdict.startswith(
        f"P(A better) = {r.p_a_better:.2f}, P(practically equivalent, |diff| < 0.01) = {r.p_rope:.2f}, "
        f"P(B better) = {r.p_b_better:.2f}"
    )


def test_bayesian_big_difference_and_equivalence():
    rng = np.random.default_rng(1)
    a = 0.9 + rng.normal(0, 0.005, 10)
    big = bayesian_correlated_ttest(a, a - 0.2 + rng.normal(0, 0.005, 10), rho=0.1)
    assert big.p_a_better > 0.999 and big.verdict.endswith("A is better")
    tiny = bayesian_correlated_ttest(a, a + rng.normal(0, 0.0005, 10), rho=0.1, rope=0.02)
    assert tiny.p_rope > 0.99 and tiny.verdict.endswith("practically equivalent")
    with pytest.raises(ValueError, match="rho"):
        bayesian_correlated_ttest(a, a, rho=1.0)


def _predictions(n: int, accuracy: float, k: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    pred = np.where(rng.random(n) < accuracy, y, (y + rng.integers(1, k, n)) % k)
    proba = np.full((n, k), 0.02)
    proba[np.arange(n), pred] = 1 - 0.02 * (k - 1)
    return y, pred, proba


def test_bootstrap_is_deterministic_contains_estimate_and_shrinks_with_n():
    y, pred, _ = _predictions(360, 0.9)
    r = bootstrap_ci(y, pred, "accuracy", seed=7)
    assert r.to_dict() == bootstrap_ci(y, pred, "accuracy", seed=7).to_dict()
    assert r.estimate == pytest.approx(accuracy_score(y, pred))
    assert r.low <= r.estimate <= r.high
    small = bootstrap_ci(*_predictions(100, 0.8)[:2], "accuracy")
    large = bootstrap_ci(*_predictions(1600, 0.8)[:2], "accuracy")
    # Width ~ 1 / sqrt(n): 16x the samples, about a quarter of the width.
    assert (large.high - large.low) < 0.4 * (small.high - small.low)


def test_bootstrap_vectorised_paths_match_a_plain_loop():
    y, pred, proba = _predictions(120, 0.7, k=4, seed=3)
    pairs = [
        ("accuracy", pred, lambda t, p: accuracy_score(t, p)),
        ("balanced_accuracy", pred, lambda t, p: balanced_accuracy_score(t, p)),
        ("macro_f1", pred, lambda t, p: f1_score(t, p, average="macro", zero_division=0)),
        ("log_loss", proba, lambda t, p: log_loss(t, p, labels=range(4))),
    ]
    for name, values, loop_fn in pairs:
        fast = bootstrap_ci(y, values, name, n_boot=200, seed=5)
        slow = bootstrap_ci(y, values, loop_fn, n_boot=200, seed=5)
        assert (fast.estimate, fast.low, fast.high, fast.std) == pytest.approx(
            (slow.estimate, slow.low, slow.high, slow.std)
        ), name
    # sklearn's own accuracy_score is recognised and vectorised; proba is argmaxed for label metrics.
    assert bootstrap_ci(y, proba, accuracy_score, seed=5) == bootstrap_ci(y, pred, "accuracy", seed=5)


def test_bootstrap_is_fast_enough_for_every_run():
    y, pred, _ = _predictions(360, 0.97)
    start = time.perf_counter()
    bootstrap_ci(y, pred, accuracy_score, n_boot=1000)
    assert time.perf_counter() - start < 0.5


def _macro_f1(t, p):
    return f1_score(t, p, average="macro", zero_division=0)


@pytest.mark.parametrize(
    ("name", "oracle_statistic", "vectorized"),
    [
        ("accuracy", lambda t, p, axis=-1: (t == p).mean(axis=axis), True),
        ("balanced_accuracy", balanced_accuracy_score, False),
        ("macro_f1", _macro_f1, False),
    ],
)
def test_bootstrap_is_scipys_bca_on_paired_rows(name, oracle_statistic, vectorized):
    # The oracle: scipy.stats.bootstrap called directly on the (label, prediction) pairs, with the
    # generator the seed gives. Same resamples, same jackknife, same interval.
    y, pred, _ = _predictions(150, 0.85, k=5, seed=4)
    ours = bootstrap_ci(y, pred, name, n_boot=300, seed=11)
    ref = sps.bootstrap(
        (y, pred), oracle_statistic, n_resamples=300, paired=True, vectorized=vectorized,
        method="BCa", confidence_level=0.95, rng=np.random.default_rng(11),
    )
    assert (ours.low, ours.high) == pytest.approx(tuple(ref.confidence_interval), abs=1e-12)
    assert ours.std == pytest.approx(ref.standard_error)
    assert ours.method == "BCa" and "95% BCa bootstrap CI" in ours.verdict


def _old_percentile_bootstrap(y, pred, n_boot=1000, confidence=0.95, seed=0):
    """The hand-written percentile bootstrap of accuracy that scipy's replaced (same draws)."""
    idx = np.random.default_rng(seed).integers(0, y.size, size=(n_boot, y.size))
    boots = (pred == y)[idx].mean(axis=1)
    return tuple(np.quantile(boots, [0.5 - confidence / 2, 0.5 + confidence / 2])), boots.std(ddof=1)


def test_percentile_method_reproduces_the_hand_written_interval_and_bca_moves_it_little():
    # method="percentile" draws the very resamples the old code drew, so the interval is unchanged; BCa
    # only shifts the ends along the same bootstrap distribution -- on 360 rows, by a test sample or two.
    y, pred, _ = _predictions(360, 0.97, seed=2)
    (low, high), std = _old_percentile_bootstrap(y, pred, seed=42)
    pct = bootstrap_ci(y, pred, "accuracy", seed=42, method="percentile")
    assert (pct.low, pct.high, pct.std) == pytest.approx((low, high, std))
    assert pct.method == "percentile" and "95% percentile bootstrap CI" in pct.verdict
    bca = bootstrap_ci(y, pred, "accuracy", seed=42)
    assert bca.std == pct.std
    assert abs(bca.low - pct.low) <= 2 / 360 and abs(bca.high - pct.high) <= 2 / 360
    assert bca.low <= bca.estimate <= bca.high


def test_bootstrap_degenerate_cases_give_the_point_value():
    # Every prediction right: every resample scores 1, BCa is 0/0 (scipy: NaN and a warning); the
    # interval is the point itself, quietly.
    y, _, _ = _predictions(200, 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in ("accuracy", "balanced_accuracy", "macro_f1"):
            r = bootstrap_ci(y, y, name)
            assert (r.estimate, r.low, r.high, r.std) == (1.0, 1.0, 1.0, 0.0), name
        wrong = bootstrap_ci(y, (y + 1) % 10, "accuracy")
        assert (wrong.estimate, wrong.low, wrong.high) == (0.0, 0.0, 0.0)
        one = bootstrap_ci(y[:1], y[:1], "accuracy")
        assert (one.low, one.high, one.n) == (1.0, 1.0, 1) and "no interval" in one.verdict
    json.dumps(bootstrap_ci(y, y, "accuracy").to_dict(), allow_nan=False)


def test_bootstrap_falls_back_to_percentile_where_bca_cannot_be_computed():
    # "Any mistake at all" on 30 rows with two mistakes: every leave-one-out sample still holds one, so
    # BCa's jackknife is constant (acceleration 0/0, NaN), yet about e^-2 of the resamples draw neither.
    y = np.zeros(30, dtype=int)
    pred = np.array([1, 1] + [0] * 28)
    r = bootstrap_ci(y, pred, lambda t, p: float((t != p).any()), n_boot=500, seed=1)
    assert r.method == "percentile" and "percentile bootstrap CI" in r.verdict
    assert (r.estimate, r.low, r.high) == (1.0, 0.0, 1.0)
