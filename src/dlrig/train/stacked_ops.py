"""Pieces shared by the stacked forwards of :mod:`dlrig.train.stacked_func` and its composite layers
(:mod:`dlrig.train.stacked_rnn`, :mod:`dlrig.train.stacked_attn`): the per-model bias / gain, and the
contract a composite layer -- a module that runs as one stacked function -- fulfils.

Every tensor here carries the stack's models first: ``[M, ...]``, row ``r`` is model ``r``. A composite's
numbers for model ``r`` must depend on model ``r``'s parameters and batch only, to the last bit at one
torch thread, since the fit cache keys a fit by its own job. Two things broke that, both measured
(tests/train/test_stacked_rnn.py, test_stacked_func.py):

- MKL's batched GEMM (torch's ``bmm`` on a CPU) gave a model other last bits when its matrices sat at
  another alignment -- as they do at another place in a contiguous stack -- or when its right operand was
  row-major with some widths (5-11, 13, 15 columns among others): a lone MLP of hidden 7 and the same job in
  a stack of 4 differed. :func:`bmm` aligns every operand per model (:func:`buffer`) and passes the right
  one transposed (:func:`right`), forward and backward; with that no shape tried differed;
- torch's element-wise kernels run a contiguous tensor as one flat loop (vector blocks, then a scalar tail
  whose results may differ in the last bit): a per-model gap makes the loop run model by model.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

ALIGN = 16  # floats: 64 bytes, a cache line and an AVX-512 vector

# dropout(site, x): the dropout layer at ``site`` (a full parameter-name prefix) applied to x [M, W, ...]
Dropout = Callable[[str, torch.Tensor], torch.Tensor]


class Unsupported(Exception):
    """A layer (or a layer's option) that has no stacked form here (checked once per family)."""


def buffer(M: int, *shape: int, like: torch.Tensor) -> torch.Tensor:
    """An uninitialised ``[M, *shape]`` whose models start 64 bytes aligned, at least one float apart."""
    n = math.prod(shape)
    return like.new_empty(M, (n // ALIGN + 1) * ALIGN)[:, :n].view(M, *shape)


def aligned(t: torch.Tensor) -> torch.Tensor:
    """A copy of ``t [M, ...]`` in a :func:`buffer`."""
    return buffer(*t.shape, like=t).copy_(t)


def right(b: torch.Tensor) -> torch.Tensor:
    """``b [M, K, N]`` as the right operand of a batched matrix product: a transposed view of aligned
    ``[M, N, K]`` memory (see the module docstring; N >= 2: a one-column product was not reliable)."""
    return aligned(b.transpose(1, 2)).transpose(1, 2)


class _Bmm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a, b = aligned(a), right(b)
        ctx.save_for_backward(a, b)
        return torch.bmm(a, b)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        a, b = ctx.saved_tensors
        g = aligned(g)
        d_a = torch.bmm(g, right(b.transpose(1, 2))) if ctx.needs_input_grad[0] else None
        d_b = torch.bmm(aligned(a.transpose(1, 2)), right(g)) if ctx.needs_input_grad[1] else None
        return d_a, d_b


def bmm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a [M, N, K] @ b [M, K, O]``, one GEMM per model whose bits do not depend on the stack (forward and
    backward: every operand aligned per model, the right one transposed)."""
    return _Bmm.apply(a, b)


class PerModel(torch.autograd.Function):
    """``x [M, ..., F] + b [M, F]`` (or ``*`` with ``scale``): a bias or gain per model, whose gradient is
    a sum over the model's own rows, per model in aligned memory. Autograd's own sum for a broadcast bias
    (``baddbmm``'s, 4160 rows per model in an im2col convolution tried here), and a GEMM with a row of
    ones at some widths (7, 15), gave a lone model other last bits than the same model in a stack."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, b: torch.Tensor, scale: bool) -> torch.Tensor:
        shape = (b.shape[0], *[1] * (x.dim() - 2), b.shape[1])
        ctx.scale = scale
        if scale:
            ctx.save_for_backward(x, b)
            return x * b.view(shape)
        return x + b.view(shape)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        rows = g
        if ctx.scale:
            x, b = ctx.saved_tensors
            rows = g * x
            g = g * b.view(b.shape[0], *[1] * (g.dim() - 2), b.shape[1])
        rows = aligned(rows.reshape(rows.shape[0], -1, rows.shape[-1]))
        return g, rows.sum(1), None


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Every model's ``nn.Linear``: ``x [M, ..., F]`` by ``weight [M, O, F]`` (+ ``bias [M, O]``)."""
    shape = x.shape
    out = bmm(x.reshape(shape[0], -1, shape[-1]), weight.transpose(1, 2))
    if bias is not None:
        out = PerModel.apply(out, bias, False)
    return out.view(*shape[:-1], weight.shape[1])


def layer_norm(x: torch.Tensor, norm: nn.LayerNorm, weight: torch.Tensor | None,
               bias: torch.Tensor | None) -> torch.Tensor:
    """Every model's ``norm(x)`` over the last dimension, with its own gain ``weight [M, F]`` and ``bias``
    (through :class:`PerModel`; None: no affine)."""
    x = F.layer_norm(x, norm.normalized_shape, None, None, norm.eps)
    if weight is not None:
        x = PerModel.apply(x, weight, True)
    if bias is not None:
        x = PerModel.apply(x, bias, False)
    return x


@dataclass(frozen=True)
class Composite:
    """A module type that :func:`dlrig.train.stacked_func._forward` runs as one stacked function.

    - ``check(module, sample_shape)``: raise :class:`Unsupported` for an instance whose options have no
      stacked form here (called once per family, on the template model);
    - ``forward(module, prefix, params, buffers, x, dropout)``: every model's output ``[M, W, F]`` for its
      batch ``x [M, W, *sample]``; ``module`` is the template (its options, never its weights), ``params``
      and ``buffers`` hold every model's tensors ``[M, ...]`` under their full names (``prefix`` + the
      module's own name for them); ``dropout`` is None when no model of the stack drops anything
      (evaluation too), else ``dropout(prefix + site, x)`` applies the dropout at ``site``;
    - ``dropouts(module)``: ``{site: rate}`` for every dropout inside the module (sites relative to the
      module, e.g. ``"rnn.between.0"``): the stack reads each model's own rates from its own module.
    """

    check: Callable[[nn.Module, tuple[int, ...]], None]
    forward: Callable[..., torch.Tensor]
    dropouts: Callable[[nn.Module], dict[str, float]]


__all__ = ["ALIGN", "Composite", "Dropout", "PerModel", "Unsupported", "aligned", "bmm", "buffer",
           "layer_norm", "linear", "right"]
