"""The double-descent study (dlrig.studies.double_descent): the verdict follows the numbers, a tiny real
run gives sane curves through the stage, the page draws them, and bad params stop in one line."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml
from sklearn.datasets import make_classification

from dlrig.data.dataset import Dataset
from dlrig.errors import UserError
from dlrig.params import DoubleDescentStudyParams, Params, ReportParams, dump_params, parse_params
from dlrig.report.studies import render_page
from dlrig.studies.double_descent import (
    check,
    config,
    epoch_sentence,
    find_peak,
    interpolation_width,
    run_study,
    verdict,
)
from dlrig.train.batched import batch_key

ROOT = Path(__file__).resolve().parents[2]
WIDTHS = [1, 2, 4, 8, 16, 32, 64]


def curve(mean: list[float], spread: float = 0.01) -> dict[str, list[float]]:
    return {"mean": mean, "min": [m - spread for m in mean], "max": [m + spread for m in mean]}


PEAKED = curve([0.7, 0.4, 0.2, 0.3, 0.25, 0.2, 0.15])
MONOTONE = curve([0.7, 0.4, 0.2, 0.15, 0.12, 0.1, 0.09])
CLEAN = curve([0.6, 0.3, 0.1, 0.06, 0.05, 0.04, 0.04])


def test_a_clear_peak_next_to_the_threshold_is_reproduced():
    text = verdict(WIDTHS, PEAKED, CLEAN, threshold=8, nk_width=100.0, noise=0.2)
    assert text.startswith("Double descent reproduced: with 20% label noise")
    assert "falls to 20.0% at width 4, peaks at 30.0% at width 8, next to the interpolation threshold " \
           "(width 8), and falls again to 15.0% at width 64" in text
    assert "noise-free control shows no clear peak" in text


def test_no_peak_or_a_peak_inside_the_seed_bands_is_not_reproduced():
    assert verdict(WIDTHS, MONOTONE, CLEAN, 8, 100.0, 0.2).startswith(
        "Double descent not reproduced at these settings: with 20% label noise test error never rises")
    wide = curve(PEAKED["mean"], spread=0.06)  # peak 0.3 - 0.06 < dip 0.2 + 0.06: within the bands
    text = verdict(WIDTHS, wide, CLEAN, 8, 100.0, 0.2)
    assert text.startswith("Double descent not reproduced") and "lies within the seeds' min-max bands" in text
    assert "no width reached" in verdict(WIDTHS, MONOTONE, CLEAN, None, 100.0, 0.2)


def test_a_peak_far_from_the_threshold_and_a_peaked_control_are_said():
    text = verdict(WIDTHS, PEAKED, PEAKED, threshold=64, nk_width=100.0, noise=0.2)
    assert "not next to the interpolation threshold (the interpolation threshold is width 64)" in text
    assert "The noise-free control peaks too (30.0% at width 8 vs 20.0% at width 4)" in text


def test_the_epoch_sentence_follows_the_trace():
    epochs = [1, 50, 100, 150, 200, 250, 300]
    trace = {"width": 256, "epochs": epochs, "noisy": {"test_error": PEAKED}}
    assert epoch_sentence(trace) == (" Epoch-wise at width 256: test error falls to 20.0% (epoch 100), peaks at "
                                     "30.0% (epoch 150) and falls again to 15.0% (epoch 300): epoch-wise double "
                                     "descent too.")
    trace["noisy"]["test_error"] = curve([0.5, 0.1, 0.15, 0.18, 0.19, 0.19, 0.19])
    assert epoch_sentence(trace) == (" Epoch-wise at width 256: test error is lowest at epoch 50 (10.0%) and "
                                     "rises to 19.0% by epoch 300 as the noisy labels are memorised, with no "
                                     "second descent within these epochs.")
    trace["noisy"]["test_error"] = curve([0.5, 0.1, 0.11, 0.1, 0.1, 0.11, 0.105], spread=0.02)
    assert epoch_sentence(trace).startswith(" Epoch-wise at width 256: no clear rise or second descent")
    assert verdict(WIDTHS, PEAKED, CLEAN, 8, 100.0, 0.2, trace).endswith(epoch_sentence(trace))


def test_peak_and_threshold_helpers():
    peak = find_peak(WIDTHS, PEAKED)
    assert (peak["width"], peak["before_width"], peak["after_width"], peak["clear"]) == (8, 4, 64, True)
    assert peak["height"] == pytest.approx(0.1)
    assert find_peak(WIDTHS, MONOTONE) is None
    assert interpolation_width(WIDTHS, [0.5, 0.3, 0.1, 0.02, 0.0, 0.0, 0.0], 0.01) == 16
    assert interpolation_width(WIDTHS, [0.5] * 7, 0.01) is None


def _data(tmp: Path) -> tuple[Dataset, Dataset]:
    X, y = make_classification(n_samples=360, n_features=6, n_informative=4, n_redundant=0, n_classes=3,
                               class_sep=1.5, random_state=0)
    train = Dataset(X=X[:300], y=y[:300], classes=["a", "b", "c"], source="synthetic")
    test = Dataset(X=X[300:], y=y[300:], classes=["a", "b", "c"], source="synthetic")
    train.save(tmp / "train.npz", tmp / "meta.json")
    test.save(tmp / "test.npz")
    return train, test


TINY = {"subset": 60, "noise": 0.3, "widths": [1, 4, 64], "epochs": 150, "lr": 0.02, "seeds": 3,
        "epoch_width": 64, "eval_every": 50}


def stage(rel: str):
    spec = importlib.util.spec_from_file_location(f"stage_{rel.replace('/', '_')}", ROOT / "stages" / rel)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_a_tiny_run_through_the_stage_gives_sane_curves_and_a_section(tmp_path):
    _data(tmp_path)
    params = {**dump_params(Params()), "studies": {"double_descent": TINY}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = tmp_path / "dd.json"
    stage("studies/double_descent.py")(["--params", str(tmp_path / "params.yaml"), "--out", str(out),
                                         "--train", str(tmp_path / "train.npz"), "--test",
                                         str(tmp_path / "test.npz"), "--meta", str(tmp_path / "meta.json")])
    r = json.loads(out.read_text())
    assert r["widths"] == TINY["widths"] and r["params"] == [(6 + 1) * h + (h + 1) * 3 for h in TINY["widths"]]
    assert r["nk_params"] == 180 and r["nk_width"] == pytest.approx((180 - 3) / (6 + 1 + 3))
    noisy, control = r["curves"]["noisy"], r["curves"]["control"]
    # 30% of 60 labels flipped per seed (each seed its own draw), measured, not assumed
    assert all(0.15 < f < 0.45 for f in r["settings"]["realised_noise"])
    # width 64 (259 parameters for 60 rows) memorises every label, flipped ones included
    assert noisy["train_error"]["mean"][-1] <= 0.01 and control["train_error"]["mean"][-1] <= 0.01
    assert r["interpolation_width"]["noisy"] == 64
    # width 1 cannot separate 3 classes: well above zero training error
    assert noisy["train_error"]["mean"][0] > 0.2
    # the clean control beats the noisy curve on the clean test split at the widest model
    assert control["test_error"]["mean"][-1] < noisy["test_error"]["mean"][-1] < 0.67
    for c in (noisy, control):
        for k in ("train_error", "test_error"):
            band = zip(c[k]["min"], c[k]["mean"], c[k]["max"], strict=True)
            assert all(lo <= m <= hi for lo, m, hi in band)
    # the per-epoch trace (fit() one model at a time) ends where the stacked run of the same width ended
    trace = r["epochwise"]
    assert trace["width"] == 64 and trace["epochs"] == [1, 50, 100, 150]
    for c in ("noisy", "control"):
        assert trace[c]["test_error"]["mean"][-1] == pytest.approx(r["curves"][c]["test_error"]["mean"][-1],
                                                                   abs=1 / 60)
        assert trace[c]["train_error"]["mean"][0] > trace[c]["train_error"]["mean"][-1]
    assert r["verdict"] == verdict(r["widths"], noisy["test_error"], control["test_error"],
                                   r["interpolation_width"]["noisy"], r["nk_width"], 0.3, trace)
    assert " Epoch-wise at width 64: " in r["verdict"]

    html = render_page({"double_descent": (str(out), r)}, tmp_path / "fig", ReportParams(dpi=50))
    assert '<section id="study-double_descent">' in html and "interpolation threshold" in html
    assert (tmp_path / "fig/double_descent/curves.png").stat().st_size > 1000
    assert (tmp_path / "fig/double_descent/epochs.png").stat().st_size > 1000


def test_same_params_same_numbers(tmp_path):
    train, test = _data(tmp_path)
    cfg = DoubleDescentStudyParams(**{**TINY, "widths": [2, 8, 16], "epochs": 20})
    assert run_study(cfg, train, test, seed=3) == run_study(cfg, train, test, seed=3)


def test_every_width_trains_in_the_stack_with_nothing_that_stops_or_regularises():
    cfg = DoubleDescentStudyParams()
    for width in cfg.widths:
        fit_cfg = config(cfg, width, cfg.subset)
        assert batch_key(fit_cfg) is not None  # fit_many stacks it (else it would fall back to fit())
        assert fit_cfg.train.early_stopping is None and fit_cfg.model.dropout == 0
        assert fit_cfg.optim.weight_decay == 0 and fit_cfg.schedule.name == "constant"
        assert fit_cfg.model.depth == 1 and fit_cfg.train.batch_size == cfg.subset


def test_bad_params_stop_in_one_line(tmp_path):
    train, _ = _data(tmp_path)
    with pytest.raises(UserError, match=r"^studies.double_descent.subset: 299 rows asked of a training split "
                                        r"of 300 \(allowed: 3..297"):
        check(DoubleDescentStudyParams(subset=299), train)
    raw = dump_params(Params())
    for bad, line in (({"widths": [4, 2, 8]}, "widths must be strictly increasing (got [4, 2, 8])"),
                      ({"seeds": 2}, "seeds must be >= 3 (got 2)"), ({"noise": 1.0}, "noise must be < 1"),
                      ({"widht": [1]}, "widht is not a known key")):
        raw["studies"] = {"double_descent": bad}
        with pytest.raises(UserError) as exc:
            parse_params(raw)
        assert str(exc.value).startswith(f"params.yaml: studies.double_descent.{line}")
        assert "\n" not in str(exc.value)
