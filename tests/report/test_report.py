"""The report is built from saved files only: these tests write small input files and build it."""

from __future__ import annotations

import re
import struct

import matplotlib
import pytest

from dlrig.errors import UserError
from dlrig.io import save_json, save_text
from dlrig.params import ReportParams
from dlrig.report.figures import confusion_matrix_figure, learning_curves, per_class_recall_figure
from dlrig.report.html import build_report

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
}


@pytest.fixture
def inputs(tmp_path):
    reports = tmp_path / "reports"
    save_json(reports / "validation.json", VALIDATION)
    save_json(reports / "split.json", SPLIT)
    save_json(reports / "train/history.json", HISTORY)
    save_json(reports / "metrics.json", {"test": TEST_METRICS})
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
    assert page.count('src="data:image/png;base64,') == 3
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
    for name in ("learning_curves.png", "per_class_recall.png", "confusion_matrix.png"):
        _png_size(inputs / "out/figures" / name)  # the figures written beside are valid PNGs


def test_report_is_byte_identical_when_built_twice(inputs):
    # Two builds into different folders, with matplotlib's global style changed in between: the page
    # carries no timestamp or path, and the figures ignore the caller's rcParams.
    first = _build(inputs, "a")
    with matplotlib.rc_context({"lines.linewidth": 5, "font.size": 20}):
        second = _build(inputs, "b")
    assert first == second
    for name in ("learning_curves.png", "per_class_recall.png", "confusion_matrix.png"):
        assert (inputs / "a/figures" / name).read_bytes() == (inputs / "b/figures" / name).read_bytes()


@pytest.mark.parametrize("rel, stage", FILES.items())
def test_missing_input_names_file_and_stage(inputs, rel, stage):
    (inputs / "reports" / rel).unlink()
    with pytest.raises(UserError, match=re.escape(rel)) as err:
        _build(inputs, "out")
    assert f"{stage} stage" in str(err.value)
    assert not (inputs / "out/report.html").exists()


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
