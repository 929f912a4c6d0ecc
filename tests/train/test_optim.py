import pytest
import torch

from dlrig.params import OptimParams, ScheduleParams
from dlrig.train.optim import (
    ADAM_NO_STEP,
    adam_coefficients,
    adam_update,
    add_weight_decay,
    build_optimizer,
    build_scheduler,
    lr_factor,
    schedule_at,
    sgd_update,
)


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
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    opt = build_optimizer(model, OptimParams(name="adamw", weight_decay=0.1))
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] == 0.1 and [p.shape for p in decayed["params"]] == [(4, 3)]
    assert plain["weight_decay"] == 0.0 and len(plain["params"]) == 3


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("warmup", [0, 2])
@pytest.mark.parametrize("name", ["constant", "step", "exponential", "cosine", "onecycle"])
def test_schedule_at_is_the_schedulers_lr_over_a_whole_run(name, warmup, optimizer):
    """The stacked trainer's schedule (schedule_at) against fit()'s torch scheduler, bit for bit, at every
    step of a run and after the last one (the lr a history record reports)."""
    cfg = ScheduleParams(name=name, warmup_epochs=warmup, step_size=2, gamma=0.7, min_lr_ratio=0.05)
    epochs, steps, lr = 7, 5, 0.05
    model = torch.nn.Linear(2, 2)
    opt = build_optimizer(model, OptimParams(name=optimizer, lr=lr, momentum=0.8))
    sched = build_scheduler(opt, cfg, lr, epochs, steps)
    for k in range(epochs * steps + 1):
        got, cycled = schedule_at(cfg, lr, k, epochs, steps)
        for group in opt.param_groups:
            assert got == group["lr"], k
            momentum = group["betas"][0] if optimizer == "adam" else group["momentum"]
            assert cycled == (momentum if name == "onecycle" else None), k
        if k < epochs * steps:
            opt.step()
            sched.step()


def _rows_and_torch(optimizer, seed=0):
    """Three rows of 8 parameters (first 5 a 'weight', decayed; last 3 a 'bias'), each row with its own
    hyperparameters, and per row a torch optimizer over the same numbers (decay on the weight only)."""
    gen = torch.Generator().manual_seed(seed)
    theta = torch.randn(3, 8, generator=gen)
    cfgs = [OptimParams(name=optimizer, lr=lr, weight_decay=wd, momentum=m, beta1=b1, beta2=b2, eps=eps)
            for lr, wd, m, b1, b2, eps in ((0.1, 0.0, 0.9, 0.9, 0.999, 1e-8), (0.03, 0.05, 0.0, 0.8, 0.99, 1e-6),
                                           (0.2, 0.3, 0.5, 0.5, 0.9, 1e-3))]
    refs = []
    for r, cfg in enumerate(cfgs):
        model = torch.nn.Linear(5, 1)  # weight [1, 5] decayed, bias [1]: replaced by this row's numbers
        weight = torch.nn.Parameter(theta[r, :5].clone().view(1, 5))
        bias = torch.nn.Parameter(theta[r, 5:].clone())
        model.weight, model.bias = weight, bias
        refs.append((model, build_optimizer(model, cfg)))
    return theta, cfgs, refs, gen


def _col(values):
    return torch.tensor(values, dtype=torch.float32).reshape(-1, 1)


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_update_is_torch_sgd_row_by_row(nesterov):
    theta, cfgs, refs, gen = _rows_and_torch("sgd")
    for _, opt in refs:
        for group in opt.param_groups:  # torch refuses nesterov without momentum (row 1)
            group["nesterov"] = nesterov and group["momentum"] > 0
    buf = torch.zeros_like(theta)
    momentum = _col([c.momentum for c in cfgs])
    neg_lr, wd = _col([-c.lr for c in cfgs]), _col([c.weight_decay for c in cfgs])
    for _ in range(4):
        grad = torch.randn(3, 8, generator=gen)
        for r, (model, opt) in enumerate(refs):
            model.weight.grad, model.bias.grad = grad[r, :5].view(1, 5).clone(), grad[r, 5:].clone()
            opt.step()
        add_weight_decay(grad[:, :5], theta[:, :5], wd)
        sgd_update(theta, grad, buf, momentum, neg_lr, nesterov=nesterov)
        want = torch.stack([torch.cat([m.weight.detach().reshape(-1), m.bias.detach()]) for m, _ in refs])
        assert torch.allclose(theta, want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_adam_update_is_torch_adam_row_by_row(optimizer):
    theta, cfgs, refs, gen = _rows_and_torch(optimizer)
    moments = torch.zeros_like(theta), torch.zeros_like(theta)
    for step in range(1, 5):
        grad = torch.randn(3, 8, generator=gen)
        for r, (model, opt) in enumerate(refs):
            model.weight.grad, model.bias.grad = grad[r, :5].view(1, 5).clone(), grad[r, 5:].clone()
            opt.step()
        table = [adam_coefficients(c.lr, c.beta1, c.beta2, c.eps, c.weight_decay, step) for c in cfgs]
        coefficients = [_col(column) for column in zip(*table, strict=True)]
        if optimizer == "adamw":
            theta[:, :5].mul_(coefficients[6])
        else:
            add_weight_decay(grad[:, :5], theta[:, :5], _col([c.weight_decay for c in cfgs]))
        adam_update(theta, grad, *moments, coefficients)
        want = torch.stack([torch.cat([m.weight.detach().reshape(-1), m.bias.detach()]) for m, _ in refs])
        assert torch.allclose(theta, want, rtol=1e-5, atol=1e-7)
    # the coefficients of "no step" leave parameters and moments exactly as they are
    before = theta.clone(), moments[0].clone(), moments[1].clone()
    adam_update(theta, torch.randn(3, 8, generator=gen), *moments, ADAM_NO_STEP)
    assert all(torch.equal(a, b) for a, b in zip(before, (theta, *moments), strict=True))
