"""The grokking study (dlrig.studies.grokking): the verdict follows the numbers, a tiny real run gives sane,
repeatable curves, bad params stop in one line, and the studies page draws its section."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dlrig.errors import UserError
from dlrig.params import GrokkingStudyParams, ModularParams, Params, ReportParams, dump_params, parse_params
from dlrig.report.studies import render_page
from dlrig.studies.grokking import eval_steps, first_crossing, run, run_study, verdict

TINY = GrokkingStudyParams(modular=ModularParams(p=13), train_fraction=0.6, embed_dim=8, hidden=32, lr=1e-2,
                           steps=100, evals=10, seeds=2)


def test_verdict_flips_on_the_numbers():
    good = verdict([(200, 1400), (200, 1700), (300, 1300)], [(200, None)] * 3, 3000)
    assert good.endswith("grokking reproduced.") and "median 7.0x" in good and "within 3000 steps" in good
    # the control generalises too: not grokking from weight decay
    assert verdict([(200, 1400)] * 3, [(200, None), (200, 2500), (200, None)], 3000).startswith("not reproduced")
    # a decay seed never generalises
    bad = verdict([(200, 1400), (200, None), (200, 1500)], [(200, None)] * 3, 3000)
    assert bad.startswith("not reproduced") and "1 of 3 seeds" in bad
    # test follows train at once: generalisation, but no delay
    assert "only 1.5x later" in verdict([(200, 300)] * 3, [(200, None)] * 3, 3000)


def test_eval_steps_and_crossings():
    steps = eval_steps(3000, 40)
    assert steps[0] == 1 and steps[-1] == 3000 and steps == sorted(set(steps)) and 30 <= len(steps) <= 40
    assert first_crossing([1, 10, 100], [0.1, 0.96, 0.2], 0.95) == 10
    assert first_crossing([1, 10], [0.1, 0.2], 0.95) is None


def test_a_tiny_run_memorises_and_repeats_exactly():
    from dlrig.train import work

    before = work.snapshot()
    one = run_study(TINY, seed=3)
    done = work.since(before)  # the cost record: 4 full-batch runs of TINY.steps steps on the train rows
    assert done["fits"] == 4 and done["samples"] == 4 * TINY.steps * round(0.6 * 169)
    per_sample = 2 * (2 * TINY.embed_dim * TINY.hidden + TINY.hidden * 13)  # two dense layers, 2 per MAC
    assert done["flops"] == 3 * per_sample * done["samples"]
    assert one == run_study(TINY, seed=3)  # same params -> the same numbers
    setup, curves = one["setup"], one["curves"]
    assert setup["rows"] == 169 and setup["train_rows"] == round(0.6 * 169)
    n = len(one["steps"])
    for name in ("decay", "control"):
        for key in ("train", "test", "norm"):
            assert len(curves[name][key]) == 2 and all(len(c) == n for c in curves[name][key])
        assert all(0 <= v <= 1 for c in curves[name]["test"] for v in c)
        assert all(c[-1] == 1.0 for c in curves[name]["train"])  # 100 rows, 13 classes: memorised
    # the decay shrinks the weights: the only difference between the paired runs
    for decay, control in zip(curves["decay"]["norm"], curves["control"]["norm"], strict=True):
        assert decay[0] == pytest.approx(control[0], rel=0.02) and decay[-1] < control[-1]
    assert {r["setting"] for r in one["runs"]} == {"decay", "control"} and len(one["runs"]) == 4
    assert isinstance(one["verdict"], str) and one["verdict"]
    json.dumps(one)  # the stage writes it as it is


def test_bad_params_stop_in_one_line():
    raw = dump_params(Params())
    raw["studies"]["grokking"] = {"weight_decay": 0.1, "control_weight_decay": 0.5}
    with pytest.raises(UserError) as exc:
        parse_params(raw)
    assert "studies.grokking" in str(exc.value) and "control_weight_decay" in str(exc.value)
    assert "\n" not in str(exc.value)
    raw["studies"]["grokking"] = {"modular": {"p": 9, "op": "div"}}
    with pytest.raises(UserError, match="prime"):
        parse_params(raw)


def test_run_reads_its_params_section():
    raw = dump_params(Params())
    raw["studies"]["grokking"] = TINY.model_dump()
    assert run(parse_params(raw))["setup"]["p"] == 13


def test_the_studies_page_draws_the_section(tmp_path):
    results = run_study(TINY.model_copy(update={"steps": 40, "evals": 8}), seed=0)
    html = render_page({"grokking": ("reports/studies/grokking.json", results)}, tmp_path, ReportParams())
    assert 'id="study-grokking"' in html and results["verdict"].split(":")[0] in html
    png = tmp_path / "grokking" / "curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert html.count("<tr>") >= 1 + len(results["runs"])
    with pytest.raises(UserError, match="expected 'setup'"):
        render_page({"grokking": ("g.json", {"verdict": "x"})}, tmp_path / "bad", ReportParams())
    assert np.isfinite(results["runs"][0]["final_norm"])
