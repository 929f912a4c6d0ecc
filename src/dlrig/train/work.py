"""The computational work a process did: fits trained and their estimated FLOPs, for the cost report.

Every finished fit (``fit()`` and each model of a ``fit_many`` stack) adds itself here; worker processes send
their deltas back with their results (:func:`snapshot` / :func:`merge`), and ``dlrig.stage.run_stage`` writes
the total into reports/run/<stage>.json beside the stage's seconds and peak memory. Never part of a result or
a cache key: a cached fit is not trained again, so it is not counted again.

FLOPs estimate of one fit: 3 x (forward FLOPs of one sample) x (gradient rows) x (epochs run). The forward
FLOPs are counted by ``torch.utils.flop_counter`` on one sample (matrix products and convolutions: 2 per
multiply-add), once per model shape; the backward pass costs about twice the forward (the 6 x parameters x
samples rule for dense nets). Left out: validation passes, optimizer updates, element-wise layers.
"""

from __future__ import annotations

from typing import Any

TALLY: dict[str, float] = {"fits": 0, "flops": 0.0, "samples": 0}
_FORWARD: dict[str, int] = {}  # forward FLOPs per sample, by model shape


def forward_flops(model: Any, sample_shape: tuple[int, ...]) -> int:
    """FLOPs of one sample's forward pass (counted once per architecture and input shape)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    key = f"{model!r}|{tuple(sample_shape)}"
    if key not in _FORWARD:
        param = next(model.parameters(), None)
        x = torch.zeros(1, *sample_shape, device=param.device if param is not None else "cpu")
        was_training = model.training
        model.eval()  # batch norm needs more than one row in training mode; the FLOPs are the same
        try:
            with torch.no_grad(), FlopCounterMode(display=False) as counter:
                model(x)
            _FORWARD[key] = int(counter.get_total_flops())
        except Exception:  # a model the counter cannot trace: no estimate rather than a failed fit
            _FORWARD[key] = 0
        finally:
            model.train(was_training)
    return _FORWARD[key]


def add_fit(model: Any, sample_shape: tuple[int, ...], rows: int, epochs: int) -> None:
    """Count one finished fit: ``rows`` gradient rows seen ``epochs`` times."""
    TALLY["fits"] += 1
    TALLY["samples"] += rows * epochs
    TALLY["flops"] += 3.0 * forward_flops(model, sample_shape) * rows * epochs


def snapshot() -> dict[str, float]:
    return dict(TALLY)


def since(before: dict[str, float]) -> dict[str, float]:
    """The work done since ``before`` (a worker's share, sent back with its results)."""
    return {k: TALLY[k] - before.get(k, 0) for k in TALLY}


def merge(delta: dict[str, float] | None) -> None:
    """Add a worker process's work to this process's tally."""
    for k, v in (delta or {}).items():
        TALLY[k] = TALLY.get(k, 0) + v
