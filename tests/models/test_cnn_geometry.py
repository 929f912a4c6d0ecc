import pytest
import torch
from torch import nn

from dlrig.errors import UserError
from dlrig.models import build_model, count_parameters
from dlrig.params import CnnParams, FitConfig


def original_cnn(shape, channels=(16, 32), k=3, hidden=256, n_classes=10, dropout=0.1):
    """The CNN as it was before the geometry keys: 'same' convs, 2x2 max-pool while the map is >= 4 wide."""
    c, h, w = shape
    layers = []
    for out in channels:
        layers += [nn.Conv2d(c, out, k, padding=k // 2), nn.Identity(), nn.ReLU()]
        c = out
        if min(h, w) >= 4:
            layers.append(nn.MaxPool2d(2))
            h, w = h // 2, w // 2
    layers += [nn.Flatten(), nn.Dropout(dropout), nn.Linear(c * h * w, hidden), nn.Identity(), nn.ReLU(),
               nn.Dropout(dropout), nn.Linear(hidden, n_classes)]
    return nn.Sequential(*layers)


@pytest.mark.parametrize("shape", [[1, 8, 8], [1, 28, 28], [3, 5, 7]])
@pytest.mark.parametrize("channels", [[16, 32], [4, 8, 8, 8]])
def test_defaults_build_exactly_the_original_cnn(shape, channels):
    model = build_model(CnnParams(channels=channels), shape, 10)
    before = original_cnn(shape, channels)
    assert [repr(m) for m in model[1:]] == [repr(m) for m in before]
    assert count_parameters(model) == count_parameters(before)
    torch.manual_seed(0)
    model = build_model(CnnParams(channels=channels), shape, 10)
    torch.manual_seed(0)
    before = original_cnn(shape, channels)
    x = torch.randn(2, *shape)
    assert torch.equal(model.eval()(x), before.eval()(x))  # same weights drawn in the same order


def n_params(**kw):
    return count_parameters(build_model(CnnParams(channels=[4, 8], hidden=16, **kw), [1, 16, 16], 10))


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ({"stride": 1, "padding": 1}, {"stride": 2, "padding": 1}),
        ({"stride": [1, 1], "padding": 1}, {"stride": [1, 2], "padding": 1}),
        ({"padding": "same"}, {"padding": 0}),
        ({"pooling": "max"}, {"pooling": "none"}),
        ({"pool_size": 2}, {"pool_size": 3}),  # 16 -> 8 -> 4 vs 16 -> 5 (too small to pool again)
    ],
)
def test_geometry_keys_change_the_flattened_size(a, b):
    assert n_params(**a) != n_params(**b)


def test_avg_and_max_pooling_differ_on_the_same_weights():
    x = torch.randn(3, 1, 16, 16)
    outs = []
    for pooling in ("max", "avg"):
        torch.manual_seed(0)
        outs.append(build_model(CnnParams(channels=[4], hidden=8, pooling=pooling), [1, 16, 16], 3).eval()(x))
    assert not torch.allclose(*outs)
    model = build_model(CnnParams(channels=[4], pooling="avg", pool_size=3), [1, 16, 16], 3)
    assert isinstance(model[4], nn.AvgPool2d) and model[4].kernel_size == 3


def test_per_layer_strides_reach_their_convs():
    model = build_model(CnnParams(channels=[4, 8], stride=[2, 1], padding=1, pooling="none"), [1, 16, 16], 3)
    convs = [m for m in model if isinstance(m, nn.Conv2d)]
    assert [c.stride for c in convs] == [(2, 2), (1, 1)] and [c.padding for c in convs] == [(1, 1), (1, 1)]
    assert model(torch.randn(2, 1, 16, 16)).shape == (2, 3)
    head = next(m for m in model if isinstance(m, nn.Linear))
    assert head.in_features == convs[1].out_channels * 8 * 8  # 16 -> 8 (stride 2) -> 8


def test_a_geometry_too_big_for_the_image_is_one_line_naming_the_keys():
    cfg = CnnParams(channels=[4, 4, 4], stride=4, padding=0)
    with pytest.raises(UserError) as err:
        build_model(cfg, [1, 8, 8], 10)
    msg = str(err.value)
    assert "\n" not in msg and "conv block 2 gets a 2x2 map" in msg
    assert all(key in msg for key in ("model.channels", "kernel_size 3", "padding 0", "stride 4", "model.stride"))


def test_geometry_keys_are_searchable_and_survive_a_family_switch():
    cfg = FitConfig().with_overrides({"model.name": "cnn", "model.pooling": "avg", "model.stride": [1, 2],
                                      "model.padding": 1})
    assert (cfg.model.pooling, cfg.model.stride, cfg.model.padding) == ("avg", [1, 2], 1)
    # cnn pooling (max|avg|none) and transformer pooling (cls|mean) are different keys under one name:
    # switching family must not carry one into the other.
    tf = cfg.with_overrides({"model.name": "transformer"})
    assert tf.model.pooling == "mean"
    assert tf.with_overrides({"model.name": "cnn"}).model.pooling == "max"
