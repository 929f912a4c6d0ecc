"""The report is built from saved files only: these tests write small input files and build it."""

from __future__ import annotations

import re

import matplotlib
import pytest
from tests.report.report_files import (
    FILES,
    HISTORY,
    build_page,
    png_size,
    section_of,
    without_images,
    write_cv,
    write_inputs,
)

from dlrig.errors import UserError
from dlrig.io import load_json, save_json
from dlrig.report.figures import confusion_matrix_figure, learning_curves, per_class_recall_figure
from dlrig.report.html import FIGURES, OPTIONAL_FIGURES


@pytest.fixture
def inputs(tmp_path):
    return write_inputs(tmp_path)


def test_report_has_headline_numbers_and_is_self_contained(inputs):
    page = build_page(inputs, "out")
    for shown in ("66.67%", "72.22%", "0.6556", "0.7091", ">6<"):
        assert shown in page
    # Every figure, plus the importance bars and the top-two heat map (two searched hyperparameters); no
    # per-fold refit curves: these fold records hold no refit history.
    drawn = [*FIGURES.values(), OPTIONAL_FIGURES["cv_importance"], OPTIONAL_FIGURES["cv_top_two"]]
    assert page.count('src="data:image/png;base64,') == len(drawn) == 10
    text = without_images(page)
    assert "http" not in text  # no external resource of any kind
    assert "<script" not in text and "<link" not in text
    assert "Tiny &lt;run&gt; &amp; co" in text  # title escaped
    assert "at least 10 per class &lt;b&gt;" in text  # input values escaped
    assert text.count('<tr class="fail">') == 1  # the failed expectation is highlighted
    assert "2 classes" in text and "dataset.n_samples" in text and "settings.on_failure" in text
    # params shown as used: the searched lr chosen (0.003) in place of the file's 1e-3 (read as a number)
    assert "<mark>  lr: 0.003</mark><span class=\"chosen\">  # chosen by the search; params.yaml: 0.001" in text
    assert "12,345" in text  # parameter count
    assert str(inputs) not in text  # no absolute paths
    for name in drawn:
        png_size(inputs / "out/figures" / name)  # the figures written beside are valid PNGs
    assert sorted(p.name for p in (inputs / "out/figures").iterdir()) == sorted(drawn)


def test_report_is_byte_identical_when_built_twice(inputs):
    # Two builds into different folders, with matplotlib's global style changed in between: the page
    # carries no timestamp or path, and the figures ignore the caller's rcParams.
    first = build_page(inputs, "a")
    with matplotlib.rc_context({"lines.linewidth": 5, "font.size": 20}):
        second = build_page(inputs, "b")
    assert first == second
    for name in FIGURES.values():
        assert (inputs / "a/figures" / name).read_bytes() == (inputs / "b/figures" / name).read_bytes()


@pytest.mark.parametrize("rel, stage", FILES.items())
def test_missing_input_names_file_and_stage(inputs, rel, stage):
    (inputs / "reports" / rel).unlink()
    with pytest.raises(UserError, match=re.escape(rel)) as err:
        build_page(inputs, "out")
    assert f"{stage} stage" in str(err.value)
    assert not (inputs / "out/report.html").exists()



def test_headline_shows_cv_estimate_beside_test_accuracy(inputs):
    summary = load_json(inputs / "reports/cv/summary.json")
    text = without_images(build_page(inputs, "out"))
    lo, hi = summary["ci95"]
    expected = (
        f"CV accuracy {summary['mean']:.3f} ± {summary['std']:.3f} (95% CI {lo:.3f}–{hi:.3f}, 3 outer folds)"
    )
    headline = section_of(text, "headline")
    assert expected in headline and "Nested-CV estimate" in headline
    ci = load_json(inputs / "reports/metrics.json")["test"]["ci95"]["accuracy"]  # evaluate's bootstrap
    assert f"Test accuracy 0.667 (95% CI {ci['low']:.3f}–{ci['high']:.3f}) on 6 held-out samples" in headline
    assert "optimistic" not in headline


