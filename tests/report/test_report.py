"""The report is built from saved files only: these tests write small input files and build it."""

from __future__ import annotations

import itertools
import re
import struct
from types import SimpleNamespace

import matplotlib
import numpy as np
import pytest

from dlrig.errors import UserError
from dlrig.io import load_json, save_json, save_text
from dlrig.params import ReportParams
from dlrig.report.figures import confusion_matrix_figure, learning_curves, per_class_recall_figure
from dlrig.report.html import FIGURES, build_report
from dlrig.select.analysis import analyze_search, optimism_summary
from dlrig.select.nested import NestedCV, Selection, summarise
from dlrig.select.search import SearchResult, Trial
from dlrig.select.space import Dimension, describe_space

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CFG = ReportParams(title="Tiny <run> & co", dpi=50)  # low dpi keeps the tests fast

TEST_METRICS = {
    "accuracy": 0.666667,
    "balanced_accuracy": 0.722222,
    "macro_f1": 0.655556,
    "log_loss": 0.709075,
    "n": 6,
    "classes": ["cat", "dog", "emu"],
    "per_class_recall": {"cat": 0.666667, "dog": 0.5, "emu": 1.0},
    "confusion_matrix": [[2, 1, 0], [0, 1, 1], [0, 0, 1]],
}
HISTORY = {
    "history": [
        {
            "epoch": e,
            "lr": 0.01 / e,
            "train_loss": 1.0 / e,
            "train_accuracy": 0.5 + 0.1 * e,
            "val_loss": 1.2 / e + 0.05 * e,
            "val_accuracy": 0.45 + 0.1 * e,
        }
        for e in range(1, 5)
    ],
    "best_epoch": 3,
    "stopped_early": True,
    "n_parameters": 12345,
    "seconds": 1.5,
    "n_fit": 20,
    "n_val": 4,
}
# The shape dlrig.data.validate writes, plus keys the report does not know ("summary", "extra").
VALIDATION = {
    "success": False,
    "n_expectations": 2,
    "n_failed": 1,
    "expectations": [
        {
            "name": "no_nan",
            "description": "no missing values",
            "success": True,
            "offending": 0,
            "unit": "samples",
            "examples": [],
        },
        {
            "name": "min_per_class",
            "description": "at least 10 per class <b>",
            "success": False,
            "offending": 2,
            "unit": "classes",
            "examples": [{"label": "emu", "count": 3}],
            "extra": 1,
        },
    ],
    "dataset": {"n_samples": 30, "class_counts": {"cat": 15, "dog": 10, "emu": 5}},
    "settings": {"on_failure": "warn", "min_per_class": 10},
    "summary": {"anything": [1, 2]},
}
SPLIT = {
    "n_train": 24,
    "n_test": 6,
    "test_size": 0.2,
    "duplicates": {"policy": "remove", "within_train": 1, "within_test": 0, "across": 2, "removed": 3},
    "class_counts": {"train": {"cat": 12, "dog": 8, "emu": 4}, "test": {"cat": 3, "dog": 2, "emu": 1}},
}
FILES = {
    "validation.json": "validate",
    "split.json": "split",
    "train/history.json": "train",
    "metrics.json": "evaluate",
    "cv/summary.json": "train",
    "cv/folds.json": "train",
}

# reports/cv as the train stage writes it, built with the library's own record builders (Trial,
# SearchResult, NestedCV._fold_record, summarise, optimism_summary, analyze_search), so the shapes the
# report reads cannot drift from what train writes. The scores are made up: lr matters, dropout does not.
DIMS = [
    Dimension("model.dropout", "float", (0.0, 0.2)),
    Dimension("optim.lr", "float", (0.001, 0.003, 0.01), low=0.001, high=0.01, log=True),
]
LR_EFFECT = {0.001: 0.70, 0.003: 0.85, 0.01: 0.78}


def fake_search(shift: float, dims=DIMS) -> SearchResult:
    names = [d.name for d in dims]
    trials = []
    for i, values in enumerate(itertools.product(*(d.values for d in dims))):
        config = dict(zip(names, values, strict=True))
        score = LR_EFFECT[config.get("optim.lr", 0.003)] - 0.005 * config.get("model.dropout", 0) + shift
        trials.append(Trial(i, config, [score - 0.01, score, score + 0.01], [50, 50, 50]))
    best = max(trials, key=lambda t: (t.score, -t.number))
    return SearchResult(trials, best, False)


