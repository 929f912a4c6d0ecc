"""The transformer body (:class:`dlrig.models.transformer.TransformerBody`) as one stacked function, a
composite layer of :mod:`dlrig.train.stacked_func`: every model of a stack runs each of its steps at once.

What torch's modules compute in training mode, written out over tensors that carry the models first
(``[M, W, T, d]``: model, batch row, token, feature):

- tokens: ``rows`` and ``patches`` are one batched matrix product per model (a p x p convolution with stride
  p *is* a Linear on each flattened patch, in the kernel's (C, p, p) order); ``embed`` is one lookup in the
  models' tables laid end to end (model ``r``'s codes offset by ``r * vocab``);
- class token and learned position code are per-model additions through :class:`PerModel` (their gradient,
  a sum over the model's rows, is a GEMM per model); the sinusoidal code is a buffer;
- each encoder layer (``nn.TransformerEncoderLayer``, pre- or post-norm): the packed q/k/v projection, the
  scaled dot product per head over all (models x rows x heads) at once, ``out_proj``, the feed-forward, and
  LayerNorms whose affine goes through :class:`PerModel`;
- pooling: the class token's output or the mean over tokens.

Attention is written out -- batched products, softmax, the stack's dropout on the weights, batched
products -- rather than ``F.scaled_dot_product_attention``: SDPA draws its dropout from the global RNG (the
stack's masks come from each model's own generator), and at these sizes (8 tokens, 16 dimensions a head)
its CPU flash kernel took 11.6 ms forward + backward where the written-out form takes 7.3 ms
(6 x 65 rows x 4 heads, one thread). One path whatever the rates: a model's bits never depend on whether
a mate drops.

Dropout sites, relative to the body: ``dropout`` (after the position code), ``layers.{i}.self_attn`` (the
attention weights, rate ``self_attn.dropout``), ``layers.{i}.dropout`` (inside the feed-forward),
``layers.{i}.dropout1`` (after attention) and ``layers.{i}.dropout2`` (after the feed-forward).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from dlrig.models.layers import ACTIVATIONS
from dlrig.models.transformer import TransformerBody
from dlrig.train.stacked_ops import Composite, Dropout, PerModel, Unsupported, layer_norm, linear

_ACTIVATIONS = tuple(ACTIVATIONS.values())  # element-wise modules: they act on [M, ...] as on [N, ...]


def _check(body: TransformerBody, sample_shape: tuple[int, ...]) -> None:
    """What this stacked form covers: the options models/transformer.py builds (anything else -- a layer
    someone swapped in, an attention with separate q/k/v weights -- has no stacked form here)."""
    if body.tokens.kind not in ("rows", "patches", "embed"):
        raise Unsupported(f"tokens {body.tokens.kind}")
    if body.position.kind not in ("learned", "sinusoidal", "none"):
        raise Unsupported(f"positional {body.position.kind}")
    for layer in body.layers:
        attn = layer.self_attn
        if (type(layer) is not nn.TransformerEncoderLayer or type(attn) is not nn.MultiheadAttention
                or not attn._qkv_same_embed_dim or attn.in_proj_bias is None or attn.bias_k is not None
                or attn.add_zero_attn or not attn.batch_first or attn.out_proj.bias is None
                or type(layer.activation) not in _ACTIVATIONS or getattr(layer.activation, "inplace", False)):
            raise Unsupported("encoder layer")
        drops = (layer.dropout, layer.dropout1, layer.dropout2)
        if any(type(m) is not nn.Dropout or m.inplace for m in drops):
            raise Unsupported("encoder dropout")
        if any(not n.elementwise_affine or n.bias is None for n in (layer.norm1, layer.norm2)):
            raise Unsupported("layer norm")
    if not isinstance(body.final, nn.Identity | nn.LayerNorm):
        raise Unsupported("final norm")


def _dropouts(body: TransformerBody) -> dict[str, float]:
    rates = {"dropout": body.dropout.p}
    for i, layer in enumerate(body.layers):
        rates |= {f"layers.{i}.self_attn": layer.self_attn.dropout, f"layers.{i}.dropout": layer.dropout.p,
                  f"layers.{i}.dropout1": layer.dropout1.p, f"layers.{i}.dropout2": layer.dropout2.p}
    return rates


def _layer_norm(x: torch.Tensor, norm: nn.LayerNorm, params: dict[str, torch.Tensor], at: str
                ) -> torch.Tensor:
    """``norm(x)`` with every model's own gain and bias, the parameters at ``at``."""
    return layer_norm(x, norm, params[at + "weight"], params[at + "bias"])


