"""The studies page (reports/studies/report.html): one section per results file, drawn by the renderer
registered under the study's name, ending with the study's verdict; the main report's style."""

from __future__ import annotations

from functools import partial

import pytest
from tests.report.report_files import CFG, png_size, section_of, study_file, without_images

from dlrig.errors import UserError
from dlrig.io import save_json
from dlrig.report import markup
from dlrig.report import studies as sp
from dlrig.report.figures import _new_figure, _style, save_png


def _build(tmp_path, files: dict[str, dict], out: str = "out") -> str:
    paths = []
    for name, results in files.items():
        save_json(tmp_path / f"reports/studies/{name}.json", results)
        paths.append(tmp_path / f"reports/studies/{name}.json")
    sp.build_studies_report(paths, tmp_path / out / "report.html", tmp_path / out / "figures", CFG)
    return (tmp_path / out / "report.html").read_text(encoding="utf-8")


@pytest.fixture
def registry(monkeypatch):
    """A scratch copy of the registry, so a test's fake study does not outlive it."""
    monkeypatch.setattr(sp, "STUDIES", dict(sp.STUDIES))
    return sp.STUDIES


def _points(points, path, dpi):
    with _style():
        fig = _new_figure(3, 2)
        fig.subplots().plot(points)
        return save_png(fig, path, dpi)


def _register_toy(registry) -> None:
    @sp.study("toy", "A toy study <of> points")
    def _toy(results, figures):
        if "points" not in results:
            raise UserError("expected 'points'")
        png = figures.add("points", partial(_points, results["points"]), "points", "The points, drawn.")
        return f"<p>{len(results['points'])} points</p>{png}"

    assert registry["toy"].render is _toy


def test_a_registered_study_gets_a_section_that_ends_with_its_verdict(tmp_path, registry):
    _register_toy(registry)
    verdict = "Points rise by 2 per step <always>."
    page = _build(tmp_path, {"toy": {"points": [1, 3, 5], "verdict": verdict}})
    section = section_of(without_images(page), "study-toy")
    assert "<h2>A toy study &lt;of&gt; points</h2>" in section
    assert "From toy.json beside this page, written by <code>dvc repro studies/dvc.yaml:toy</code>" in section
    assert "<p>3 points</p>" in section and section.count("<figure>") == 1
    assert section.endswith('<p class="verdict">Points rise by 2 per step &lt;always&gt;.</p>')
    assert '<a href="#study-toy">Toy</a>' in page
    png_size(tmp_path / "out/figures/toy/points.png")


def test_no_verdict_no_verdict_line_and_sections_in_the_order_given(tmp_path, registry):
    _register_toy(registry)
    page = without_images(_build(tmp_path, {"toy": {"points": [1]}, "labels": study_file()}))
    assert 'class="verdict"' not in page
    assert page.index('<section id="study-toy">') < page.index('<section id="study-labels">')
    assert "2 studies on this data set" in page
    assert "from the saved results (toy.json, labels.json)" in page[page.index("<footer>"):]


def test_the_label_study_section(tmp_path):
    page = _build(tmp_path, {"labels": study_file()})
    section = section_of(without_images(page), "study-labels")
    assert "<h2>Label noise and class imbalance on this data set</h2>" in section
    assert "Test accuracy against symmetric label noise" in section
    assert "Test balanced accuracy against step class imbalance" in section
    assert '<tr><td>0.4</td><td class="num">0.8100</td><td class="num"><strong>0.8800</strong></td>' in section
    assert '<tr><td>10</td><td class="num">0.8100</td>' in section and "<strong>0.9100</strong>" in section
    assert "Detecting 20% injected symmetric noise (realised 20.10%)" in section
    assert "precision 0.914, recall 0.917, F1 0.915" in section
    assert "+0.0900" in section and "+0.0009" in section and "CV balanced accuracy" in section
    assert section.count("<figure>") == 2
    for name in ("noise", "imbalance"):
        png_size(tmp_path / f"out/figures/labels/{name}.png")


def test_the_page_has_the_main_reports_style_and_links_to_it(tmp_path):
    page = _build(tmp_path, {"labels": study_file()})
    assert f"<style>\n{markup.css()}</style>" in page
    assert page.startswith("<!DOCTYPE html>") and "<title>Tiny &lt;run&gt; &amp; co — studies</title>" in page
    assert '<a href="../report.html">reports/report.html</a>' in page
    assert "/tmp" not in page and str(tmp_path) not in page  # no absolute path


def test_the_page_is_byte_identical_when_built_twice(tmp_path):
    first = _build(tmp_path, {"labels": study_file()}, out="a")
    assert _build(tmp_path, {"labels": study_file()}, out="b") == first
    for name in ("noise", "imbalance"):
        assert (tmp_path / f"a/figures/labels/{name}.png").read_bytes() == (
            tmp_path / f"b/figures/labels/{name}.png"
        ).read_bytes()


def test_malformed_label_results_are_refused_naming_the_file_and_command(tmp_path):
    with pytest.raises(UserError, match=r"labels\.json: expected 'noise'.*dvc repro studies/dvc\.yaml:labels"):
        _build(tmp_path, {"labels": {"noise": {}}})


def test_a_study_without_a_renderer_is_refused(tmp_path):
    with pytest.raises(UserError, match=r"sharpest\.json: no section renderer for the study 'sharpest' "
                                        r"\(known: \['augmentation', .*'labels', .*'transfer'\]\)"):
        _build(tmp_path, {"sharpest": {"verdict": "x"}})


@pytest.mark.parametrize("verdict", ["", 3, ["a"]])
def test_a_verdict_that_is_not_a_sentence_is_refused(tmp_path, registry, verdict):
    _register_toy(registry)
    with pytest.raises(UserError, match=r"toy\.json: 'verdict' must be a sentence"):
        _build(tmp_path, {"toy": {"points": [1], "verdict": verdict}})


def test_no_results_and_a_study_registered_twice_are_refused(registry):
    with pytest.raises(UserError, match="no study results given"):
        sp.load_results([])
    with pytest.raises(ValueError, match="'labels' already has a renderer"):
        sp.study("labels", "again")(lambda results, figures: "")
