"""A small CNN: one conv block per ``channels`` entry (conv -> norm -> activation -> 2x2 max-pool while
the map is at least 4 pixels wide), then a dense head of ``depth - 1`` hidden layers."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from dlrig.errors import UserError
from dlrig.models.layers import ACTIVATIONS, norm_layer
from dlrig.models.mlp import dense_blocks
from dlrig.params import CnnParams


def body(cfg: CnnParams, sample_shape: Sequence[int]) -> tuple[list[nn.Module], int]:
    if len(sample_shape) != 3:
        raise UserError(
            f"model.name=cnn needs image data [C, H, W]; this data set has samples of shape "
            f"{list(sample_shape)} (use model.name=mlp for tables)"
        )
    channels, height, width = sample_shape
    layers: list[nn.Module] = []
    for out in cfg.channels:
        layers += [
            nn.Conv2d(channels, out, cfg.kernel_size, padding=cfg.kernel_size // 2),
            norm_layer(cfg.norm, out, conv=True),
            ACTIVATIONS[cfg.activation](),
        ]
        channels = out
        if min(height, width) >= 4:  # pool while the map is still large enough to halve
            layers.append(nn.MaxPool2d(2))
            height, width = height // 2, width // 2
    layers += [nn.Flatten(), nn.Dropout(cfg.dropout)]
    head, features = dense_blocks(channels * height * width, cfg.hidden, cfg.depth - 1, cfg)
    return layers + head, features
