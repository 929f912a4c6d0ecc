"""The multilayer perceptron: ``depth`` blocks of Linear -> norm -> activation -> dropout, optionally
residual (``model.residual``: ``x + block(x)`` from the second block on)."""

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


class Residual(nn.Module):
    """``x + block(x)``: the identity path carries the gradient past a block whose own Jacobian is small."""

    def __init__(self, *block: nn.Module) -> None:
        super().__init__()
        self.block = nn.Sequential(*block)

    def forward(self, x):
        return x + self.block(x)


def body(cfg: MlpParams, sample_shape: Sequence[int]) -> tuple[list[nn.Module], int]:
    """Flatten any sample shape, then the dense blocks; returns the layers and the feature width.

    ``cfg.residual`` wraps every block after the first (the first changes the width) in :class:`Residual`.
    """
    layers, width = dense_blocks(math.prod(sample_shape), cfg.hidden, cfg.depth, cfg)
    if cfg.residual:
        blocks = [layers[i : i + 4] for i in range(0, len(layers), 4)]  # dense_blocks: 4 modules per block
        layers = [*blocks[0], *(Residual(*b) for b in blocks[1:])]
    return [nn.Flatten(), *layers], width
