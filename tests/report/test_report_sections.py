"""The report's result sections beyond model selection: the headline intervals, baselines, calibration
and labels. Inputs come from tests/report/report_files.py (built with the library functions that write
them)."""

from __future__ import annotations

import re

import pytest
from markupsafe import escape
from tests.report.report_files import (
    build_page,
    calibration_files,
    label_files,
    png_size,
    section_of,
    without_images,
    write_inputs,
)

from dlrig.errors import UserError
from dlrig.io import load_json, save_json
from dlrig.report.calibration import scaling_effect, verdict
from dlrig.report.figures import reliability_figure


@pytest.fixture
def inputs(tmp_path):
    return write_inputs(tmp_path)


def _page(root) -> str:
    return without_images(build_page(root, "out"))


def test_sections_come_in_story_order(inputs):
    text = _page(inputs)
    order = ["headline", "selection", "baselines", "training", "calibration", "per-class", "labels",
             "validation", "split", "params"]
    positions = [text.index(f'<section id="{anchor}">') for anchor in order]
    assert positions == sorted(positions)
    for anchor in order:
        assert f'<a href="#{anchor}">' in text
    footer = text[text.index("<footer>"):]
    for rel in ("compare.json", "labels.json", "detect.json", "plots/reliability_before.json",
                "plots/reliability_after.json"):
        assert rel in footer
    assert "studies/" not in footer  # the studies have their own page


def test_headline_cards_carry_their_bootstrap_intervals(inputs):
    ci = load_json(inputs / "reports/metrics.json")["test"]["ci95"]
    headline = section_of(_page(inputs), "headline")
    acc, bal, f1 = ci["accuracy"], ci["balanced_accuracy"], ci["macro_f1"]
    assert f'<div class="ci">95% CI {100 * acc["low"]:.1f}–{100 * acc["high"]:.1f}%</div>' in headline
    assert f'<div class="ci">95% CI {100 * bal["low"]:.1f}–{100 * bal["high"]:.1f}%</div>' in headline
    assert f'<div class="ci">95% CI {f1["low"]:.3f}–{f1["high"]:.3f}</div>' in headline
    assert headline.count('<div class="ci">') == 3  # log loss and the sample count have none
    assert "BCa bootstrap over the test samples" in headline


def test_calibration_before_and_after_temperature_scaling(inputs):
    calib = load_json(inputs / "reports/metrics.json")["calibration"]
    section = section_of(_page(inputs), "calibration")
    assert f"{calib['ece']:.2%}" in section and f"{calib['ece_scaled']:.2%}" in section
    assert f"{calib['temperature']:.4f}" in section
    assert f"{calib['fitted_on']} training rows held out for early stopping" in section
    assert "training split&#39;s early-stopping rows" in section and "test samples were only scored" in section
    assert (
        f"Temperature scaling (T = {calib['temperature']:.2f}) lowered the test ECE from {calib['ece']:.2%} "
        f"to {calib['ece_scaled']:.2%}: it made calibration better." in section
    )
    assert "worse" not in section and "raised" not in section and '<ul class="warnings">' not in section
    assert f"{calib['n_bins']} equal-width bins" in section
    assert section.count("<figure>") == 1
    png_size(inputs / "out/figures/reliability.png")


def test_a_temperature_that_raised_ece_is_called_worse(tmp_path):
    # The noisy-label case: T fitted on rows with half their labels flipped makes calibration worse.
    write_inputs(tmp_path, calibration_mode="raised")
    calib = load_json(tmp_path / "reports/metrics.json")["calibration"]
    assert calib["ece_scaled"] > calib["ece"] and calib["fit_labels_flipped"] == 40
    section = section_of(_page(tmp_path), "calibration")
    assert (
        f"Temperature scaling (T = {calib['temperature']:.2f}) raised the test ECE from {calib['ece']:.2%} "
        f"to {calib['ece_scaled']:.2%}: it made calibration worse, so the unscaled probabilities are the "
        "better ones; the fitting labels were noisy (40 of 80 flipped by the labels stage), and T learned "
        "that noise." in section
    )
    assert f"{calib['ece_scaled']:.2%} (worse: use the unscaled probabilities)" in section
    assert "80 training rows held out for early stopping, 40 of them with labels flipped" in section
    assert '<ul class="warnings"><li>40 of 80 fitting labels (50.0%) were flipped' in section
    assert "lowered" not in section and "better." not in section


def test_too_few_fitting_rows_are_said_plainly(tmp_path):
    write_inputs(tmp_path, calibration_mode="few")
    assert not (tmp_path / "reports/plots/reliability_after.json").exists()
    section = section_of(_page(tmp_path), "calibration")
    assert "Temperature scaling was not applied (T = 1): only 21 fitting rows (&lt; 50)." in section
    assert "<td>1 (not fitted)</td>" in section and "after temperature scaling" not in section
    png_size(tmp_path / "out/figures/reliability.png")


