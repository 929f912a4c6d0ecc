"""The gradients study (dlrig.studies.gradients) and what it is built on: the course's 0.25^L arithmetic,
the GradientNorms callback, N(0, 1) init and residual MLPs; the verdict follows the numbers; a tiny real run
gives sane ratios; bad params stop in one line; the studies page draws the section."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.datasets import make_classification

from dlrig.data.dataset import Dataset
from dlrig.errors import UserError
from dlrig.models import build_model
from dlrig.models.mlp import Residual
from dlrig.params import (
    FitConfig,
    GradientsStudyParams,
    MlpParams,
    Params,
    ReportParams,
    dump_params,
    parse_params,
)
from dlrig.report.studies import render_page
from dlrig.studies.gradients import band, ratio, run_study, verdict
from dlrig.train import fit
from dlrig.train.batched import batch_key
from dlrig.train.callbacks import GradientNorms


@pytest.mark.parametrize("L", [1, 2, 5, 10, 30])
def test_a_chain_of_sigmoids_at_zero_passes_back_exactly_a_quarter_per_unit(L):
    """h_l = sigmoid(1 * h_{l-1} - 0.5): every unit sits at z = 0 (h = 0.5), slope sigma'(0) = 1/4."""
    x = torch.zeros((), dtype=torch.float64, requires_grad=True)
    h = torch.sigmoid(x)  # unit 1 at z = 0
    for _ in range(L - 1):
        h = torch.sigmoid(1.0 * h - 0.5)  # unit weight, the bias that puts z at 0
    (grad,) = torch.autograd.grad(h, x)
    assert float(grad) == 0.25**L  # exact: every factor is a power of two


def _data(n=200, features=8, seed=0) -> tuple[Dataset, Dataset]:
    X, y = make_classification(n_samples=n, n_features=features, n_informative=5, n_redundant=0, n_classes=3,
                               random_state=seed)
    cut = int(0.8 * n)
    return (Dataset(X=X[:cut], y=y[:cut], classes=["a", "b", "c"], source="synthetic"),
            Dataset(X=X[cut:], y=y[cut:], classes=["a", "b", "c"], source="synthetic"))


def _cfg(**model) -> FitConfig:
    return FitConfig().with_overrides({"model.hidden": 16, "model.depth": 3, "model.dropout": 0.0,
                                       "train.early_stopping": None, "train.epochs": 5, "train.batch_size": 32,
                                       **{f"model.{k}": v for k, v in model.items()}})


def test_gradient_norms_records_the_raw_gradients_at_the_asked_steps_and_stops():
    train, _ = _data()
    probe = GradientNorms(at_steps=[1, 4], stop_after=4)
    clipped = _cfg().with_overrides({"train.grad_clip": 1e-6})
    result = fit(train.X, train.y, 3, clipped, 0, callbacks=[probe])
    assert sorted(probe.norms) == [1, 4] and result.info["stop_reason"] == "step budget: 4 steps"
    assert probe.layers == ["2", "6", "10", "14"]  # Standardize, Flatten, then 3 hidden + the output Linear
    assert all(len(v) == 4 and min(v) > 1e-6 for v in probe.norms.values())  # before the clip
    every = GradientNorms()
    fit(train.X, train.y, 3, _cfg(), 0, callbacks=[every])
    assert sorted(every.norms) == list(range(1, 5 * 5 + 1))  # 160 rows / 32 = 5 steps per epoch, 5 epochs


def test_gradient_norms_do_not_underflow():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    model[0].weight.grad = torch.full((4, 4), 1e-30)  # its float32 square underflows to 0
    probe = GradientNorms()
    probe.on_fit_start(type("S", (), {"model": model})())
    probe.on_after_backward(type("S", (), {"global_step": 1})())
    assert probe.norms[1][0] == pytest.approx(4e-30, rel=1e-6)