def _tokens(body: TransformerBody, prefix: str, params: dict[str, torch.Tensor], x: torch.Tensor
            ) -> torch.Tensor:
    """Every model's tokens ``[M, W, T, d]`` for its batch ``x [M, W, *sample]`` (Tokens.forward)."""
    tokens, at = body.tokens, prefix + "tokens.proj."
    M, W = x.shape[:2]
    if tokens.kind == "embed":
        codes = x.round()
        vocab = tokens.proj.vocab_size
        if not torch.equal(codes, x) or codes.min() < 0 or codes.max() >= vocab:
            tokens.proj(x.reshape(M * W, -1))  # raises the layer's own one-line UserError
            raise AssertionError("unreachable: CodeEmbedding refuses these codes")
        table = params[at + "embed.weight"]  # [M, vocab, d]
        offset = (torch.arange(M, device=x.device) * vocab).view(M, 1, 1)
        return F.embedding(codes.long() + offset, table.reshape(M * vocab, -1))
    weight, bias = params[at + "weight"], params[at + "bias"]
    if tokens.kind == "patches":  # [M, W, C, H, W'] -> [M, W, H/p * W'/p, C*p*p]: the conv's patches
        C, H, Wd = x.shape[2:]
        p = tokens.proj.kernel_size[0]
        x = x.reshape(M, W, C, H // p, p, Wd // p, p).permute(0, 1, 3, 5, 2, 4, 6).reshape(
            M, W, (H // p) * (Wd // p), C * p * p)
        weight = weight.reshape(M, weight.shape[1], -1)
    elif x.dim() == 5:  # rows of an image: [M, W, C, H, W'] -> [M, W, H, C*W']
        x = x.permute(0, 1, 3, 2, 4).flatten(3)
    else:  # a table: [M, W, F] -> F tokens of one feature
        x = x.unsqueeze(-1)
    return linear(x, weight, bias)


def _attention(attn: nn.MultiheadAttention, at: str, params: dict[str, torch.Tensor], x: torch.Tensor,
               dropout: Dropout | None, site: str) -> torch.Tensor:
    """``attn(x, x, x, need_weights=False)[0]`` in training, for every model's ``x [M, W, T, d]``."""
    M, W, T, d = x.shape
    H = attn.num_heads
    qkv = linear(x, params[at + "in_proj_weight"], params[at + "in_proj_bias"])  # [M, W, T, 3d]
    q, k, v = qkv.view(M * W, T, 3, H, d // H).permute(2, 0, 3, 1, 4)  # [M*W, H, T, d/H]
    scores = q @ k.transpose(-2, -1) * (1 / math.sqrt(d // H))  # [M*W, H, T, T]
    # softmax written out: torch's kernel vectorises along the last dim, 8 wide here (2.0 ms against 0.7
    # forward + backward on 6 x 65 x 4 heads); the max is a shift, which changes no softmax or gradient
    weights = (scores - scores.amax(-1, keepdim=True).detach()).exp()
    weights = weights / weights.sum(-1, keepdim=True)
    if dropout is not None:  # the stack's masks, each model's own (SDPA would draw from the global RNG)
        weights = dropout(site, weights.view(M, W, H, T, T)).view(M * W, H, T, T)
    out = (weights @ v).transpose(1, 2).reshape(M, W, T, d)
    return linear(out, params[at + "out_proj.weight"], params[at + "out_proj.bias"])


def _forward(body: TransformerBody, prefix: str, params: dict[str, torch.Tensor],
             buffers: dict[str, torch.Tensor], x: torch.Tensor, dropout: Dropout | None) -> torch.Tensor:
    """Every model's pooled ``[M, W, d_model]`` (TransformerBody.forward in training mode)."""
    drop = (lambda site, h: h) if dropout is None else (lambda site, h: dropout(prefix + site, h))  # noqa: E731
    h = _tokens(body, prefix, params, x)
    M, W, _, d = h.shape
    if body.cls is not None:  # the class token, first: its gradient a GEMM per model
        cls = PerModel.apply(h.new_zeros(M, W, 1, d), params[prefix + "cls"].view(M, d), False)
        h = torch.cat([cls, h], dim=2)
    T = h.shape[2]
    if body.position.kind == "learned":
        code = params[prefix + "position.code"][:, :, :T].reshape(M, T * d)
        h = PerModel.apply(h.reshape(M, W, T * d), code, False).view(M, W, T, d)
    elif body.position.kind == "sinusoidal":
        h = h + buffers[prefix + "position.code"][:, :, :T]  # [M, 1, T, d]
    h = drop("dropout", h)
    for i, layer in enumerate(body.layers):
        at, site = f"{prefix}layers.{i}.", f"layers.{i}."

        def attend(z, layer=layer, at=at, site=site):
            z = _attention(layer.self_attn, at + "self_attn.", params, z, dropout, at + "self_attn")
            return drop(site + "dropout1", z)

        def feed(z, layer=layer, at=at, site=site):
            z = layer.activation(linear(z, params[at + "linear1.weight"], params[at + "linear1.bias"]))
            z = linear(drop(site + "dropout", z), params[at + "linear2.weight"], params[at + "linear2.bias"])
            return drop(site + "dropout2", z)

        if layer.norm_first:
            h = h + attend(_layer_norm(h, layer.norm1, params, at + "norm1."))
            h = h + feed(_layer_norm(h, layer.norm2, params, at + "norm2."))
        else:
            h = _layer_norm(h + attend(h), layer.norm1, params, at + "norm1.")
            h = _layer_norm(h + feed(h), layer.norm2, params, at + "norm2.")
    if isinstance(body.final, nn.LayerNorm):
        h = _layer_norm(h, body.final, params, prefix + "final.")
    return h[:, :, 0] if body.pooling == "cls" else h.mean(dim=2)


COMPOSITES: dict[type, Composite] = {
    TransformerBody: Composite(check=_check, forward=_forward, dropouts=_dropouts),
}

__all__ = ["COMPOSITES"]
