"""The computational work a process did: fits trained and their estimated FLOPs, for the cost report.

Every finished fit (``fit()`` and each model of a ``fit_many`` stack) adds itself here; worker processes send
their deltas back with their results (:func:`snapshot` / :func:`merge`), and ``dlrig.stage.run_stage`` writes
the total into reports/run/<stage>.json beside the stage's seconds and peak memory. Never part of a result or
a cache key: a cached fit is not trained again, so it is not counted again.

FLOPs estimate of one fit: 3 x (forward FLOPs of one sample) x (gradient rows) x (epochs run). The forward
FLOPs are the matrix products and convolutions of one sample (2 per multiply-add), counted once per model
shape by :func:`forward_flops`; the backward pass costs about twice the forward (the 6 x parameters x
samples rule for dense nets). Left out: validation passes, optimizer updates, element-wise layers.

Why not ``torch.utils.flop_counter.FlopCounterMode``: it counts only the aten ops it sees, and torch's fused
kernels hide theirs -- an LSTM (``aten.lstm``) and an encoder layer in eval mode (its fast path) count as
zero, so a recurrent or attention model's cost came out as its dense head's alone -- and entering it imports
``torch._dynamo`` (about 1 s of every stage that trains). The formulas below are the textbook ones, per
layer type, held exactly to FlopCounterMode where it sees the ops (linear, convolution, an encoder layer's
slow path, GRU/RNN cells) by tests/train/test_work.py.
"""

from __future__ import annotations

import math
from typing import Any

TALLY: dict[str, float] = {"fits": 0, "flops": 0.0, "samples": 0}
_FORWARD: dict[str, int] = {}  # forward FLOPs per sample, by model shape


def forward_flops(model: Any, sample_shape: tuple[int, ...], dtype: Any = None) -> int:
    """FLOPs of one sample's forward pass (counted once per architecture and input shape): one forward pass
    of a zero sample (``dtype``: the model's input type, float by default; integer codes for an embedding)
    in eval mode, with a hook on every layer that multiplies (:func:`_layer_flops`)."""
    import torch

    key = f"{model!r}|{tuple(sample_shape)}|{dtype}"
    if key not in _FORWARD:
        param = next(model.parameters(), None)
        x = torch.zeros(1, *sample_shape, device=param.device if param is not None else "cpu", dtype=dtype)
        counted: list[int] = []
        hooks = [m.register_forward_hook(lambda mod, args, out: counted.append(_layer_flops(mod, args, out)))
                 for m in model.modules()]
        was_training, fast_path = model.training, torch.backends.mha.get_fastpath_enabled()
        model.eval()  # batch norm needs more than one row in training mode; the FLOPs are the same
        torch.backends.mha.set_fastpath_enabled(False)  # run an encoder layer's own modules (its hooks fire)
        try:
            with torch.no_grad():
                model(x)
            _FORWARD[key] = int(sum(counted))
        except Exception:  # a model that cannot run one sample: no estimate rather than a failed fit
            _FORWARD[key] = 0
        finally:
            torch.backends.mha.set_fastpath_enabled(fast_path)
            model.train(was_training)
            for hook in hooks:
                hook.remove()
    return _FORWARD[key]


def _layer_flops(module: Any, args: tuple, out: Any) -> int:
    """2 x the multiply-adds of one call of ``module`` (0 for layers that do not multiply matrices)."""
    from torch import nn

    if isinstance(module, nn.Linear):  # x @ W.T over every leading position (addmm's count)
        return 2 * module.in_features * module.out_features * (args[0].numel() // module.in_features)
    if isinstance(module, nn.modules.conv._ConvNd):  # each output value: (in / groups) x kernel products
        per_out = module.in_channels // module.groups * math.prod(module.kernel_size)
        return 2 * per_out * out.numel()
    if isinstance(module, nn.RNNBase):  # every layer and direction: gates x (input + hidden) x hidden a step
        x = args[0]
        steps = x.numel() // x.shape[-1]  # batch x time
        gates = {"LSTM": 4, "GRU": 3}.get(module.mode, 1)
        dirs = 2 if module.bidirectional else 1
        total = 0
        for layer in range(module.num_layers):
            width = module.input_size if layer == 0 else module.hidden_size * dirs
            total += dirs * 2 * gates * module.hidden_size * (width + module.hidden_size) * steps
        return total
    if isinstance(module, nn.MultiheadAttention):  # q, k, v and out projections; q.k scores; weights @ v
        query, key = args[0], args[1]
        width = module.embed_dim
        q_rows, k_rows = query.numel() // width, key.numel() // key.shape[-1]
        kv_width = (module.kdim or width) + (module.vdim or width)
        batch = query.shape[0] if module.batch_first or query.dim() == 2 else query.shape[1]
        q_len, k_len = q_rows // max(batch, 1), k_rows // max(batch, 1)
        projections = 2 * width * (q_rows * width + k_rows * kv_width + q_rows * width)
        return projections + 2 * 2 * batch * q_len * k_len * width
    return 0


def add_fit(model: Any, sample_shape: tuple[int, ...], rows: int, epochs: int, dtype: Any = None) -> None:
    """Count one finished fit: ``rows`` gradient rows seen ``epochs`` times (``dtype``: see forward_flops)."""
    TALLY["fits"] += 1
    TALLY["samples"] += rows * epochs
    TALLY["flops"] += 3.0 * forward_flops(model, sample_shape, dtype) * rows * epochs


def snapshot() -> dict[str, float]:
    return dict(TALLY)


def since(before: dict[str, float]) -> dict[str, float]:
    """The work done since ``before`` (a worker's share, sent back with its results)."""
    return {k: TALLY[k] - before.get(k, 0) for k in TALLY}


def merge(delta: dict[str, float] | None) -> None:
    """Add a worker process's work to this process's tally."""
    for k, v in (delta or {}).items():
        TALLY[k] = TALLY.get(k, 0) + v