def cv_files(depth: int = 2, dims=DIMS) -> tuple[dict, list]:
    """(summary.json, folds.json) for three outer folds, assembled as stages/train.py does."""
    driver = NestedCV(SimpleNamespace(metric="accuracy"), None, None, dims, None, None, 0, {})
    records = []
    for k, outer in enumerate((0.80, 0.84, 0.79)):
        search = fake_search(0.0 if depth == 1 else 0.01 * k, dims)
        if depth == 1:  # one search on the outer folds themselves; each fold scores the same winner
            outer = search.best.scores[k]
        chosen = Selection(search.best.config, search.best.score, search)
        if depth == 3:
            chosen.candidates, chosen.candidate = {"cnn": 0.83 + 0.01 * k, "mlp": 0.8}, "cnn"
        scores = {"accuracy": outer, "macro_f1": outer - 0.02}
        record = driver._fold_record(k, np.arange(k, 30, 3), np.arange(3), chosen, scores, 1.5)
        if depth == 1:
            record["search"] = None
        records.append(record)
    search = fake_search(0.0 if depth == 1 else 0.005, dims)  # depth 1: the final pick is that one search
    final = Selection(search.best.config, search.best.score, search)
    if depth == 3:
        final.candidates, final.candidate = {"cnn": 0.84, "mlp": 0.81}, "cnn"
    space = describe_space(dims)
    trials = final.search.to_json()["trials"]
    summary = {
        **summarise(records, "accuracy", depth),
        "optimism_summary": optimism_summary(records, metric="accuracy") if depth > 1 else None,
        "final": {
            "config": final.config,
            "inner_score": round(final.inner_score, 6),
            "candidate": final.candidate,
            "candidates": final.candidates,
            "search": final.search.to_json(),
        },
        "space": space,
        "analysis": analyze_search(trials, space, "accuracy"),
    }
    return summary, records


def write_cv(reports, depth: int = 2, dims=DIMS) -> dict:
    summary, folds = cv_files(depth, dims)
    save_json(reports / "cv/summary.json", summary)
    save_json(reports / "cv/folds.json", folds)
    return load_json(reports / "cv/summary.json")


@pytest.fixture
def inputs(tmp_path):
    reports = tmp_path / "reports"
    save_json(reports / "validation.json", VALIDATION)
    save_json(reports / "split.json", SPLIT)
    save_json(reports / "train/history.json", HISTORY)
    save_json(reports / "metrics.json", {"test": TEST_METRICS})
    write_cv(reports)
    save_text(tmp_path / "params.yaml", "seed: 7  # why\noptim:\n  lr: 1e-3\nreport:\n  dpi: 50\n")
    return tmp_path


def _build(root, out):
    build_report(
        root / "reports", root / "params.yaml", root / out / "report.html", root / out / "figures", CFG
    )
    return (root / out / "report.html").read_text(encoding="utf-8")


def _without_images(page: str) -> str:
    return re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "data:image/png;base64,", page)


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width > 0 and height > 0
    return width, height


def test_report_has_headline_numbers_and_is_self_contained(inputs):
    page = _build(inputs, "out")
    for shown in ("66.67%", "72.22%", "0.6556", "0.7091", ">6<"):
        assert shown in page
    assert page.count('src="data:image/png;base64,') == 6
    text = _without_images(page)
    assert "http" not in text  # no external resource of any kind
    assert "<script" not in text and "<link" not in text
    assert "Tiny &lt;run&gt; &amp; co" in text  # title escaped
    assert "at least 10 per class &lt;b&gt;" in text  # input values escaped
    assert text.count('<tr class="fail">') == 1  # the failed expectation is highlighted
    assert "2 classes" in text and "dataset.n_samples" in text and "settings.on_failure" in text
    assert "lr: 0.001" in text  # params shown (1e-3 read as a number)
    assert "12,345" in text  # parameter count
    assert str(inputs) not in text  # no absolute paths
    for name in FIGURES.values():
        _png_size(inputs / "out/figures" / name)  # the figures written beside are valid PNGs
    assert sorted(p.name for p in (inputs / "out/figures").iterdir()) == sorted(FIGURES.values())


def test_report_is_byte_identical_when_built_twice(inputs):
    # Two builds into different folders, with matplotlib's global style changed in between: the page
    # carries no timestamp or path, and the figures ignore the caller's rcParams.
    first = _build(inputs, "a")
    with matplotlib.rc_context({"lines.linewidth": 5, "font.size": 20}):
        second = _build(inputs, "b")
    assert first == second
    for name in FIGURES.values():
        assert (inputs / "a/figures" / name).read_bytes() == (inputs / "b/figures" / name).read_bytes()


@pytest.mark.parametrize("rel, stage", FILES.items())
def test_missing_input_names_file_and_stage(inputs, rel, stage):
    (inputs / "reports" / rel).unlink()
    with pytest.raises(UserError, match=re.escape(rel)) as err:
        _build(inputs, "out")
    assert f"{stage} stage" in str(err.value)
    assert not (inputs / "out/report.html").exists()


def _section(page: str, anchor: str) -> str:
    start = page.index(f'<section id="{anchor}">')
    return page[start : page.index("</section>", start)]


