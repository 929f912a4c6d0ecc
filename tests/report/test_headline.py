"""The headline is honest about the labels the CV score was measured against: with noise or imbalance
injected by the labels stage, the clean test score leads and the CV score says what it was scored on;
with untouched labels the nested-CV estimate leads as before."""

from __future__ import annotations

import pytest
from tests.report.report_files import build_page, label_files, section_of, without_images, write_inputs

from dlrig.io import load_json, save_json

CASES = {  # (noise rate, imbalance ratio) -> the words the headline must use
    "noisy": (0.4, 1.0),
    "imbalanced": (0.0, 3.0),
    "noisy, imbalanced": (0.2, 2.0),
}


def _headline(root, noise: float, ratio: float) -> tuple[str, dict, dict]:
    labels, detect = label_files(noise=noise, ratio=ratio)
    save_json(root / "reports/labels.json", labels)
    save_json(root / "reports/detect.json", detect)
    summary = load_json(root / "reports/cv/summary.json")
    return section_of(without_images(build_page(root, "out")), "headline"), summary, labels


@pytest.mark.parametrize("words", CASES)
def test_corrupted_labels_lead_with_the_test_score_and_name_what_cv_measured(tmp_path, words):
    root = write_inputs(tmp_path)
    headline, summary, labels = _headline(root, *CASES[words])
    mean = f"{summary['mean']:.3f}"
    assert f"CV accuracy {mean}, measured against the {words} training labels (" in headline
    assert f"), measured against the {words} training labels</div>" in headline  # the CV box's value too
    assert f"Nested-CV estimate, {words} training labels" in headline
    # The test score comes first: the lead sentence opens with it, and its cards precede the CV box.
    lead = headline[headline.index('<p class="lead">'):headline.index("</p>")]
    ci = load_json(root / "reports/metrics.json")["test"]["ci95"]["accuracy"]  # evaluate's bootstrap
    shown = f"test accuracy 66.67% (95% CI {100 * ci['low']:.1f}–{100 * ci['high']:.1f}%) on 6 held-out samples"
    assert lead.index(shown) < lead.index("CV ")
    assert headline.index("Held-out test set (true labels)") < headline.index('<div class="estimate')
    assert "scored against different labels (true vs " in headline
    noise = labels["noise"]
    assert (f"{noise['n_flipped']} of {noise['n']} flipped by the labels stage" in lead) == ("noisy" in words)
    assert ("scores predictions against flipped labels" in lead) == ("noisy" in words)
    dropped = labels["n_before"] - labels["n_after"]
    assert (f"{dropped} of {labels['n_before']} rows dropped by the labels stage" in lead) == (
        "imbalanced" in words
    )
    assert ("reflects a class mix the test split does not have" in lead) == ("imbalanced" in words)


def test_clean_labels_keep_the_cv_estimate_first_without_a_caveat(tmp_path):
    root = write_inputs(tmp_path)
    headline, summary, _ = _headline(root, 0.0, 1.0)
    assert "measured against" not in headline and '<p class="lead">' not in headline
    assert "true labels" not in headline and "different labels" not in headline
    assert "Nested-CV estimate, training split" in headline
    assert f"CV accuracy {summary['mean']:.3f} ± {summary['std']:.3f}" in headline
    assert headline.index('<div class="estimate') < headline.index("<h3>Held-out test set</h3>")


def test_a_different_selection_metric_is_quoted_on_the_test_split_too(tmp_path):
    root = write_inputs(tmp_path)
    summary = load_json(root / "reports/cv/summary.json")
    save_json(root / "reports/cv/summary.json", {**summary, "metric": "balanced_accuracy"})
    headline, _, _ = _headline(root, 0.4, 1.0)
    assert "and test balanced_accuracy 0.722 on 6 held-out samples" in headline
    assert f"CV balanced_accuracy {summary['mean']:.3f}, measured against the noisy training labels" in headline


def test_the_training_section_has_no_timing_row(tmp_path):
    # Timings left history.json (they made outputs non-deterministic); no "Training time: n/a" row.
    root = write_inputs(tmp_path)
    section = section_of(without_images(build_page(root, "out")), "training")
    assert "Training time" not in section and "n/a" not in section
