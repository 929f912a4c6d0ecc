"""MLP and small CNN, with the activation, normalisation, dropout and init that params choose.

The network never sees raw data: a :class:`Standardize` layer in front holds the mean and scale fitted
on the training part of the fold (buffers, so they travel inside the checkpoint and the model can be
applied to raw inputs at test time without a separate scaler file).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from dlrig.errors import UserError
from dlrig.params import ModelParams

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "silu": nn.SiLU,
    "sigmoid": nn.Sigmoid,
}
# The nonlinearity name torch.nn.init.calculate_gain knows for each activation (gain of the He/Xavier init).
_GAIN_NAME = {"relu": "relu", "leaky_relu": "leaky_relu", "tanh": "tanh", "sigmoid": "sigmoid"}


class Standardize(nn.Module):
    """``(x - mean) / scale`` with statistics fitted on training data only (see ``dlrig.train``)."""

    def __init__(self, sample_shape: Sequence[int]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(*sample_shape))
        self.register_buffer("scale", torch.ones(*sample_shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.scale


def _norm(kind: str, width: int, conv: bool) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(width) if conv else nn.BatchNorm1d(width)
    if kind == "layer":
        # For feature maps, GroupNorm with one group normalises over (C, H, W) like LayerNorm would.
        return nn.GroupNorm(1, width) if conv else nn.LayerNorm(width)
    return nn.Identity()


def _mlp_body(in_features: int, cfg: ModelParams) -> tuple[list[nn.Module], int]:
    layers: list[nn.Module] = []
    width = in_features
    for _ in range(cfg.depth):
        layers += [
            nn.Linear(width, cfg.hidden),
            _norm(cfg.norm, cfg.hidden, conv=False),
            _ACTIVATIONS[cfg.activation](),
            nn.Dropout(cfg.dropout),
        ]
        width = cfg.hidden
    return layers, width


def _cnn_body(sample_shape: Sequence[int], cfg: ModelParams) -> tuple[list[nn.Module], int]:
    channels, height, width = sample_shape
    layers: list[nn.Module] = []
    for out in cfg.channels:
        layers += [
            nn.Conv2d(channels, out, cfg.kernel_size, padding=cfg.kernel_size // 2),
            _norm(cfg.norm, out, conv=True),
            _ACTIVATIONS[cfg.activation](),
        ]
        channels = out
        if min(height, width) >= 4:  # pool while the map is still large enough to halve
            layers.append(nn.MaxPool2d(2))
            height, width = height // 2, width // 2
    layers += [nn.Flatten(), nn.Dropout(cfg.dropout)]
    head, features = _mlp_body(channels * height * width, cfg.model_copy(update={"depth": cfg.depth - 1}))
    return layers + head, features


def build_model(cfg: ModelParams, sample_shape: Sequence[int], n_classes: int) -> nn.Sequential:
    """``Standardize -> body -> Linear(n_classes)``; weights initialised per ``cfg.init``.

    Call under a seeded ``torch`` generator state (``dlrig.train`` does) for reproducible weights.
    """
    sample_shape = list(sample_shape)
    if cfg.name == "cnn":
        if len(sample_shape) != 3:
            raise UserError(
                f"model.name=cnn needs image data [C, H, W]; this data set has samples of shape "
                f"{sample_shape} (use model.name=mlp for tables)"
            )
        body, width = _cnn_body(sample_shape, cfg)
    else:
        body, width = _mlp_body(math.prod(sample_shape), cfg)
        body.insert(0, nn.Flatten())
    model = nn.Sequential(Standardize(sample_shape), *body, nn.Linear(width, n_classes))
    init_weights(model, cfg.init, cfg.activation)
    return model


def init_weights(model: nn.Module, scheme: str, activation: str) -> None:
    """Apply an init scheme to every Linear/Conv weight (biases to zero); ``default`` keeps torch's."""
    if scheme == "default":
        return
    gain_name = _GAIN_NAME.get(activation, "relu")
    for module in model.modules():
        if not isinstance(module, nn.Linear | nn.Conv2d):
            continue
        w = module.weight
        if scheme == "kaiming_normal":
            nn.init.kaiming_normal_(w, nonlinearity=gain_name if gain_name != "sigmoid" else "relu")
        elif scheme == "kaiming_uniform":
            nn.init.kaiming_uniform_(w, nonlinearity=gain_name if gain_name != "sigmoid" else "relu")
        elif scheme == "xavier_normal":
            nn.init.xavier_normal_(w, gain=nn.init.calculate_gain(gain_name))
        elif scheme == "xavier_uniform":
            nn.init.xavier_uniform_(w, gain=nn.init.calculate_gain(gain_name))
        elif scheme == "orthogonal":
            nn.init.orthogonal_(w, gain=nn.init.calculate_gain(gain_name))
        else:  # pragma: no cover - params validation refuses other names
            raise ValueError(f"unknown init scheme {scheme!r}")
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