def test_normal_init_and_residual_blocks():
    torch.manual_seed(0)
    model = build_model(MlpParams(hidden=256, depth=3, init="normal", residual=True), [64], 10).eval()
    weights = [m.weight.detach() for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert all(abs(float(w.std()) - 1.0) < 0.05 for w in weights[:-1])
    assert sum(isinstance(m, Residual) for m in model) == 2  # blocks 2 and 3; the first changes the width
    x = torch.randn(5, 64)
    block = next(m for m in model if isinstance(m, Residual))
    h = torch.randn(5, 256)
    assert torch.allclose(block(h), h + block.block(h))
    assert model(x).shape == (5, 10)
    # the stacked trainer does not implement residual blocks: such a config trains with fit()
    assert batch_key(_cfg()) is not None and batch_key(_cfg(residual=True)) is None


def test_ratio_and_band():
    assert ratio([1e-20, 1.0, 2.0]) == 5e-21 and ratio([1.0, 0.0]) is None and ratio([]) is None
    assert ratio([float("nan"), 1.0]) is None
    assert band([1.0, None, 3.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "missing": 1}


def test_verdict_flips_on_the_numbers():
    good = verdict([1e-25, 3e-24, 2e-26], {5: [0.6, 0.9, 1.1], 30: [0.3, 0.5, 2.0]}, [1e-25] * 3,
                   {"batch_norm": [1.5, 1.0, 2.0], "grad_clip": [1e-25] * 3})
    assert good.startswith("Vanishing gradients reproduced")
    assert "batch norm lifts it" in good and "gradient clipping does not lift it" in good
    assert verdict([1e-25, 1e-3, 1e-25], {5: [1.0]}, None, {}).startswith("Not reproduced")
    assert "does not stay within" in verdict([1e-25], {5: [1.0], 30: [1e-4]}, None, {})
    assert verdict(None, {5: [1.0]}, None, {}).startswith("Not reproduced")
    assert "does not stay" in verdict([1e-25], {5: [1.0, None]}, None, {})  # a NaN seed is not stable


def test_a_tiny_run_shows_the_sigmoid_gradient_vanishing_with_depth(tmp_path):
    train, test = _data()
    cfg = GradientsStudyParams(depths=[2, 12], activations=["sigmoid", "relu"], inits=["default", "kaiming_normal"],
                               width=16, steps=4, batch_size=32, seeds=2, remedies=["batch_norm", "grad_clip"],
                               remedy_depth=12)
    results = run_study(cfg, train, test, seed=0)
    assert results == run_study(cfg, train, test, seed=0)  # same params -> the same numbers
    grid = {(g["depth"], g["activation"], g["init"]): g for g in results["grid"]}
    assert len(grid) == 8 and len(results["remedies"]) == 2
    shallow, deep = grid[(2, "sigmoid", "default")], grid[(12, "sigmoid", "default")]
    assert len(deep["norms"]["init"]) == 13 and len(deep["norms"]["trained"]) == 13
    assert deep["ratio"]["init"]["max"] < 1e-3 * shallow["ratio"]["init"]["min"]  # ~0.14 per extra layer
    assert 1e-2 < grid[(12, "relu", "kaiming_normal")]["ratio"]["init"]["median"] < 1e2
    base = results["baseline"]
    assert base is not None and base["depth"] == 12 and base["remedy"] is None
    bn, clip = results["remedies"]
    assert bn["ratio"]["init"]["median"] > 1e3 * base["ratio"]["init"]["median"]
    assert clip["ratio_seeds"]["init"] == base["ratio_seeds"]["init"]  # same seeds; raw grads: same ratio
    assert isinstance(results["verdict"], str) and "depth 30 with default init is not in the grid" in results["verdict"]
    json.dumps(results)

    html = render_page({"gradients": ("reports/studies/gradients.json", results)}, tmp_path, ReportParams())
    assert 'id="study-gradients"' in html
    for name in ("layers_init", "layers_trained", "remedies"):
        assert (tmp_path / "gradients" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(UserError, match="expected 'setup'"):
        render_page({"gradients": ("g.json", {"grid": 1})}, tmp_path / "bad", ReportParams())


def test_bad_params_stop_in_one_line():
    raw = dump_params(Params())
    raw["studies"]["gradients"] = {"remedies": ["dropout"]}
    with pytest.raises(UserError) as exc:
        parse_params(raw)
    assert "studies.gradients.remedies" in str(exc.value) and "\n" not in str(exc.value)
    raw["studies"]["gradients"] = {"inits": ["gaussian"]}
    with pytest.raises(UserError, match="inits"):
        parse_params(raw)
    with pytest.raises(UserError, match="residual is for model.name=mlp only"):
        parse_params({"model": {"name": "cnn", "residual": True}})
    assert np.isfinite(GradientsStudyParams().grad_clip)
