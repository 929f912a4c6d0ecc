"""What the report shows beyond the headline: average precision and the PR curve, the importance bars and the
heat map of the top two hyperparameters, each outer fold's refit curves (when the records hold them), the
params as used (the search's choices marked), and the run's name and git revision in the title block."""

from __future__ import annotations

import subprocess

import pytest
from tests.report.report_files import (
    CFG,
    DIMS,
    build_page,
    png_size,
    section_of,
    without_images,
    write_inputs,
)

from dlrig.io import load_json, save_json
from dlrig.report.html import OPTIONAL_FIGURES, build_report, run_identity
from dlrig.report.search_figures import importance_figure, top_two, top_two_figure
from dlrig.select.space import Dimension, describe_space


@pytest.fixture
def inputs(tmp_path):
    return write_inputs(tmp_path)


def test_average_precision_and_the_pr_curve_are_shown(inputs):
    metrics = load_json(inputs / "reports/metrics.json")["test"]
    text = without_images(build_page(inputs, "out"))
    headline = section_of(text, "headline")
    assert "Average precision" in headline and f"{metrics['macro_average_precision']:.4f}" in headline
    per_class = section_of(text, "per-class")
    assert 'alt="Precision-recall curve"' in per_class
    assert '<th class="num">Average precision</th>' in per_class
    for value in metrics["average_precision"].values():
        assert f'<td class="num">{value:.4f}</td>' in per_class
    png_size(inputs / "out/figures/precision_recall.png")


def test_importance_bars_and_top_two_heat_map(inputs):
    text = without_images(build_page(inputs, "out"))
    selection = section_of(text, "selection")
    assert 'alt="Hyperparameter importance"' in selection
    assert 'alt="Score over the top two hyperparameters"' in selection
    assert "reports/cv/trials.csv" in selection
    for name in ("cv_importance", "cv_top_two"):
        png_size(inputs / "out/figures" / OPTIONAL_FIGURES[name])


def test_top_two_is_a_contour_for_scattered_trials_and_absent_with_one_dimension(tmp_path):
    space = describe_space(DIMS)
    analysis = {"importance": {"optim.lr": 0.7, "model.dropout": 0.3}}
    assert top_two(analysis, space) == ["optim.lr", "model.dropout"]
    # 20 quasi-random trials: too many distinct values for a grid of cells.
    trials = [{"trial": i, "config": {"optim.lr": 0.001 * 1.2**i, "model.dropout": (i * 0.37) % 0.2},
               "score": 0.8 - abs(i - 10) * 0.01, "state": "complete"} for i in range(20)]
    png_size(top_two_figure(trials, space, analysis, tmp_path / "contour.png", 40, "accuracy"))
    one = {"optim.lr": space["optim.lr"]}
    assert top_two_figure(trials, one, analysis, tmp_path / "one.png", 40, "accuracy") is None
    assert importance_figure({}, tmp_path / "none.png", 40) is None
    assert not (tmp_path / "one.png").exists() and not (tmp_path / "none.png").exists()


def test_fold_refit_curves_are_drawn_when_the_records_hold_them(inputs):
    text = without_images(build_page(inputs, "out"))
    assert "holds no per-epoch history of the outer refits" in section_of(text, "training")
    assert not (inputs / "out/figures" / OPTIONAL_FIGURES["fold_curves"]).exists()
    folds = load_json(inputs / "reports/cv/folds.json")
    for k, record in enumerate(folds):  # what the train stage saves once the refits keep their histories
        record["refit"] = {"best_epoch": 2 + k % 2, "history": [
            {"epoch": e, "train_loss": 1 / e, "val_loss": 1.1 / e + 0.02 * e * k,
             "train_accuracy": 1 - 0.3 / e, "val_accuracy": 0.9 - 0.2 / e} for e in range(1, 6)]}
    save_json(inputs / "reports/cv/folds.json", folds)
    training = section_of(without_images(build_page(inputs, "out2")), "training")
    assert 'alt="Learning curves of the outer refits"' in training
    png_size(inputs / "out2/figures" / OPTIONAL_FIGURES["fold_curves"])


def test_params_show_the_values_used_with_the_chosen_ones_marked(inputs):
    summary = load_json(inputs / "reports/cv/summary.json")
    assert summary["final"]["config"] == {"model.dropout": 0.0, "optim.lr": 0.003}
    params = section_of(without_images(build_page(inputs, "out")), "params")
    # lr: params.yaml says 1e-3, the search chose 0.003; dropout is not in this params.yaml at all.
    assert "<mark>  lr: 0.003</mark>" in params and "params.yaml: 0.001" in params
    assert "<mark>  dropout: 0.0</mark>" in params and "params.yaml: not set (its default)" in params
    assert "lr: 0.001" not in params and params.count("<mark>") == 2
    assert params.index("optim:") < params.index("report:")  # the file's order is kept
    # A chosen value equal to its starting value is marked without a "was".
    (inputs / "params.yaml").write_text("optim:\n  lr: 0.003\nmodel:\n  dropout: 0.0\n")
    params = section_of(without_images(build_page(inputs, "out2")), "params")
    assert params.count("# chosen by the search</span>") == 2 and "params.yaml:" not in params.split("<pre>")[1]


def test_title_block_names_the_experiment_and_git_revision(inputs):
    out = inputs / "out"
    build_report(inputs / "reports", inputs / "params.yaml", out / "report.html", out / "figures", CFG,
                 identity={"experiment": "bushy-oast", "revision": "1a2b3c4"})
    header = (out / "report.html").read_text().split("</header>")[0]
    assert "experiment <strong>bushy-oast</strong>" in header and "git <code>1a2b3c4</code>" in header
    build_report(inputs / "reports", inputs / "params.yaml", out / "report.html", out / "figures", CFG,
                 identity={"experiment": None, "revision": None})
    header = (out / "report.html").read_text().split("</header>")[0]
    assert "experiment" not in header and "git revision unknown" in header


def test_run_identity_reads_dvc_exp_run_then_git(tmp_path, monkeypatch):
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    monkeypatch.delenv("DVC_EXP_BASELINE_REV", raising=False)
    assert run_identity(tmp_path) == {"experiment": None, "revision": None}  # not a git repository
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    assert run_identity(tmp_path)["revision"] is None  # no commit yet
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty",
                    "-m", "x"], cwd=tmp_path, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout
    assert run_identity(tmp_path) == {"experiment": None, "revision": head[:7]}
    # Inside `dvc exp run`: the experiment's name and the commit it started from.
    monkeypatch.setenv("DVC_EXP_NAME", "bushy-oast")
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", "f" * 40)
    assert run_identity(tmp_path) == {"experiment": "bushy-oast", "revision": "fffffff"}


def test_categorical_top_two_is_a_heat_map(tmp_path):
    dims = [Dimension("model.activation", "categorical", ("relu", "gelu", "tanh")),
            Dimension("optim.name", "categorical", ("adam", "sgd"))]
    space = describe_space(dims)
    trials = [{"trial": i, "config": {"model.activation": a, "optim.name": o}, "score": 0.7 + 0.01 * i,
               "state": "complete"} for i, (a, o) in enumerate((a, o) for a in ("relu", "gelu", "tanh")
                                                               for o in ("adam", "sgd"))]
    trials.append({"trial": 6, "config": {"model.activation": "relu", "optim.name": "sgd"}, "score": None,
                   "state": "failed"})
    png_size(top_two_figure(trials, space, {}, tmp_path / "cat.png", 40, "accuracy"))
