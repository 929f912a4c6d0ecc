"""Known-answer tests for the search analysis: constructions whose verdicts, shares and SEs are known."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from dlrig.select.analysis import analyze_search, noise_floor, optimism_summary

LRS = [1e-4, 1e-3, 1e-2, 1e-1]
HIDDEN = [64, 128]
SPACE = {
    "optim.lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True, "values": LRS},
    "model.hidden": {"type": "int", "low": 64, "high": 128, "log": True, "values": HIDDEN},
}


def trial(i, config, score, *, k=3, n=200, spread=0.0, pruned=False):
    """One trial record as the search writes it; ``spread`` sets the between-fold scatter."""
    if pruned or score is None:
        return {"trial": i, "config": config, "score": None, "scores": [], "n_val": [], "pruned": pruned}
    scores = [score + spread * (j - (k - 1) / 2) for j in range(k)]
    return {"trial": i, "config": config, "score": score, "scores": scores, "n_val": [n] * k, "pruned": False}


def lr_only(lr):
    """Peaks inside the range (1e-3..1e-2), falls by 0.1 at both ends; hidden plays no part."""
    return 0.9 - 0.04 * (math.log10(lr) + 2.5) ** 2


def grid_trials(f, noise=1e-4, seed=0):
    rng = np.random.default_rng(seed)
    cells = [(lr, h) for lr in LRS for h in HIDDEN]
    return [
        trial(i, {"optim.lr": lr, "model.hidden": h}, f(lr, h) + float(rng.normal(0, noise)))
        for i, (lr, h) in enumerate(cells)
    ]


# --------------------------------------------------------------------------------------- noise floor
def test_noise_floor_is_the_binomial_se_over_all_validation_samples():
    t = trial(0, {}, 0.9, k=3, n=100)  # identical fold scores: between-fold SE is 0
    floor = noise_floor(t, "accuracy")
    assert floor["se"] == pytest.approx(math.sqrt(0.9 * 0.1 / 300), abs=1e-6)
    assert floor["method"] == "binomial"
    assert floor["n_val"] == 300


def test_noise_floor_takes_the_between_fold_se_when_larger_or_not_a_proportion():
    t = trial(0, {}, 0.9, k=3, n=10_000, spread=0.1)  # folds 0.8, 0.9, 1.0
    between = 0.1 / math.sqrt(3)
    floor = noise_floor(t, "accuracy")
    assert floor["method"] == "between-fold"
    assert floor["se"] == pytest.approx(between, abs=1e-6)
    assert floor["binomial_se"] == pytest.approx(math.sqrt(0.09 / 30_000), abs=1e-6)
    f1 = noise_floor(t, "macro_f1")  # no binomial SE for F1
    assert f1["method"] == "between-fold" and f1["binomial_se"] is None


# ------------------------------------------------------------------------------ verdicts, importance
def test_only_lr_matters_on_a_grid():
    result = analyze_search(grid_trials(lambda lr, h: lr_only(lr)), SPACE, "accuracy")
    v = result["verdicts"]
    assert result["design"]["kind"] == "grid"
    assert v["optim.lr"]["verdict"] == "delicate"
    assert v["model.hidden"]["verdict"] == "permissive"
    assert v["optim.lr"]["spread"] == pytest.approx(0.08, abs=1e-3)  # 0.89 at 1e-3 and 1e-2, 0.81 at the ends
    assert "delicate" in v["optim.lr"]["evidence"] and "0.0001..0.1" in v["optim.lr"]["evidence"]
    assert result["importance_method"] == "fanova"
    assert result["importance"]["optim.lr"] > 0.8
    assert sum(result["importance"].values()) == pytest.approx(1.0, abs=1e-5)
    # hidden is judged where lr can score near the best: lr = 1e-4 and 1e-1 (0.81) are left out.
    assert v["model.hidden"]["excluded"] == {"optim.lr": ["0.0001", "0.1"]}
    assert "Near the best means all values but optim.lr = 0.0001, 0.1" in v["model.hidden"]["evidence"]
    assert v["optim.lr"]["excluded"] == {} and v["optim.lr"]["spread"] == v["optim.lr"]["marginal_spread"]
    (inter,) = result["interactions"]  # on the 2x2 table near the best: pure noise, far below the floor
    assert inter["verdict"] == "additive" and inter["max_residual"] < 0.01 * inter["noise"]
    assert v["optim.lr"]["best_value"] in (1e-3, 1e-2)
    assert not any(w.startswith("optim.lr:") for w in result["warnings"])  # the peak is interior
    json.dumps(result)  # JSON-able
    assert analyze_search(grid_trials(lambda lr, h: lr_only(lr)), SPACE, "accuracy") == result


def test_only_lr_matters_in_a_random_search():
    rng = np.random.default_rng(3)
    space = {
        "optim.lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True, "values": None},
        "model.hidden": {"type": "int", "low": 32, "high": 1024, "log": True, "values": None},
    }
    trials = []
    for i in range(30):
        lr, h = float(10 ** rng.uniform(-4, -1)), int(2 ** rng.uniform(5, 10))
        trials.append(
            trial(i, {"optim.lr": lr, "model.hidden": h}, lr_only(lr) + float(rng.normal(0, 0.003)))
        )
    result = analyze_search(trials, space, "accuracy")
    assert result["design"]["kind"] == "unstructured"
    assert result["verdicts"]["optim.lr"]["verdict"] == "delicate"
    assert result["verdicts"]["model.hidden"]["verdict"] == "permissive"
    assert len(result["verdicts"]["optim.lr"]["levels"]) == 5  # binned: too many distinct values
    assert result["verdicts"]["optim.lr"]["p_value"] < 0.001
    assert list(result["importance"])[0] == "optim.lr"
    assert result["interactions"] == [] and "needs a grid" in result["interactions_note"]


def test_xor_grid_is_all_interaction():
    space = {
        "a": {"type": "categorical", "low": None, "high": None, "log": False, "values": ["x", "y"]},
        "b": {"type": "categorical", "low": None, "high": None, "log": False, "values": ["u", "v"]},
    }
    cells = [("x", "u", 0.9), ("x", "v", 0.8), ("y", "u", 0.8), ("y", "v", 0.9)]
    trials = [trial(i, {"a": a, "b": b}, s) for i, (a, b, s) in enumerate(cells)]
    result = analyze_search(trials, space, "accuracy")
    (inter,) = result["interactions"]
    assert inter["share"] == pytest.approx(1.0)
    assert inter["main_shares"] == [0.0, 0.0]
    assert inter["max_residual"] == pytest.approx(0.05)
    assert inter["verdict"] == "interacting"
    # Each marginal mean is 0.85: alone, neither looks like it matters; the warning says why it does.
    assert {v["verdict"] for v in result["verdicts"].values()} == {"permissive"}
    assert any("a and b interact" in w for w in result["warnings"])
    assert result["importance_method"] == "marginal"  # 4 trials: too few for fANOVA
    assert any("fANOVA needs at least 8" in w for w in result["warnings"])


def test_single_value_is_undetermined():
    space = dict(SPACE, **{"model.depth": {"type": "int", "low": 1, "high": 4, "log": False, "values": None}})
    trials = grid_trials(lambda lr, h: lr_only(lr))
    for t in trials:
        t["config"]["model.depth"] = 2
    result = analyze_search(trials, space, "accuracy")
    assert result["verdicts"]["model.depth"]["verdict"] == "undetermined"
    assert result["importance"]["model.depth"] == 0.0
    assert result["verdicts"]["optim.lr"]["verdict"] == "delicate"


# ----------------------------------------------------------------------------------------- warnings
def test_edge_warning_fires_at_the_boundary_only():
    space = {
        "optim.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True, "values": [1e-4, 1e-3, 1e-2]}
    }
    rising = [trial(i, {"optim.lr": lr}, 0.7 + 0.05 * i) for i, lr in enumerate([1e-4, 1e-3, 1e-2])]
    warnings = analyze_search(rising, space, "accuracy")["warnings"]
    assert (
        "optim.lr: the best value 0.01 is the top of its range [0.0001, 0.01] and the mean score still "
        "rises toward it (+0.05 from 0.001); widen the range upward" in warnings
    )
    peaked = [
        trial(i, {"optim.lr": lr}, s)
        for i, (lr, s) in enumerate(zip([1e-4, 1e-3, 1e-2], [0.7, 0.9, 0.7], strict=True))
    ]
    assert not any("widen" in w for w in analyze_search(peaked, space, "accuracy")["warnings"])


def test_edge_warning_for_a_continuous_range_uses_the_log_position():
    space = {"optim.lr": {"type": "float", "low": 1e-5, "high": 1e-1, "log": True, "values": None}}
    near_low = [trial(0, {"optim.lr": 1.5e-5}, 0.9), trial(1, {"optim.lr": 1e-3}, 0.7)]  # 4% up the log range
    (w,) = [w for w in analyze_search(near_low, space, "accuracy")["warnings"] if "widen" in w]
    assert "near the bottom" in w and "downward" in w
    middle = [trial(0, {"optim.lr": 1.5e-5}, 0.7), trial(1, {"optim.lr": 1e-3}, 0.9)]  # 50%: interior
    assert not any("widen" in w for w in analyze_search(middle, space, "accuracy")["warnings"])


def test_within_noise_warning_and_ranking_in_se_units():
    space = {
        "model.hidden": {
            "type": "int",
            "low": 32,
            "high": 512,
            "log": True,
            "values": [32, 64, 128, 256, 512],
        }
    }
    scores = [0.80, 0.90, 0.895, 0.85, 0.80]  # n = 300 -> SE ~ 0.0173; 0.895 is 0.3 SE behind
    trials = [
        trial(i, {"model.hidden": h}, s, n=100)
        for i, (h, s) in enumerate(zip([32, 64, 128, 256, 512], scores, strict=True))
    ]
    result = analyze_search(trials, space, "accuracy")
    se = math.sqrt(0.9 * 0.1 / 300)
    assert any(
        w.startswith("the best 2 configs are within 1 SE") and "watch the size of the validation set" in w
        for w in result["warnings"]
    )
    first, second = result["ranking"][:2]
    assert (first["trial"], second["trial"]) == (1, 2)
    assert second["gap"] == pytest.approx(0.005)
    assert second["gap_se"] == pytest.approx(0.005 / se, abs=1e-3)
    apart = [dict(t) for t in trials]
    apart[2] = trial(2, {"model.hidden": 128}, 0.85, n=100)  # now 2.9 SE behind: no warning
    assert not any("within 1 SE" in w for w in analyze_search(apart, space, "accuracy")["warnings"])


def test_pruned_and_failed_trials():
    space = {"optim.lr": SPACE["optim.lr"]}
    all_pruned = [trial(i, {"optim.lr": 1e-3}, None, pruned=True) for i in range(3)]
    result = analyze_search(all_pruned, space, "accuracy")
    assert result["warnings"] == ["all 3 trials were pruned or failed: nothing to analyse"]
    assert result["counts"] == {"trials": 3, "complete": 0, "pruned": 3, "failed": 0}
    mixed = [
        trial(0, {"optim.lr": 1e-3}, 0.8),
        trial(1, {"optim.lr": 1e-2}, None),
        trial(2, {"optim.lr": 1e-4}, None, pruned=True),
    ]
    result = analyze_search(mixed, space, "accuracy")
    assert result["counts"] == {"trials": 3, "complete": 1, "pruned": 1, "failed": 1}
    assert any("failed without a score (trials [1])" in w for w in result["warnings"])
    assert result["verdicts"]["optim.lr"]["verdict"] == "undetermined"


# ----------------------------------------------------------------------------------------- optimism
def test_optimism_by_hand():
    folds = [
        {"fold": 1, "best_inner_score": 0.92, "outer_score": 0.90},
        {"fold": 0, "best_inner_score": 0.90, "outer_score": 0.88},
        {"fold": 2, "best_inner_score": 0.91, "outer_score": 0.90},
    ]
    s = optimism_summary(folds, metric="accuracy")
    gaps = [0.02, 0.02, 0.01]
    assert [f["fold"] for f in s["per_fold"]] == [0, 1, 2]
    assert [f["optimism"] for f in s["per_fold"]] == pytest.approx(gaps)
    assert s["mean"] == pytest.approx(np.mean(gaps), abs=1e-6)
    assert s["std"] == pytest.approx(np.std(gaps, ddof=1), abs=1e-6)
    assert s["se"] == pytest.approx(np.std(gaps, ddof=1) / math.sqrt(3), abs=1e-6)
    assert s["n_positive"] == 3
    assert s["summary"].startswith(
        "selection on the inner folds overstated accuracy by 0.0167 on average (3 of 3 folds positive)"
    )
    assert "nested CV matters here" in s["summary"]


def test_optimism_within_noise():
    folds = [
        {"fold": 0, "best_inner_score": 0.90, "outer_score": 0.89},
        {"fold": 1, "best_inner_score": 0.90, "outer_score": 0.91},
        {"fold": 2, "best_inner_score": 0.90, "outer_score": 0.895},
    ]
    s = optimism_summary(folds)
    assert s["n_positive"] == 2
    assert "within noise" in s["summary"]
    assert optimism_summary([])["summary"] == "no outer folds"


def test_large_spread_the_fit_cannot_confirm_is_undetermined():
    # Off a grid, with trial-to-trial scatter (0.03) far above the noise floor (~0.002): the means of a
    # few trials each spread well past 2 floors by chance, and the additive fit's F-test says so.
    rng = np.random.default_rng(0)
    space = {
        "model.act": {
            "type": "categorical",
            "low": None,
            "high": None,
            "log": False,
            "values": ["relu", "gelu", "tanh"],
        },
        "optim.lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True, "values": None},
    }
    trials = [
        trial(
            i,
            {"model.act": ["relu", "gelu", "tanh"][i % 3], "optim.lr": float(10 ** rng.uniform(-4, -1))},
            0.8 + float(rng.normal(0, 0.03)),
            n=10_000,
        )
        for i in range(15)
    ]
    v = analyze_search(trials, space, "accuracy")["verdicts"]["model.act"]
    assert v["spread"] > 2 * v["noise"]
    assert v["p_value"] > 0.05
    assert v["verdict"] == "undetermined" and "cannot tell it from the trials' scatter" in v["evidence"]
