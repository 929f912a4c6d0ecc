"""The multilayer perceptron: ``depth`` blocks of Linear -> norm -> activation -> dropout."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

from dlrig.models.layers import ACTIVATIONS, norm_layer
from dlrig.params import MlpParams


def dense_blocks(in_features: int, width: int, depth: int, cfg) -> tuple[list[nn.Module], int]:
    """``depth`` hidden layers of ``width`` units (shared with the CNN's dense head)."""
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [
            nn.Linear(in_features, width),
            norm_layer(cfg.norm, width, conv=False),
            ACTIVATIONS[cfg.activation](),
            nn.Dropout(cfg.dropout),
        ]
        in_features = width
    return layers, in_features


def body(cfg: MlpParams, sample_shape: Sequence[int]) -> tuple[list[nn.Module], int]:
    """Flatten any sample shape, then the dense blocks; returns the layers and the feature width."""
    layers, width = dense_blocks(math.prod(sample_shape), cfg.hidden, cfg.depth, cfg)
    return [nn.Flatten(), *layers], width