def test_model_selection_section_tells_the_story(inputs):
    summary = load_json(inputs / "reports/cv/summary.json")
    text = without_images(build_page(inputs, "out"))
    assert text.index('id="headline"') < text.index('id="selection"') < text.index('id="training"')
    section = section_of(text, "selection")
    assert "<h2>Model selection</h2>" in section
    assert "Nested cross-validation (cv.depth 2)" in section and "3 outer folds" in section
    assert "(6 trials)" in section and "over 3 inner folds" in section
    # The final config, with what was searched, and its inner score.
    assert "<code>optim.lr</code></td><td><code>0.003</code>" in section
    assert "0.001, 0.003, 0.01 (log scale)" in section
    assert f"Its mean inner accuracy: {summary['final']['inner_score']:.4f}" in section
    # One row per outer fold with its optimism, and the optimism sentence from optimism_summary.
    for k, per in enumerate(summary["optimism_summary"]["per_fold"]):
        assert f"<tr><td>{k}</td><td><code>model.dropout=0, optim.lr=0.003</code></td>" in section
        assert f"{per['optimism']:+.4f}" in section
    sentence = summary["optimism_summary"]["summary"]
    assert sentence[:1].upper() + sentence[1:] in section
    assert "Optimism = best inner score − outer score" in section
    # Noise floor, verdicts (lr delicate, dropout permissive), interactions, warnings.
    assert f"Noise floor: {summary['analysis']['noise_floor']['se']:.3g}" in section
    assert '<span class="badge delicate">delicate</span>' in section
    assert '<span class="badge permissive">permissive</span>' in section
    assert "Delicate: across its values" in section and "Permissive:" in section
    assert "optim.lr x model.dropout interaction" in section
    warnings = summary["analysis"]["warnings"]
    assert warnings and '<ul class="warnings">' in section
    for warning in warnings:
        assert f"<li>{warning}</li>".replace("'", "&#39;") in section
    # Outer folds, score vs each hyperparameter, importance bars, the top-two heat map, trial history.
    assert section.count("<figure>") == 5
    assert "Candidates" not in section  # depth 3 only


def test_depth_one_is_labelled_optimistic(inputs):
    summary = write_cv(inputs / "reports", depth=1)
    text = without_images(build_page(inputs, "out"))
    headline = section_of(text, "headline")
    assert "Plain CV (optimistic)" in headline
    assert f"CV accuracy {summary['mean']:.3f} ± {summary['std']:.3f} (95% CI" in headline
    assert "3 folds)" in headline and "outer folds" not in headline
    section = section_of(text, "selection")
    assert "Plain cross-validation (cv.depth 1)" in section and "optimistic" in section
    assert "No optimism to measure at cv.depth 1" in section
    png_size(inputs / "out/figures/cv_outer_folds.png")


def test_depth_three_shows_candidate_estimates(inputs):
    write_cv(inputs / "reports", depth=3)
    section = section_of(without_images(build_page(inputs, "out")), "selection")
    assert "<h3>Candidates (middle loop)</h3>" in section
    assert "<th>Candidate</th>" in section  # the per-fold table names each fold's winner
    assert "<strong>0.8400</strong>" in section and "<td>final</td>" in section


def test_nothing_searched_is_said_plainly(inputs):
    write_cv(inputs / "reports", dims=[])  # an empty search.space: one trial, the params as they are
    page = build_page(inputs, "out")
    section = section_of(without_images(page), "selection")
    assert "Nothing was searched" in section
    assert section.count("<figure>") == 2  # no score-vs-hyperparameter panels to show
    png_size(inputs / "out/figures/cv_scores_vs_hyperparameters.png")  # still written


def test_malformed_cv_summary_is_refused(inputs):
    summary = load_json(inputs / "reports/cv/summary.json")
    del summary["final"]
    save_json(inputs / "reports/cv/summary.json", summary)
    with pytest.raises(UserError, match=r"cv/summary\.json.*'final'.*train stage"):
        build_page(inputs, "out")
    write_cv(inputs / "reports")
    save_json(inputs / "reports/cv/folds.json", {"fold": 0})
    with pytest.raises(UserError, match=r"cv/folds\.json: expected a JSON array.*train stage"):
        build_page(inputs, "out")
    save_json(inputs / "reports/cv/folds.json", [{"fold": 0}])
    with pytest.raises(UserError, match=r"cv/folds\.json: record 0"):
        build_page(inputs, "out")


def test_missing_params_file_is_named(inputs):
    (inputs / "params.yaml").unlink()
    with pytest.raises(UserError, match="params.yaml"):
        build_page(inputs, "out")


def test_malformed_metrics_are_refused(inputs):
    save_json(inputs / "reports/metrics.json", {"test": {"accuracy": 0.5}})
    with pytest.raises(UserError, match="metrics.json"):
        build_page(inputs, "out")


def test_figures_handle_missing_pieces(tmp_path):
    # No validation curve (early stopping off), a class absent from the test set, an empty history.
    no_val = {
        "history": [{k: v for k, v in r.items() if not k.startswith("val_")} for r in HISTORY["history"]],
        "best_epoch": 4,
        "stopped_early": False,
    }
    png_size(learning_curves(no_val, tmp_path / "curves.png", 50))
    png_size(learning_curves({"history": [], "best_epoch": None}, tmp_path / "empty.png", 50))
    png_size(per_class_recall_figure({"a": 0.5, "b": None, "c": 1.0}, tmp_path / "recall.png", 50))
    png_size(confusion_matrix_figure([[2, 0], [0, 0]], ["a", "b"], tmp_path / "cm.png", 50))
    with pytest.raises(ValueError, match="2x2"):
        confusion_matrix_figure([[1, 2, 3]], ["a", "b"], tmp_path / "bad.png", 50)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cm.png", "curves.png", "empty.png", "recall.png"]
