"""Verdicts that hold up (issue 8, item 5): judged near the best, edge warnings only for an outward
trend, interaction notes only above the noise floor. Each case has a twin that flips the sentence."""

from __future__ import annotations

import numpy as np
import pytest

from dlrig.select.analysis import analyze_search

LRS = [1e-4, 1e-3, 1e-2, 1e-1]
DROPOUTS = [0.0, 0.2]
SPACE = {
    "optim.lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True, "values": LRS},
    "model.dropout": {"type": "float", "low": 0.0, "high": 0.2, "log": False, "values": DROPOUTS},
}
N_VAL = 500  # per inner fold, 3 folds: the noise floor at 0.95 is sqrt(.95 * .05 / 1500) = 0.0056
FLOOR = (0.95 * 0.05 / 1500) ** 0.5


def trial(i, config, score, k=3):
    return {"trial": i, "config": config, "score": score, "scores": [score] * k, "n_val": [N_VAL] * k}


def grid(cell):
    """Every (lr, dropout) cell once, scored by ``cell(lr, dropout)``."""
    pairs = [(lr, d) for lr in LRS for d in DROPOUTS]
    return [trial(i, {"optim.lr": lr, "model.dropout": d}, cell(lr, d)) for i, (lr, d) in enumerate(pairs)]


def collapsed(dropout_effect):
    """lr = 0.1 trains to chance (0.1), and only there dropout moves the score a lot (0.1 -> 0.3);
    lr = 1e-4 is clearly worse. ``dropout_effect`` is what dropout 0.2 adds at every sane lr."""
    base = {1e-4: 0.90, 1e-3: 0.95, 1e-2: 0.945}

    def cell(lr, d):
        if lr == 1e-1:
            return 0.1 + d  # collapsed: chance, with dropout-dependent wreckage
        return base[lr] + (dropout_effect if d else 0.0)

    return cell


def interacting(size):
    """A crossover near the best: lr 1e-3 does best with dropout 0.2, lr 1e-2 with dropout 0, both
    ``size`` above the other dropout; lr 1e-4 is clearly worse and lr 0.1 collapses."""

    def cell(lr, d):
        if lr in (1e-3, 1e-2):
            return 0.95 + size * ((lr == 1e-3) == bool(d))
        return {1e-4: 0.90, 1e-1: 0.1 + d}[lr]

    return cell


# ------------------------------------------------------------------------------------- verdicts
def test_collapsed_lr_cells_do_not_make_dropout_delicate():
    result = analyze_search(grid(collapsed(0.002)), SPACE, "accuracy")
    v = result["verdicts"]
    drop = v["model.dropout"]
    assert drop["verdict"] == "permissive" and v["optim.lr"]["verdict"] == "delicate"
    # Over all trials dropout moves 0.05 (the wreckage at lr = 0.1): far past 2 floors, the old verdict.
    assert drop["marginal_spread"] == pytest.approx(0.0515, abs=1e-4)
    assert drop["marginal_spread"] > 2 * FLOOR
    # Near the best (lr 1e-3 and 1e-2 only) it moves 0.002: permissive, and the evidence says why.
    assert drop["spread"] == pytest.approx(0.002, abs=1e-6)
    assert drop["verdict"] == "permissive"
    assert drop["excluded"] == {"optim.lr": ["0.0001", "0.1"]}
    assert "with the others near the best" in drop["evidence"]
    assert (
        "Near the best means all values but optim.lr = 0.0001, 0.1, where no trial comes within 0.011 of the "
        "best 0.952 (2x the noise floor 0.00552); over all trials it moves 0.0515 (9.3x the noise floor)"
    ) in drop["evidence"]
    assert v["optim.lr"]["verdict"] == "delicate" and v["optim.lr"]["excluded"] == {}
    assert result["near_best"]["excluded"] == {"optim.lr": ["0.0001", "0.1"]}
    # The wreckage's 0.2 interaction lies among excluded cells: no "tune them together".
    (inter,) = result["interactions"]
    assert inter["verdict"] == "additive"
    assert not any("interact" in w for w in result["warnings"])


