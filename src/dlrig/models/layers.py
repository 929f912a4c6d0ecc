"""Building blocks every model family shares: the in-fold scaler, activations, normalisation, init.

The network never sees raw data: a :class:`Standardize` layer in front holds the mean and scale fitted
on the training part of the fold (buffers, so they travel inside the checkpoint and the model can be
applied to raw inputs at test time without a separate scaler file).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
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


def norm_layer(kind: str, width: int, conv: bool) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(width) if conv else nn.BatchNorm1d(width)
    if kind == "layer":
        # For feature maps, GroupNorm with one group normalises over (C, H, W) like LayerNorm would.
        return nn.GroupNorm(1, width) if conv else nn.LayerNorm(width)
    return nn.Identity()


def set_norm_statistics(model: nn.Module, momentum: float, eps: float) -> None:
    """``model.norm_momentum`` / ``model.norm_eps`` on every batch, layer and group norm of ``model``,
    whichever family built it (torch reads both attributes at each forward pass)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = momentum
        if isinstance(module, nn.modules.batchnorm._BatchNorm | nn.LayerNorm | nn.GroupNorm):
            module.eps = eps


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
        elif scheme == "normal":  # N(0, 1): no 1/sqrt(fan_in) scaling, so activations grow with width
            nn.init.normal_(w, 0.0, 1.0)
        else:  # pragma: no cover - params validation refuses other names
            raise ValueError(f"unknown init scheme {scheme!r}")
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