def test_headline_shows_cv_estimate_beside_test_accuracy(inputs):
    summary = load_json(inputs / "reports/cv/summary.json")
    text = _without_images(_build(inputs, "out"))
    lo, hi = summary["ci95"]
    expected = (
        f"CV accuracy {summary['mean']:.3f} ± {summary['std']:.3f} (95% CI {lo:.3f}–{hi:.3f}, 3 outer folds)"
    )
    headline = _section(text, "headline")
    assert expected in headline and "Nested-CV estimate" in headline
    assert "Test accuracy 0.667 on 6 held-out samples" in headline
    assert "optimistic" not in headline


def test_model_selection_section_tells_the_story(inputs):
    summary = load_json(inputs / "reports/cv/summary.json")
    text = _without_images(_build(inputs, "out"))
    assert text.index('id="headline"') < text.index('id="selection"') < text.index('id="training"')
    section = _section(text, "selection")
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
        assert f"<li>{warning}</li>".replace("'", "&#x27;") in section
    assert section.count("<figure>") == 3
    assert "Candidates" not in section  # depth 3 only


def test_depth_one_is_labelled_optimistic(inputs):
    summary = write_cv(inputs / "reports", depth=1)
    text = _without_images(_build(inputs, "out"))
    headline = _section(text, "headline")
    assert "Plain CV (optimistic)" in headline
    assert f"CV accuracy {summary['mean']:.3f} ± {summary['std']:.3f} (95% CI" in headline
    assert "3 folds)" in headline and "outer folds" not in headline
    section = _section(text, "selection")
    assert "Plain cross-validation (cv.depth 1)" in section and "optimistic" in section
    assert "No optimism to measure at cv.depth 1" in section
    _png_size(inputs / "out/figures/cv_outer_folds.png")


def test_depth_three_shows_candidate_estimates(inputs):
    write_cv(inputs / "reports", depth=3)
    section = _section(_without_images(_build(inputs, "out")), "selection")
    assert "<h3>Candidates (middle loop)</h3>" in section
    assert "<th>Candidate</th>" in section  # the per-fold table names each fold's winner
    assert "<strong>0.8400</strong>" in section and "<td>final</td>" in section


def test_nothing_searched_is_said_plainly(inputs):
    write_cv(inputs / "reports", dims=[])  # an empty search.space: one trial, the params as they are
    page = _build(inputs, "out")
    section = _section(_without_images(page), "selection")
    assert "Nothing was searched" in section
    assert section.count("<figure>") == 2  # no score-vs-hyperparameter panels to show
    _png_size(inputs / "out/figures/cv_scores_vs_hyperparameters.png")  # still written


def test_malformed_cv_summary_is_refused(inputs):
    summary = load_json(inputs / "reports/cv/summary.json")
    del summary["final"]
    save_json(inputs / "reports/cv/summary.json", summary)
    with pytest.raises(UserError, match=r"cv/summary\.json.*'final'.*train stage"):
        _build(inputs, "out")
    write_cv(inputs / "reports")
    save_json(inputs / "reports/cv/folds.json", {"fold": 0})
    with pytest.raises(UserError, match=r"cv/folds\.json: expected a JSON array.*train stage"):
        _build(inputs, "out")
    save_json(inputs / "reports/cv/folds.json", [{"fold": 0}])
    with pytest.raises(UserError, match=r"cv/folds\.json: record 0"):
        _build(inputs, "out")


def test_missing_params_file_is_named(inputs):
    (inputs / "params.yaml").unlink()
    with pytest.raises(UserError, match="params.yaml"):
        _build(inputs, "out")


def test_malformed_metrics_are_refused(inputs):
    save_json(inputs / "reports/metrics.json", {"test": {"accuracy": 0.5}})
    with pytest.raises(UserError, match="metrics.json"):
        _build(inputs, "out")


def test_figures_handle_missing_pieces(tmp_path):
    # No validation curve (early stopping off), a class absent from the test set, an empty history.
    no_val = {
        "history": [{k: v for k, v in r.items() if not k.startswith("val_")} for r in HISTORY["history"]],
        "best_epoch": 4,
        "stopped_early": False,
    }
    _png_size(learning_curves(no_val, tmp_path / "curves.png", 50))
    _png_size(learning_curves({"history": [], "best_epoch": None}, tmp_path / "empty.png", 50))
    _png_size(per_class_recall_figure({"a": 0.5, "b": None, "c": 1.0}, tmp_path / "recall.png", 50))
    _png_size(confusion_matrix_figure([[2, 0], [0, 0]], ["a", "b"], tmp_path / "cm.png", 50))
    with pytest.raises(ValueError, match="2x2"):
        confusion_matrix_figure([[1, 2, 3]], ["a", "b"], tmp_path / "bad.png", 50)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cm.png", "curves.png", "empty.png", "recall.png"]
