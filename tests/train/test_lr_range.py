"""The learning-rate range test (dlrig.train.lr_range): the sweep, the blow-up stop, the suggestions
against fastai's own functions, and seeded numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from dlrig.train import fit
from dlrig.train.callbacks import Callback, FitState
from dlrig.train.lr_range import (
    LrSweep,
    lr_range_test,
    search_range,
    space_yaml,
    steepest_index,
    suggest,
    sweep_config,
    valley_index,
)


# fastai 2.7 (fastai/callback/schedule.py), as published, on plain lists: the oracle
def fastai_valley(lrs, losses):
    n = len(losses)
    max_start, max_end = 0, 0
    lds = [1] * n
    for i in range(1, n):
        for j in range(0, i):
            if (losses[i] < losses[j]) and (lds[i] < lds[j] + 1):
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end = i
                max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    idx = max_start + int(sections) + int(sections / 2)
    return float(lrs[idx])


def fastai_steep(lrs, losses):
    lrs, losses = torch.tensor(lrs, dtype=torch.float64), torch.tensor(losses, dtype=torch.float64)
    grads = (losses[1:] - losses[:-1]) / (lrs[1:].log() - lrs[:-1].log())
    return lrs[grads.argmin()].item()


def curve(n: int = 101) -> tuple[np.ndarray, np.ndarray]:
    """Flat, a tanh drop centred on lr = 1e-3, then a rise past lr = 1e-1."""
    lrs = np.logspace(-6, 1, n)
    x = np.log10(lrs)
    return lrs, 2.0 - np.tanh(2 * (x + 3)) + 3.0 * np.clip(x + 1, 0, None) ** 2


def test_steepest_is_the_middle_of_the_drop_on_a_known_curve():
    lrs, loss = curve()
    k = steepest_index(lrs, loss)
    assert lrs[k] <= 1e-3 < lrs[k + 1]  # the segment holding the tanh's inflection point
    found = suggest(lrs, loss, skip_start=10)
    assert found["steepest"] == pytest.approx(lrs[k]) and found["minimum"] == lrs[10:-5][np.argmin(loss[10:-5])]
    assert 1e-5 < found["valley"] < found["steepest"] < found["minimum"]


@pytest.mark.parametrize("seed", range(6))
def test_valley_and_steepest_agree_with_fastai(seed):
    rng = np.random.default_rng(seed)
    lrs, loss = curve(80)
    noisy = loss + rng.normal(0, 0.05, len(loss))
    assert lrs[valley_index(noisy)] == fastai_valley(lrs.tolist(), noisy.tolist())
    assert lrs[steepest_index(lrs, noisy)] == pytest.approx(fastai_steep(lrs.tolist(), noisy.tolist()), rel=1e-12)


def test_search_range_and_its_yaml():
    assert search_range(1e-3, 2e-2) == {"low": 1e-4, "high": 2e-2, "log": True, "count": 4}
    assert search_range(1e-3, 1.2e-3)["high"] == 1e-2  # minimum hardly above the valley: a decade up
    assert search_range(None, 1e-2) is None
    assert space_yaml(search_range(3.3e-4, 0.023)).splitlines()[2].startswith(
        "    optim.lr: {low: 3.3e-05, high: 0.023, log: true, count: 4}")


class LrSpy(Callback):
    """What every parameter group's lr is when the gradients are in (the step about to be taken)."""

    def __init__(self) -> None:
        self.lrs: list[list[float]] = []

    def on_after_backward(self, state) -> None:
        self.lrs.append([g["lr"] for g in state.optimizer.param_groups])


def test_the_sweep_multiplies_the_lr_every_step_and_the_optimizer_uses_it(blobs, fast_config):
    X, y = blobs
    sweep, spy = LrSweep(1e-4, 1e-1, 25, diverge=1e9), LrSpy()
    config, notes = sweep_config(fast_config, 1e-4, 25)
    fit(X, y, 3, config, 0, callbacks=[sweep, spy])
    assert len(sweep.lrs) == 25 and sweep.lrs[0] == 1e-4 and sweep.lrs[-1] == pytest.approx(1e-1, rel=1e-9)
    assert np.allclose(np.diff(np.log(sweep.lrs)), math.log(1000) / 24, rtol=1e-9, atol=0)
    assert spy.lrs == [[lr] * len(row) for lr, row in zip(sweep.lrs, spy.lrs, strict=True)]  # every group
    assert notes and any("early-stopping" in n for n in notes)  # fast_config has early stopping on


def test_smoothing_is_fastais_bias_corrected_average_and_a_blow_up_stops_the_run():
    p = nn.Parameter(torch.zeros(1))
    state = FitState(model=nn.Linear(1, 1), optimizer=torch.optim.SGD([p], lr=1e-3), scheduler=None,
                     config=None, steps_per_epoch=1)
    sweep = LrSweep(1e-3, 1.0, 50, beta=0.5, diverge=4.0)
    sweep.on_fit_start(state)
    losses = [2.0, 1.0, 0.2, 0.2, 1.0, 3.0, 9.0]
    for loss in losses:
        state.lr, state.loss = state.optimizer.param_groups[0]["lr"], loss
        sweep.on_step_end(state)
        if state.stop:
            break
    avg, expected = 0.0, []
    for k, loss in enumerate(losses[: len(sweep.smoothed)], 1):
        avg = 0.5 * avg + 0.5 * loss
        expected.append(avg / (1 - 0.5**k))
    assert sweep.smoothed == pytest.approx(expected)
    # smoothed: 2, 1.33, 0.69, 0.43, 0.72, 1.88 > 4 x 0.43: stops at step 6, before the last loss
    assert state.stop and len(sweep.smoothed) == 6 and sweep.stop_reason.startswith("diverged: smoothed loss")
    assert sweep.lrs == pytest.approx([1e-3 * sweep.factor**k for k in range(6)])


def test_a_real_run_blows_up_and_stops_early(blobs, fast_config):
    X, y = blobs
    # 30% of the labels flipped: on separable blobs the loss reaches 0 and no lr blows it up
    flip = np.random.default_rng(1).random(len(y)) < 0.3
    y = np.where(flip, np.random.default_rng(2).integers(0, 3, len(y)), y)
    result = lr_range_test(X, y, 3, fast_config, 0, start_lr=1e-4, end_lr=1e4, steps=80)
    assert result.stop_reason and result.stop_reason.startswith("diverged") and len(result.lrs) < 80
    last = result.smoothed[-1]
    assert not math.isfinite(last) or last > 4 * min(result.smoothed)
    assert result.suggestions["valley"] is not None and 1e-4 <= result.suggestions["valley"] < result.lrs[-1]


def test_same_seed_same_numbers_other_seed_other_numbers(blobs, fast_config):
    X, y = blobs
    kwargs = {"start_lr": 1e-4, "end_lr": 10.0, "steps": 40}
    a = lr_range_test(X, y, 3, fast_config, 5, **kwargs).to_json()
    b = lr_range_test(X, y, 3, fast_config, 5, **kwargs).to_json()
    c = lr_range_test(X, y, 3, fast_config, 6, **kwargs).to_json()
    assert a == b and a["losses"] != c["losses"]