def test_calibration_without_a_temperature_says_why(tmp_path):
    write_inputs(tmp_path, calibration_mode="none")
    assert not (tmp_path / "reports/plots/reliability_after.json").exists()
    section = section_of(_page(tmp_path), "calibration")
    assert "No temperature was fitted" in section and "after temperature scaling" not in section
    # The history reports 4 early-stopping rows: the checkpoint, not the settings, lacks them.
    assert "held out 4 rows for early stopping" in section and "Re-run the train and evaluate" in section
    history = load_json(tmp_path / "reports/train/history.json")
    history["n_val"] = 0
    save_json(tmp_path / "reports/train/history.json", history)
    assert "early stopping was off" in section_of(_page(tmp_path), "calibration")


def test_calibration_from_before_the_guard_rails_is_refused(inputs):
    metrics = load_json(inputs / "reports/metrics.json")
    del metrics["calibration"]["temperature_fitted"]
    save_json(inputs / "reports/metrics.json", metrics)
    with pytest.raises(UserError, match=r"metrics\.json: calibration lacks \['temperature_fitted'\].*evaluate"):
        build_page(inputs, "out")


@pytest.mark.parametrize("before, after, effect", [(0.0766, 0.4878, "raised"), (0.0766, 0.021, "lowered"),
                                                   (0.0766, 0.07661, "unchanged")])
def test_the_verdict_follows_the_numbers(before, after, effect):
    calib = {"temperature": 8.65 if effect == "raised" else 1.5, "ece": before, "ece_scaled": after,
             "fitted_on": 400, "fit_labels_flipped": 160 if effect == "raised" else 0}
    assert scaling_effect(before, after) == effect
    sentence = verdict(calib)
    expected = {
        "raised": "Temperature scaling (T = 8.65) raised the test ECE from 7.66% to 48.78%: it made calibration "
                  "worse, so the unscaled probabilities are the better ones; the fitting labels were noisy "
                  "(160 of 400 flipped by the labels stage), and T learned that noise.",
        "lowered": "Temperature scaling (T = 1.50) lowered the test ECE from 7.66% to 2.10%: it made "
                   "calibration better.",
        "unchanged": "Temperature scaling (T = 1.50) left the test ECE at 7.66%: it made no visible difference "
                     "to calibration.",
    }[effect]
    assert sentence == expected


def test_temperature_without_its_reliability_file_is_refused(inputs):
    (inputs / "reports/plots/reliability_after.json").unlink()
    with pytest.raises(UserError, match=r"plots/reliability_after\.json.*evaluate stage"):
        build_page(inputs, "out")


def test_baselines_section_shows_every_test_with_its_verdict(inputs):
    compare = load_json(inputs / "reports/compare.json")
    section = section_of(_page(inputs), "baselines")
    assert "<h2>Compared with baselines</h2>" in section and "same 5 outer folds" in section
    assert "Trust the corrected test" in section and "any two share 3 of the 4 parts" in section
    for name, entry in compare["baselines"].items():
        folds = entry["folds"]
        heading = f"<h3>tuned vs <code>{name}</code> ({entry['estimator']})</h3>"
        assert heading in section
        table = section[section.index(heading):].split("</table>")[0]
        assert f"tuned {folds['mean']['tuned']:.4f}, {name} {folds['mean'][name]:.4f}" in table
        for test in ("corrected_t", "naive_t"):
            assert f"t = {folds[test]['statistic']:.2f}" in table
            assert escape(folds[test]["verdict"]) in table
        assert '<tr class="trust"><td>Corrected resampled t-test (the one to trust)</td>' in table
        assert "Naive paired t-test, for contrast only: anti-conservative" in table
        bayes = folds["bayes"]
        assert f"P(tuned better) {bayes['p_a_better']:.2f}, P(equivalent) {bayes['p_rope']:.2f}" in table
        assert escape(bayes["verdict"]) in table
        assert f"McNemar on the held-out test split ({entry['test']['n']} samples)" in table
        assert escape(entry["test"]["verdict"]) in table
        assert ("5x2cv paired t-test" in table) == ("five_by_two" in entry)
    # The contrast the section exists for: the naive test calls a difference the corrected one does not.
    folds = compare["baselines"]["logistic_regression"]["folds"]
    assert folds["naive_t"]["p_value"] < 0.05 < folds["corrected_t"]["p_value"]


def test_no_baselines_is_said_plainly(inputs):
    compare = load_json(inputs / "reports/compare.json")
    save_json(inputs / "reports/compare.json", {**compare, "baselines": {}})
    assert "No baselines were configured" in section_of(_page(inputs), "baselines")


