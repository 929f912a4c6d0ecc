import math
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from dlrig.errors import UserError
from dlrig.models import build_model, count_parameters
from dlrig.params import MODEL_FAMILIES, CnnParams, FitConfig, MlpParams, parse_params

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("norm", ["none", "batch", "layer"])
@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_output_shape_for_each_architecture(name, norm):
    extra = {"channels": [4, 8]} if name == "cnn" else {}
    cfg = MODEL_FAMILIES[name](norm=norm, hidden=16, depth=2, **extra)
    model = build_model(cfg, [1, 8, 8], n_classes=10)
    out = model(torch.randn(5, 1, 8, 8))
    assert out.shape == (5, 10)


def test_mlp_depth_and_width_give_the_expected_parameter_count():
    model = build_model(MlpParams(hidden=32, depth=2), [64], n_classes=10)
    assert count_parameters(model) == (64 * 32 + 32) + (32 * 32 + 32) + (32 * 10 + 10)


def test_cnn_refuses_tables():
    with pytest.raises(UserError, match="model.name=cnn needs image data"):
        build_model(CnnParams(), [20], n_classes=3)


@pytest.mark.parametrize("activation", ["relu", "gelu", "tanh", "leaky_relu", "elu", "silu", "sigmoid"])
def test_every_activation_builds(activation):
    model = build_model(MlpParams(activation=activation, hidden=8), [4], n_classes=2)
    assert torch.isfinite(model(torch.randn(3, 4))).all()


def test_kaiming_normal_has_he_scale():
    torch.manual_seed(0)
    model = build_model(MlpParams(init="kaiming_normal", hidden=512, depth=1), [256], n_classes=2)
    w = model[2].weight  # Standardize, Flatten, Linear(256 -> 512)
    assert w.std().item() == pytest.approx(math.sqrt(2 / 256), rel=0.05)
    assert torch.all(model[2].bias == 0)


def test_orthogonal_init_gives_orthogonal_rows():
    model = build_model(MlpParams(init="orthogonal", activation="tanh", hidden=16, depth=1), [32], 2)
    w = model[2].weight / torch.nn.init.calculate_gain("tanh")
    assert torch.allclose(w @ w.T, torch.eye(16), atol=1e-5)


def test_standardize_layer_uses_its_buffers():
    model = build_model(MlpParams(hidden=4, depth=1), [3], n_classes=2)
    model[0].mean.fill_(1.0)
    model[0].scale.fill_(2.0)
    assert torch.allclose(model[0](torch.full((1, 3), 5.0)), torch.full((1, 3), 2.0))
    assert {"0.mean", "0.scale"} <= set(model.state_dict())  # they travel in the checkpoint


def test_every_params_family_has_a_builder():
    from dlrig.models import FAMILIES

    assert set(FAMILIES) == set(MODEL_FAMILIES) and {"mlp", "cnn", "transformer"} <= set(FAMILIES)


def test_switching_family_keeps_the_shared_keys():
    from dlrig.params import FitConfig

    mlp = FitConfig().with_overrides({"model.hidden": 64, "model.dropout": 0.3})
    cnn = mlp.with_overrides({"model.name": "cnn", "model.channels": [8]})
    assert (cnn.model.name, cnn.model.hidden, cnn.model.dropout, cnn.model.channels) == ("cnn", 64, 0.3, [8])
    back = cnn.with_overrides({"model.name": "mlp"})  # channels and kernel_size are dropped, not refused
    assert back.model == mlp.model
    assert count_parameters(build_model(cnn.model, [1, 8, 8], 10)) != count_parameters(
        build_model(mlp.model, [1, 8, 8], 10))


@pytest.mark.parametrize("family", ["cnn", "rnn", "transformer"])
def test_dash_s_model_name_alone_switches_the_committed_params(family):
    """`dvc exp run -S model.name=<family>` edits only the name: the mlp's hidden/depth in params.yaml
    must mean something to every family (the dense head after the body) instead of being refused."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["model"]["name"] = family
    params = parse_params(raw)
    model = build_model(params.model, [1, 8, 8], 10)
    linears = [m for m in model.modules()
               if isinstance(m, nn.Linear) and m.out_features in (10, params.model.hidden)]
    assert params.model.hidden == raw["model"]["hidden"] and params.model.depth == raw["model"]["depth"]
    assert linears[-1].out_features == 10 and linears[-2].out_features == params.model.hidden  # the head


@pytest.mark.parametrize("family", ["rnn", "transformer"])
def test_depth_adds_dense_head_layers_to_sequence_families(family):
    counts = []
    for depth in (1, 2, 3):
        cfg = FitConfig().with_overrides({"model.name": family, "model.depth": depth, "model.hidden": 24})
        model = build_model(cfg.model, [1, 8, 8], 10)
        counts.append(sum(isinstance(m, nn.Linear) and m.out_features == 24 for m in model.modules()))
    assert counts == [0, 1, 2]
