"""Search and nested-CV figures: valid PNGs, the same bytes twice, no crash on empty inputs."""

from __future__ import annotations

import math

import numpy as np

from dlrig.report.cv_figures import outer_fold_scores, score_vs_hyperparameters, trial_history

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DPI = 40  # low dpi keeps the tests fast

SPACE = {
    "optim.lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True, "values": None},
    "model.hidden": {"type": "int", "low": 32, "high": 512, "log": True, "values": [32, 128, 512]},
    "model.act": {"type": "categorical", "low": None, "high": None, "log": False, "values": ["relu", "gelu"]},
}


def random_search(n=12, seed=0):
    rng = np.random.default_rng(seed)
    trials = []
    for i in range(n):
        lr = float(10 ** rng.uniform(-4, -1))
        config = {"optim.lr": lr, "model.hidden": [32, 128, 512][i % 3], "model.act": ["relu", "gelu"][i % 2]}
        if i in (3, 7):
            trials.append(
                {"trial": i, "config": config, "score": None, "scores": [], "n_val": [], "pruned": True}
            )
            continue
        score = 0.9 - 0.03 * (math.log10(lr) + 2.5) ** 2
        scores = [score - 0.01, score, score + 0.01]
        trials.append(
            {
                "trial": i,
                "config": config,
                "score": score,
                "scores": scores,
                "n_val": [80] * 3,
                "pruned": False,
            }
        )
    trials.append(
        {"trial": n, "config": trials[0]["config"], "score": None, "scores": [], "n_val": [], "pruned": False}
    )
    return trials


FOLDS = [{"fold": k, "best_inner_score": 0.9 + 0.01 * k, "outer_score": 0.88 + 0.012 * k} for k in range(5)]


def _check_twice(draw, tmp_path):
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    draw(first)
    draw(second)
    data = first.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 1000
    assert data == second.read_bytes()


def test_score_vs_hyperparameters(tmp_path):
    trials = random_search()
    _check_twice(lambda p: score_vs_hyperparameters(trials, SPACE, p, DPI, "accuracy"), tmp_path)


def test_outer_fold_scores(tmp_path):
    _check_twice(lambda p: outer_fold_scores(FOLDS, p, DPI, "balanced_accuracy"), tmp_path)


def test_outer_fold_scores_plain_cv(tmp_path):
    # cv.depth 1: no inner/outer pair, only the chosen config's score per fold.
    _check_twice(lambda p: outer_fold_scores(FOLDS, p, DPI, "accuracy", optimistic=True), tmp_path)


def test_trial_history(tmp_path):
    trials = random_search()
    _check_twice(lambda p: trial_history(trials, p, DPI, "neg_log_loss"), tmp_path)


def test_empty_inputs_still_draw(tmp_path):
    pruned = [
        {"trial": 0, "config": {"optim.lr": 1e-3}, "score": None, "scores": [], "n_val": [], "pruned": True}
    ]
    for name, draw in {
        "hp": lambda p: score_vs_hyperparameters(pruned, {"optim.lr": SPACE["optim.lr"]}, p, DPI, "accuracy"),
        "hist": lambda p: trial_history(pruned, p, DPI, "accuracy"),
        "outer": lambda p: outer_fold_scores([], p, DPI, "accuracy"),
        "plain": lambda p: outer_fold_scores([], p, DPI, "accuracy", optimistic=True),
        "nothing": lambda p: score_vs_hyperparameters(pruned, {}, p, DPI, "accuracy"),
    }.items():
        path = draw(tmp_path / f"{name}.png")
        assert path.read_bytes().startswith(PNG_SIGNATURE)


def collapsed_grid(dropout_values=(0.0, 0.2)):
    """lr = 0.1 collapses to chance (dropout moves it a lot there); near the best dropout does nothing."""
    trials = []
    for i, (lr, d) in enumerate((lr, d) for lr in (1e-4, 1e-3, 1e-2, 1e-1) for d in dropout_values):
        score = 0.1 + d if lr == 1e-1 else {1e-4: 0.9, 1e-3: 0.95, 1e-2: 0.945}[lr]
        config = {"optim.lr": lr, "model.dropout": d}
        trials.append(
            {"trial": i, "config": config, "score": score, "scores": [score] * 3, "n_val": [500] * 3}
        )
    return trials


def _panel(trials, space, name):
    from matplotlib.figure import Figure

    from dlrig.report.cv_figures import NEAR_LABEL, _param_panel
    from dlrig.select.analysis import analyze_search

    verdict = analyze_search(trials, space, "accuracy")["verdicts"][name]
    ax = Figure().subplots()
    best = max(trials, key=lambda t: t["score"])
    _param_panel(ax, name, space[name], trials, best, verdict)
    return NEAR_LABEL in ax.get_legend_handles_labels()[1], ax.get_title()


def test_score_vs_hyperparameters_shows_the_means_near_the_best(tmp_path):
    numeric = {
        "optim.lr": SPACE["optim.lr"],
        "model.dropout": {"type": "float", "low": 0.0, "high": 0.2, "log": False, "values": [0.0, 0.2]},
    }
    trials = collapsed_grid()
    drawn, title = _panel(trials, numeric, "model.dropout")  # lr 1e-4 and 0.1 left out for dropout
    assert drawn and title.endswith("noise near the best)") and "permissive" in title
    drawn, title = _panel(trials, numeric, "optim.lr")  # nothing of dropout left out: one line only
    assert not drawn and title.endswith("x noise)")
    categorical = dict(numeric, **{"model.dropout": {"type": "categorical", "values": ["0.0", "0.2"]}})
    cat_trials = [
        dict(t, config=dict(t["config"], **{"model.dropout": str(t["config"]["model.dropout"])}))
        for t in trials
    ]
    drawn, _ = _panel(cat_trials, categorical, "model.dropout")
    assert drawn
    _check_twice(lambda p: score_vs_hyperparameters(trials, numeric, p, DPI, "accuracy"), tmp_path)
