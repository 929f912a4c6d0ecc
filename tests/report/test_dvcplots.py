"""`dlrig plots`: the plots dvc.yaml declares, as images in one page that loads nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.report.report_files import png_size

from dlrig.errors import UserError
from dlrig.report.dvcplots import main, plots_page, render

SPEC = {  # the shape of one `dvc plots show --json` vega renderer, $schema URL included
    "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
    "title": "Loss",
    "data": {"values": [{"step": s, "loss": 1 / (s + 1), "rev": "workspace"} for s in range(5)]},
    "mark": "line",
    "encoding": {"x": {"field": "step", "type": "quantitative"}, "y": {"field": "loss", "type": "quantitative"}},
}


def test_specs_become_embedded_images_and_the_page_holds_no_url(tmp_path):
    data = {"Loss <per epoch>": [{"type": "vega", "revisions": ["workspace"], "content": SPEC}],
            "Broken": [{"type": "vega", "revisions": ["workspace"], "content": {"mark": "nonsense"}}],
            "Odd": [{"type": "plotly", "revisions": []}]}
    drawn = render(data, cwd=tmp_path)
    assert [d.title for d in drawn] == list(data)
    (tmp_path / "loss.png").write_bytes(drawn[0].png)
    png_size(tmp_path / "loss.png")
    assert drawn[1].png is None and "could not be drawn" in drawn[1].note
    assert drawn[2].png is None and "not supported" in drawn[2].note
    page = plots_page(drawn)
    assert "http" not in page and "<script" not in page and "<link" not in page
    assert page.count('src="data:image/png;base64,') == 1 and "Loss &lt;per epoch&gt;" in page


@pytest.fixture
def dvc_repo(tmp_path):
    """A DVC project (no git) declaring one plot over a JSON file."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=tmp_path, env=env, check=True)
    (tmp_path / "curve.json").write_text(json.dumps([{"step": s, "loss": 1 / (s + 1)} for s in range(5)]))
    (tmp_path / "dvc.yaml").write_text(
        "plots:\n  - Loss per epoch:\n      x: step\n      x_label: epoch\n      y:\n        curve.json: loss\n")
    return tmp_path


def test_the_command_draws_the_declared_plots(dvc_repo, monkeypatch, capsys):
    monkeypatch.chdir(dvc_repo)
    main([])
    assert "1 of 1 drawn -> dvc_plots/offline.html" in capsys.readouterr().out
    page = (dvc_repo / "dvc_plots/offline.html").read_text()
    assert "http" not in page and page.count('src="data:image/png;base64,') == 1
    assert "Loss per epoch" in page


def test_outside_a_dvc_project_says_so(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="`dvc plots show --json` found no plots"):
        main([])
