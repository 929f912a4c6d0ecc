"""The knobs of issue 12 beyond lr: each optimizer's own settings and the normalisation statistics.

Each knob must reach torch, change what a step does, be refused with one line when out of range, be
searchable, and keep the stacked trainer honest (train with fit() unless the stack implements it).
"""

import numpy as np
import pytest
import torch

from dlrig.errors import UserError
from dlrig.models import build_model
from dlrig.params import FitConfig, MlpParams, OptimParams, parse_params
from dlrig.train import fit, predict_proba
from dlrig.train.batched import FitJob, batch_key, fit_many
from dlrig.train.optim import build_optimizer

# knob -> (optimizer, non-default value, torch's name for it in param_groups)
KNOBS = {
    "dampening": ("sgd", 0.5, "dampening"),
    "amsgrad": ("adam", True, "amsgrad"),
    "centered": ("rmsprop", True, "centered"),
    "lr_decay": ("adagrad", 0.5, "lr_decay"),
    "initial_accumulator_value": ("adagrad", 1.0, "initial_accumulator_value"),
    "momentum_decay": ("nadam", 0.5, "momentum_decay"),
}


def trajectory(cfg: OptimParams, steps: int = 4) -> torch.Tensor:
    """The weights of a tiny linear model after ``steps`` steps on fixed gradients that shrink (so that
    amsgrad's running max of the second moment differs from the moment itself)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = build_optimizer(model, cfg)
    x = torch.randn(steps, 8, 3)
    for k in range(steps):
        opt.zero_grad()
        (((model(x[k]) - k) ** 2).mean() * 0.1**k).backward()
        opt.step()
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


@pytest.mark.parametrize("knob", list(KNOBS))
def test_each_knob_reaches_torch_and_changes_the_steps(knob):
    name, value, torch_name = KNOBS[knob]
    base = OptimParams(name=name, lr=0.05)
    changed = base.model_copy(update={knob: value})
    opt = build_optimizer(torch.nn.Linear(3, 2), changed)
    assert opt.param_groups[0][torch_name] == value
    assert not torch.allclose(trajectory(base), trajectory(changed))


@pytest.mark.parametrize("name", ["adam", "adamw", "nadam", "rmsprop", "adagrad", "adadelta"])
def test_every_optimizer_with_an_eps_gets_optim_eps(name):
    base = OptimParams(name=name, lr=0.05)
    big = base.model_copy(update={"eps": 0.5})
    assert build_optimizer(torch.nn.Linear(3, 2), big).param_groups[0]["eps"] == 0.5
    assert not torch.allclose(trajectory(base), trajectory(big))


@pytest.mark.parametrize(("raw", "line"), [
    ({"dampening": 1.5}, "params.yaml: optim.dampening must be <= 1 (got 1.5)"),
    ({"dampening": -0.1}, "params.yaml: optim.dampening must be >= 0 (got -0.1)"),
    ({"amsgrad": "yes"}, "params.yaml: optim.amsgrad must be true or false (got 'yes')"),
    ({"centered": 1}, "params.yaml: optim.centered must be true or false (got 1)"),
    ({"lr_decay": -1}, "params.yaml: optim.lr_decay must be >= 0 (got -1)"),
    ({"initial_accumulator_value": -0.5}, "params.yaml: optim.initial_accumulator_value must be >= 0 (got -0.5)"),
    ({"momentum_decay": -0.004}, "params.yaml: optim.momentum_decay must be >= 0 (got -0.004)"),
    ({"name": "sgd", "nesterov": True, "dampening": 0.1},
     "params.yaml: optim.nesterov needs dampening 0 with name=sgd (torch refuses it; got dampening 0.1)"),
    ({"eps": 0}, "params.yaml: optim.eps must be > 0 (got 0)"),
])
def test_bad_optimizer_knobs_give_one_line(raw, line):
    with pytest.raises(UserError) as err:
        parse_params({"optim": raw})
    assert str(err.value) == line


def test_the_knobs_are_searchable():
    space = {f"optim.{knob}": [OptimParams.model_fields[knob].default, value]
             for knob, (_, value, _) in KNOBS.items()}
    space |= {"model.norm_momentum": [0.01, 0.1], "model.norm_eps": {"low": 1e-5, "high": 1e-2, "log": True}}
    assert parse_params({"search": {"space": space}}).search.space.keys() == space.keys()
    with pytest.raises(UserError, match="search.space.optim.lr_decay: optim.lr_decay must be >= 0"):
        parse_params({"search": {"space": {"optim.lr_decay": [-1.0, 0.1]}}})


# ----------------------------------------------------------------------------------- normalisation
@pytest.mark.parametrize("family", ["mlp", "cnn", "rnn"])
def test_norm_knobs_reach_every_norm_layer(family):
    for norm, types in (("batch", (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)),
                        ("layer", (torch.nn.LayerNorm, torch.nn.GroupNorm))):
        config = FitConfig().with_overrides({"model.name": family, "model.norm": norm,
                                             "model.norm_momentum": 0.3, "model.norm_eps": 0.01})
        model = build_model(config.model, [1, 8, 8], 10)
        layers = [m for m in model.modules() if isinstance(m, types)]
        assert layers and all(m.eps == 0.01 for m in layers), (family, norm)
        if norm == "batch":
            assert all(m.momentum == 0.3 for m in layers)


def test_norm_momentum_sets_how_fast_running_statistics_move():
    x = torch.randn(32, 4) * 3 + 5

    def running_mean(momentum):
        torch.manual_seed(0)
        model = build_model(MlpParams(hidden=6, depth=1, norm="batch", norm_momentum=momentum), [4], 2)
        model.train()
        model(x)
        bn = model[3]  # Standardize, Flatten, Linear, BatchNorm1d
        batch_mean = model[2](model[1](model[0](x))).mean(0)
        return bn.running_mean, batch_mean

    for momentum in (0.1, 0.5):
        got, batch = running_mean(momentum)
        assert torch.allclose(got, momentum * batch.detach(), atol=1e-6)  # from zeros: momentum * mean


def test_norm_eps_changes_the_output():
    torch.manual_seed(0)
    small = build_model(MlpParams(hidden=6, depth=1, norm="layer"), [4], 2)
    large = build_model(MlpParams(hidden=6, depth=1, norm="layer", norm_eps=10.0), [4], 2)
    large.load_state_dict(small.state_dict())
    x = torch.randn(5, 4)
    assert not torch.allclose(small(x), large(x))


@pytest.mark.parametrize(("raw", "line"), [
    ({"norm_momentum": 0}, "params.yaml: model.norm_momentum must be > 0 (got 0)"),
    ({"norm_momentum": 1.5}, "params.yaml: model.norm_momentum must be <= 1 (got 1.5)"),
    ({"norm_eps": 0}, "params.yaml: model.norm_eps must be > 0 (got 0)"),
    ({"name": "rnn", "norm_eps": -1}, "params.yaml: model.norm_eps must be > 0 (got -1)"),
])
def test_bad_norm_knobs_give_one_line(raw, line):
    with pytest.raises(UserError) as err:
        parse_params({"model": raw})
    assert str(err.value) == line


# ------------------------------------------------------------------------------ the stacked trainer
BASE = FitConfig().with_overrides({"model.hidden": 16, "model.depth": 2, "model.dropout": 0.0,
                                   "train.epochs": 5, "train.batch_size": 32})


def test_knobs_the_stack_does_not_implement_train_with_fit():
    key = batch_key(BASE)
    assert key is not None
    # they change sgd / adam: not implemented by the stack, so fit() trains them
    assert batch_key(BASE.with_overrides({"optim.amsgrad": True})) is None
    assert batch_key(BASE.with_overrides({"optim.name": "sgd", "optim.dampening": 0.5})) is None
    # they belong to other optimizers: an adam stack is the same without them
    for knob in ("centered", "lr_decay", "initial_accumulator_value", "momentum_decay"):
        value = KNOBS[knob][1]
        assert batch_key(BASE.with_overrides({f"optim.{knob}": value})) == key, knob
    for name in ("rmsprop", "adagrad", "nadam"):
        assert batch_key(BASE.with_overrides({"optim.name": name})) is None
    # norm statistics are architecture: shared by a stack, so a different value is another stack
    assert batch_key(BASE.with_overrides({"model.norm_momentum": 0.3})) not in (None, key)
    assert batch_key(BASE.with_overrides({"model.norm_eps": 1e-3})) not in (None, key)


def test_the_stack_trains_non_default_norm_statistics_as_fit_does():
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 1.5, size=(3, 10))
    y = rng.integers(0, 3, 200)
    X = (centers[y] + rng.normal(0, 1, (200, 10))).astype(np.float32)
    config = BASE.with_overrides({"model.norm": "batch", "model.norm_momentum": 0.4, "model.norm_eps": 0.01,
                                  "optim.name": "sgd", "optim.lr": 0.05})  # sgd: see test_batched.py
    jobs = [FitJob(np.arange(0, 150), config, seed=0), FitJob(np.arange(40, 200), config, seed=1)]
    for job, result in zip(jobs, fit_many(X, y, 3, jobs), strict=True):
        ref = fit(X[job.train_index], y[job.train_index], 3, job.config, job.seed)
        assert result.info["batched"] and result.info["group_size"] == 2
        bn = [m for m in result.model.modules() if isinstance(m, torch.nn.BatchNorm1d)]
        assert bn and all(m.momentum == 0.4 and m.eps == 0.01 for m in bn)
        for got, want in zip(result.history, ref.history, strict=True):
            assert got["train_loss"] == pytest.approx(want["train_loss"], rel=1e-4)
        assert np.allclose(predict_proba(result.model, X), predict_proba(ref.model, X), atol=1e-3)