def test_labels_section_shows_injection_and_detection(inputs):
    labels = load_json(inputs / "reports/labels.json")
    detect = load_json(inputs / "reports/detect.json")
    section = section_of(_page(inputs), "labels")
    noise = labels["noise"]
    assert "step imbalance" in section and "symmetric label noise" in section
    assert "requested ratio 2" in section and "requested rate 0.2" in section
    counts = labels["imbalance"]["counts"]
    assert f"realised n_max / n_min = {max(counts) / min(counts):.2f}" in section
    assert f"{noise['n_flipped']} of {noise['n']} labels flipped ({noise['n_flipped'] / noise['n']:.2%})" in section
    assert f"{labels['n_before']} before, {labels['n_after']} after" in section
    assert f"<td>{detect['noise_rate']:.2%}</td>" in section  # estimated noise rate
    for key in ("n_issues", "n_issues_likely_noise", "n_issues_ambiguous", "n_contradicted", "n_ambiguous"):
        assert f"<td>{detect[key]} ({detect[key] / detect['n']:.2%})</td>" in section
    found = detect["against_injected"]
    assert f"precision {found['precision']:.3f}, recall {found['recall']:.3f}, F1 {found['f1']:.3f}" in section
    assert "Confidently contradicted:" in section and "Ambiguous:" in section
    assert ('<code>dvc repro studies/dvc.yaml</code> runs it and writes '
            '<a href="studies/report.html">reports/studies/report.html</a>') in section


def test_nothing_injected_and_detection_off(inputs):
    labels, detect = label_files(noise=0.0, ratio=1.0, detect=False)
    save_json(inputs / "reports/labels.json", labels)
    save_json(inputs / "reports/detect.json", detect)
    section = section_of(_page(inputs), "labels")
    assert "Nothing was injected" in section and "0 of 120 labels flipped" in section
    assert "Detection was off" in section


def test_the_main_report_reads_no_study_result(inputs):
    """The studies have their own page: poisoned study files change nothing here, and the Labels section
    points there without reading anything (no stale numbers, no undeclared dep)."""
    before = _page(inputs)
    studies = inputs / "reports/studies"
    studies.mkdir(parents=True)
    for name in ("labels.json", "report.html", "anything.json"):
        (studies / name).write_text("{not json")
    (studies / "figures").mkdir()
    after = _page(inputs)
    assert after == before
    section = section_of(after, "labels")
    assert "Study: noise and imbalance on this data set" in section and "not part of this pipeline" in section
    assert "<table" not in section[section.index("Study: noise"):]


@pytest.mark.parametrize(
    "rel, change, stage",
    [
        ("metrics.json", lambda m: {**m, "test": {k: v for k, v in m["test"].items() if k != "ci95"}}, "evaluate"),
        ("metrics.json", lambda m: {k: v for k, v in m.items() if k != "calibration"}, "evaluate"),
        ("compare.json", lambda c: {k: v for k, v in c.items() if k != "baselines"}, "compare"),
        ("compare.json", lambda c: {**c, "baselines": {"x": {"folds": {}}}}, "compare"),
        ("labels.json", lambda lab: {k: v for k, v in lab.items() if k != "noise"}, "labels"),
        ("detect.json", lambda d: {k: v for k, v in d.items() if k != "noise_rate"}, "detect"),
        ("detect.json", lambda d: {k: v for k, v in d.items() if k != "enabled"}, "detect"),
    ],
)
def test_malformed_result_files_name_file_and_stage(inputs, rel, change, stage):
    path = inputs / "reports" / rel
    save_json(path, change(load_json(path)))
    with pytest.raises(UserError, match=re.escape(rel) + f".*{stage} stage"):
        build_page(inputs, "out")


def test_reliability_figure_is_stable_and_handles_missing_pieces(tmp_path):
    calib, curves = calibration_files()
    kwargs = {"after": curves["after"], "ece_before": calib["ece"], "ece_after": calib["ece_scaled"],
              "temperature": calib["temperature"]}
    first = reliability_figure(curves["before"], tmp_path / "a.png", 40, **kwargs).read_bytes()
    assert reliability_figure(curves["before"], tmp_path / "b.png", 40, **kwargs).read_bytes() == first
    png_size(reliability_figure(curves["before"], tmp_path / "before.png", 40))  # no temperature fitted
    png_size(reliability_figure([], tmp_path / "empty.png", 40))
    with_empty_bin = [*curves["before"], {"bin_low": 0.0, "bin_high": 0.2, "confidence": None, "accuracy": None,
                                          "count": 0}]
    png_size(reliability_figure(with_empty_bin, tmp_path / "gap.png", 40))
