import pytest
import torch

from dlrig.params import ScheduleParams
from dlrig.train.optim import build_optimizer, build_scheduler, lr_factor


def test_warmup_then_cosine_reaches_the_floor():
    cfg = ScheduleParams(name="cosine", warmup_epochs=2, min_lr_ratio=0.1)
    factors = [lr_factor(cfg, s, epochs=10, steps_per_epoch=5) for s in range(50)]
    assert factors[0] == pytest.approx(1 / 10) and factors[9] == pytest.approx(1.0)
    assert factors[10] == pytest.approx(1.0)
    assert factors[-1] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + torch.cos(torch.tensor(39 / 40 * torch.pi)).item()))
    assert all(a >= b for a, b in zip(factors[10:], factors[11:], strict=False))  # monotone decay after warm-up


def test_step_and_exponential_schedules():
    step = ScheduleParams(name="step", step_size=3, gamma=0.5)
    assert [lr_factor(step, e * 4, 10, 4) for e in (0, 2, 3, 6)] == [1.0, 1.0, 0.5, 0.25]
    expo = ScheduleParams(name="exponential", gamma=0.9)
    assert lr_factor(expo, 8, 10, 4) == pytest.approx(0.81)


def test_onecycle_peaks_at_lr():
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = build_scheduler(opt, ScheduleParams(name="onecycle"), 0.1, epochs=10, steps_per_epoch=10)
    lrs = []
    for _ in range(100):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert max(lrs) == pytest.approx(0.1, rel=0.02) and lrs[-1] < 0.001


def test_weight_decay_skips_biases():
    from dlrig.params import OptimParams

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    opt = build_optimizer(model, OptimParams(name="adamw", weight_decay=0.1))
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] == 0.1 and [p.shape for p in decayed["params"]] == [(4, 3)]
    assert plain["weight_decay"] == 0.0 and len(plain["params"]) == 3
