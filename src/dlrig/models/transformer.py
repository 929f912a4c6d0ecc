"""A transformer encoder classifier: cut each sample into tokens, encode them, pool one vector.

Tokens (``model.tokens``):

- ``rows``: an image [C, H, W] is H tokens of C*W features (each pixel row, across channels); a table
  [F] is F tokens of 1 feature each (so attention relates features to one another).
- ``patches``: an image is (H/p)*(W/p) tokens, one per non-overlapping p x p patch (ViT), embedded by a
  p x p convolution with stride p (the same as flattening each patch into a Linear).
- ``embed``: a table [L] of integer codes 0..vocab_size-1 (stored as floats) is L tokens looked up in an
  ``nn.Embedding``. The model's first layer (``Standardize``) must then be the identity:
  ``train.standardize: none`` is required by params validation, and the lookup refuses values that are
  not integer codes in range with one line.

Attention dropout is its own key: torch's ``TransformerEncoderLayer`` takes one ``dropout`` for the
residual, feed-forward *and* attention weights, so each layer's ``self_attn`` is replaced by an
``nn.MultiheadAttention`` built with ``attention_dropout`` (public API, no patching of private fields).
Layers are built one by one (not ``nn.TransformerEncoder``, which deep-copies one layer, so every layer
would start from the same weights).

``model.norm`` is the norm of the pooled vector before the classifier (none | batch | layer); every
layer has its own LayerNorms as the architecture requires, and with ``norm_first`` (pre-norm) a final
LayerNorm closes the stack. ``model.init`` reaches the Linear layers (projections, feed-forward,
out_proj); the packed q/k/v projection keeps torch's Xavier init.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from dlrig.errors import UserError
from dlrig.models.layers import ACTIVATIONS, norm_layer
from dlrig.models.mlp import dense_blocks
from dlrig.params import TransformerParams


def encoder_layer(cfg: TransformerParams) -> nn.TransformerEncoderLayer:
    """One encoder layer with ``dropout`` on residual/feed-forward and ``attention_dropout`` on attention."""
    layer = nn.TransformerEncoderLayer(
        cfg.d_model, cfg.heads, cfg.ff_size, cfg.dropout, activation=ACTIVATIONS[cfg.activation](),
        batch_first=True, norm_first=cfg.norm_first,
    )
    layer.self_attn = nn.MultiheadAttention(cfg.d_model, cfg.heads, dropout=cfg.attention_dropout,
                                            batch_first=True)
    return layer


def sinusoidal(n_positions: int, width: int) -> torch.Tensor:
    """The fixed sine/cosine position code of "Attention is all you need", [n_positions, width]."""
    position = torch.arange(n_positions, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, width, 2, dtype=torch.float32) * (-math.log(10000.0) / width))
    code = torch.zeros(n_positions, width)
    code[:, 0::2] = torch.sin(position * freq)
    code[:, 1::2] = torch.cos(position * freq)[:, : width // 2]
    return code


class Positional(nn.Module):
    """Adds a position code to [N, T, d] tokens: learned, sinusoidal (fixed) or none."""

    def __init__(self, kind: str, n_positions: int, width: int) -> None:
        super().__init__()
        self.kind = kind
        if kind == "learned":
            self.code = nn.Parameter(torch.randn(1, n_positions, width) * 0.02)  # small: tokens dominate
        elif kind == "sinusoidal":
            self.register_buffer("code", sinusoidal(n_positions, width)[None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.kind == "none" else x + self.code[:, : x.shape[1]]


class CodeEmbedding(nn.Module):
    """Integer codes stored as floats -> token vectors; anything else is refused with one line."""

    def __init__(self, vocab_size: int, width: int) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.embed = nn.Embedding(vocab_size, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        codes = x.round()
        integer = torch.equal(codes, x)
        if not integer or codes.min() < 0 or codes.max() >= self.vocab_size:
            raise UserError(
                f"model.tokens: embed needs integer codes 0..{self.vocab_size - 1} (model.vocab_size); this "
                f"data holds values in [{float(x.min()):g}, {float(x.max()):g}]"
                f"{'' if integer else ' that are not integers'} (use tokens: rows for real values)"
            )
        return self.embed(codes.long())


class Tokens(nn.Module):
    """A sample -> [N, T, d_model] tokens (see the module docstring for the three ways)."""

    def __init__(self, cfg: TransformerParams, sample_shape: Sequence[int]) -> None:
        super().__init__()
        self.kind, shape = cfg.tokens, list(sample_shape)
        d = cfg.d_model
        if cfg.tokens == "embed":
            if len(shape) != 1:
                raise UserError(f"model.tokens: embed needs a table of integer codes [L]; this data set has "
                                f"samples of shape {shape} (use tokens: rows or patches for images)")
            self.proj, self.n_tokens = CodeEmbedding(cfg.vocab_size, d), shape[0]
        elif cfg.tokens == "patches":
            p = cfg.patch_size
            if len(shape) != 3 or shape[1] % p or shape[2] % p:
                raise UserError(f"model.patch_size: {p} must divide the image's height and width for tokens: "
                                f"patches (samples have shape {shape}; patches need images [C, H, W])")
            self.proj, self.n_tokens = nn.Conv2d(shape[0], d, p, stride=p), (shape[1] // p) * (shape[2] // p)
        elif len(shape) == 3:  # rows of an image: H tokens of C*W features
            self.proj, self.n_tokens = nn.Linear(shape[0] * shape[2], d), shape[1]
        elif len(shape) == 1:  # a table: F tokens of one feature each
            self.proj, self.n_tokens = nn.Linear(1, d), shape[0]
        else:
            raise UserError(f"model.name=transformer needs images [C, H, W] or tables [F]; this data set "
                            f"has samples of shape {shape}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "patches":
            return self.proj(x).flatten(2).transpose(1, 2)  # [N, d, H/p, W/p] -> [N, T, d]
        if self.kind == "rows" and x.dim() == 4:
            x = x.permute(0, 2, 1, 3).flatten(2)  # [N, C, H, W] -> [N, H, C*W]
        elif self.kind == "rows":
            x = x.unsqueeze(-1)  # [N, F] -> [N, F, 1]
        return self.proj(x)


class TransformerBody(nn.Module):
    """Tokens -> (+ class token) -> position code -> encoder layers -> pooled [N, d_model]."""

    def __init__(self, cfg: TransformerParams, sample_shape: Sequence[int]) -> None:
        super().__init__()
        self.tokens = Tokens(cfg, sample_shape)
        self.pooling = cfg.pooling
        self.cls = nn.Parameter(torch.zeros(1, 1, cfg.d_model)) if cfg.pooling == "cls" else None
        n_positions = self.tokens.n_tokens + (cfg.pooling == "cls")
        self.position = Positional(cfg.positional, n_positions, cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)
        self.layers = nn.Sequential(*(encoder_layer(cfg) for _ in range(cfg.layers)))
        self.final = nn.LayerNorm(cfg.d_model) if cfg.norm_first else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.tokens(x)
        if self.cls is not None:
            h = torch.cat([self.cls.expand(len(h), -1, -1), h], dim=1)
        h = self.final(self.layers(self.dropout(self.position(h))))
        return h[:, 0] if self.pooling == "cls" else h.mean(dim=1)


def body(cfg: TransformerParams, sample_shape: Sequence[int]) -> tuple[list[nn.Module], int]:
    if cfg.decoder_layers:
        raise UserError(f"model.decoder_layers is for sequence-to-sequence tasks (dlrig.models.seq2seq); the "
                        f"pipeline classifies, one label per sample: set it to 0 (got {cfg.decoder_layers})")
    head, width = dense_blocks(cfg.d_model, cfg.hidden, cfg.depth - 1, cfg)  # as the cnn's dense head
    return [TransformerBody(cfg, sample_shape), norm_layer(cfg.norm, cfg.d_model, conv=False), *head], width