def test_a_real_dropout_effect_near_the_best_is_delicate():
    # The twin: dropout 0.2 costs 0.03 at every sane lr (5x the floor): now it is delicate.
    drop = analyze_search(grid(collapsed(-0.03)), SPACE, "accuracy")["verdicts"]["model.dropout"]
    assert drop["spread"] == pytest.approx(0.03, abs=1e-6)
    assert drop["verdict"] == "delicate"
    assert "0.03 across model.dropout (0..0.2) with the others near the best" in drop["evidence"]


def test_random_search_with_a_collapsing_lr():
    # Off a grid: lr log-uniform, training collapses to chance above 0.03, and there (only) dropout
    # swings the score by up to 0.25; near the best dropout does nothing.
    rng = np.random.default_rng(1)
    space = {
        "optim.lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True, "values": None},
        "model.dropout": {"type": "float", "low": 0.0, "high": 0.5, "log": False, "values": None},
    }
    trials = []
    for i in range(40):
        lr, d = float(10 ** rng.uniform(-4, -1)), float(rng.uniform(0, 0.5))
        score = 0.1 + 0.5 * d if lr > 0.03 else 0.95 - 0.01 * abs(np.log10(lr) + 2.5)
        trials.append(trial(i, {"optim.lr": lr, "model.dropout": d}, score + float(rng.normal(0, 0.002))))
    v = analyze_search(trials, space, "accuracy")["verdicts"]
    assert v["model.dropout"]["verdict"] == "permissive"
    assert v["model.dropout"]["marginal_spread"] > 5 * v["model.dropout"]["noise"]
    assert v["model.dropout"]["excluded"]["optim.lr"]  # the top lr bin(s), where training collapsed
    assert v["optim.lr"]["verdict"] == "delicate"


# ------------------------------------------------------------------------------------ edge warnings
def users_case(rising_everywhere):
    """The run that printed "widen the range upward" for dropout: the best cell has dropout 0.2 (by a
    hair, 0.003 at lr 1e-3) while dropout 0.2 costs 0.015-0.04 at lr 1e-4 and 0.1, so the marginal
    slopes down. ``rising_everywhere`` makes 0.2 the better value at every lr instead."""
    table = {
        (1e-4, 0.0): 0.913, (1e-4, 0.2): 0.898, (1e-3, 0.0): 0.967, (1e-3, 0.2): 0.970,
        (1e-2, 0.0): 0.965, (1e-2, 0.2): 0.963, (1e-1, 0.0): 0.724, (1e-1, 0.2): 0.681,
    }  # fmt: skip
    if rising_everywhere:
        table.update({(1e-4, 0.2): 0.923, (1e-2, 0.2): 0.966, (1e-1, 0.2): 0.744})
    return grid(lambda lr, d: table[(lr, d)])


def test_no_widen_upward_when_the_marginal_slopes_down():
    result = analyze_search(users_case(rising_everywhere=False), SPACE, "accuracy")
    assert not any(w.startswith("model.dropout:") for w in result["warnings"])
    drop = result["verdicts"]["model.dropout"]
    assert drop["best_value"] == 0.2 and drop["verdict"] == "permissive"
    assert [lv["mean"] for lv in drop["levels"]] == pytest.approx([0.89225, 0.878], abs=1e-6)  # slopes down
    assert not any("interact" in w for w in result["warnings"])


def test_widen_upward_when_the_score_rises_toward_the_top_everywhere():
    # The twin: dropout 0.2 wins at every lr, so the trend points outward: the warning comes back,
    # with the rise in numbers and the note that a permissive hyperparameter matters little.
    warnings = analyze_search(users_case(rising_everywhere=True), SPACE, "accuracy")["warnings"]
    (w,) = [w for w in warnings if w.startswith("model.dropout:")]
    assert w == (
        "model.dropout: the best value 0.2 is the top of its range [0, 0.2] and the mean score still rises "
        "toward it (+0.002 from 0, the others near the best); widen the range upward "
        "(it is permissive, so this matters little)"
    )


