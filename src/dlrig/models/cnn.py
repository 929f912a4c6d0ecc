"""A small CNN: one conv block per ``channels`` entry (conv -> norm -> activation -> pool while the map is
at least ``2 * pool_size`` pixels wide), then a dense head of ``depth - 1`` hidden layers.

Geometry keys: ``stride`` (one value or one per block), ``padding`` ('same' = kernel_size // 2 with stride
1, or an integer), ``pooling`` (max | avg | none) and ``pool_size``. The defaults (stride 1, 'same', 2x2
max-pool) are the original CNN. A geometry that shrinks the map below one pixel is refused at build time
with a line naming the keys, not a torch shape error mid-training."""

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
    k = cfg.kernel_size
    strides = cfg.stride if isinstance(cfg.stride, list) else [cfg.stride] * len(cfg.channels)
    pad = k // 2 if cfg.padding == "same" else cfg.padding  # 'same' keeps the size (odd kernel, stride 1)
    pool = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}.get(cfg.pooling)
    layers: list[nn.Module] = []
    for i, (out, stride) in enumerate(zip(cfg.channels, strides, strict=True)):
        h, w = (height + 2 * pad - k) // stride + 1, (width + 2 * pad - k) // stride + 1
        if min(h, w) < 1:
            raise UserError(
                f"model.channels: conv block {i + 1} gets a {height}x{width} map, too small for "
                f"kernel_size {k}, padding {pad}, stride {stride} "
                f"(from a {sample_shape[1]}x{sample_shape[2]} input): use fewer channels entries, smaller "
                f"model.stride / model.pool_size or more padding"
            )
        layers += [
            nn.Conv2d(channels, out, k, stride=stride, padding=pad),
            norm_layer(cfg.norm, out, conv=True),
            ACTIVATIONS[cfg.activation](),
        ]
        channels, height, width = out, h, w
        if pool is not None and min(height, width) >= 2 * cfg.pool_size:  # pool while it can still shrink
            layers.append(pool(cfg.pool_size))
            height, width = height // cfg.pool_size, width // cfg.pool_size
    layers += [nn.Flatten(), nn.Dropout(cfg.dropout)]
    head, features = dense_blocks(channels * height * width, cfg.hidden, cfg.depth - 1, cfg)
    return layers + head, features