@pytest.mark.parametrize(
    ("scores", "expected"),
    [((0.90, 0.85), "widen the range downward"), ((0.85, 0.90), "widen the range upward")],
)
def test_two_value_list_widens_only_toward_the_better_end(scores, expected):
    space = {"model.hidden": {"type": "int", "low": 64, "high": 128, "log": True, "values": [64, 128]}}
    trials = [
        trial(i, {"model.hidden": h}, s) for i, (h, s) in enumerate(zip([64, 128], scores, strict=True))
    ]
    warnings = [w for w in analyze_search(trials, space, "accuracy")["warnings"] if "widen" in w]
    assert len(warnings) == 1 and warnings[0].endswith(expected)


def test_a_list_of_names_has_no_outward():
    space = {"model.act": {"type": "categorical", "values": ["relu", "gelu", "tanh"]}}
    trials = [trial(i, {"model.act": a}, 0.8 + 0.05 * i) for i, a in enumerate(["relu", "gelu", "tanh"])]
    assert not any("widen" in w for w in analyze_search(trials, space, "accuracy")["warnings"])
    # A categorical list of numbers is ordered, so it can point outward.
    space = {"data.batch_size": {"type": "categorical", "values": [32, 64, 128]}}
    trials = [trial(i, {"data.batch_size": b}, 0.8 + 0.05 * i) for i, b in enumerate([32, 64, 128])]
    (w,) = [w for w in analyze_search(trials, space, "accuracy")["warnings"] if "widen" in w]
    assert w.startswith("data.batch_size: the best value 128 is the top") and w.endswith("upward")


# ------------------------------------------------------------------------------------ interactions
@pytest.mark.parametrize(("size", "noted"), [(0.003, False), (0.03, True)])
def test_interaction_noted_only_above_the_noise_floor(size, noted):
    # Crossover of +-size near the best; the 2x2 table there departs from additive by size / 2. The
    # collapsed lr = 0.1 row departs by 0.075 (dropout 0.2 lifts it from 0.1 to 0.3), but nobody would
    # pick that lr, so it is not what decides whether to tune the two together.
    result = analyze_search(grid(interacting(size)), SPACE, "accuracy")
    notes = [w for w in result["warnings"] if "interact" in w]
    (inter,) = result["interactions"]
    assert inter["verdict"] == ("interacting" if noted else "additive")
    assert inter["max_residual"] == pytest.approx(size / 2, abs=1e-6)
    if noted:
        assert notes == [
            "optim.lr and model.dropout interact near the best: their table of mean accuracy departs from "
            f"additive by up to 0.015 ({0.015 / inter['noise']:.1f}x the noise floor {inter['noise']:.3g}): "
            "tune them together; their separate verdicts average over each other"
        ]
    else:
        assert notes == []
        assert "(interacting needs over 2x): additive" in inter["evidence"]


def test_interaction_untestable_when_one_value_alone_is_near_the_best():
    # Only lr 1e-3 comes near the best: no second good lr to see dropout's best move with it.
    result = analyze_search(
        grid(lambda lr, d: {1e-3: 0.95}.get(lr, 0.8) + 0.05 * d * (lr < 0.05)), SPACE, "accuracy"
    )
    (inter,) = result["interactions"]
    assert inter["verdict"] == "untestable"
    assert inter["evidence"].startswith(
        "the optim.lr x model.dropout interaction cannot be measured near the best: only optim.lr = 0.001"
    )
    assert not any("interact" in w for w in result["warnings"])


def test_no_downward_widening_below_zero():
    """dropout 0 winning at the bottom of [0, 0.2] with a slope toward 0: nothing lies below 0 to search."""
    from dlrig.select.analysis import _edge_warning

    levels = [{"value": 0.0, "label": "0", "mean": 0.97}, {"value": 0.2, "label": "0.2", "mean": 0.95}]
    entry = {"conditional_levels": levels, "levels": levels, "verdict": "delicate"}
    assert _edge_warning("model.dropout", {"values": [0.0, 0.2]}, 0.0, entry) is None
    shifted = [{**lv, "value": lv["value"] + 0.1} for lv in levels]
    entry = {"conditional_levels": shifted, "levels": shifted, "verdict": "delicate"}
    assert "widen the range downward" in _edge_warning("model.dropout", {"values": [0.1, 0.3]}, 0.1, entry)
