"""Stacked recurrent nets (dlrig.train.stacked_rnn inside dlrig.train.stacked_func) train each model as fit()
does with torch's nn.LSTM / GRU / RNN, to float tolerance; a model's bytes do not depend on its stack mates;
torch's inter-layer dropout is drawn per model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dlrig.params import FitConfig
from dlrig.train import fit, predict_proba
from dlrig.train.batched import FitJob
from dlrig.train.stacked_func import fit_stacked, stack_key, trains_stacked

RNN = {"model.name": "rnn", "model.hidden_size": 12, "model.depth": 1, "model.dropout": 0.0, "train.epochs": 3,
       "train.batch_size": 16, "train.early_stopping": None}


def _data(n=70, seed=0, table=False):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    X = rng.normal(size=(n, 1, 8, 8)).astype(np.float32)
    X[:, 0, y, y] += 3.0  # a learnable pixel per class
    return (X[:, 0, :4, :4].reshape(n, 16), y) if table else (X, y)


CASES = [
    ({}, False),  # lstm, one layer, rows, last
    ({"model.cell": "gru", "model.layers": 2, "model.bidirectional": True, "optim.name": "sgd",
      "optim.momentum": 0.9, "optim.lr": 0.05}, False),
    ({"model.cell": "rnn", "model.activation": "relu", "model.readout": "mean", "model.sequence": "pixels",
      "model.hidden_size": 8, "schedule.name": "cosine"}, False),
    ({"model.cell": "lstm", "model.layers": 2, "model.bidirectional": True, "model.readout": "mean",
      "model.depth": 2, "model.hidden": 16, "model.norm": "layer", "optim.name": "rmsprop"}, False),
    ({"model.cell": "gru", "model.sequence": "pixels", "optim.weight_decay": 0.01}, True),  # a table [16]
    ({"model.cell": "rnn", "model.bidirectional": True, "model.sequence": "rows"}, True),
]


@pytest.mark.parametrize(("over", "table"), CASES)
def test_each_stacked_model_matches_its_own_fit(over, table):
    X, y = _data(table=table)
    config = FitConfig().with_overrides({**RNN, **over})
    assert stack_key(config, X.shape[1:], 3) is not None
    assert trains_stacked(config, X.shape[1:], 3)
    # uneven row counts in one stack (padded, masked batches), each with its own seed
    jobs = [FitJob(np.arange(0, 60), config, 1), FitJob(np.arange(5, 66), config, 2),
            FitJob(np.arange(10, 70), config, 3)]
    stacked = fit_stacked(X, y, 3, jobs)
    for job, result in zip(jobs, stacked, strict=True):
        alone = fit(X[job.train_index], y[job.train_index], 3, config, job.seed)
        assert result.info["stacked"] == "stacked_func" and result.info["group_size"] == 3
        assert [r["epoch"] for r in result.history] == [r["epoch"] for r in alone.history] == [1, 2, 3]
        for a, b in zip(result.history, alone.history, strict=True):
            assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
            assert a["train_accuracy"] == pytest.approx(b["train_accuracy"], abs=1.5 / len(job.train_index))
        np.testing.assert_allclose(predict_proba(result.model, X), predict_proba(alone.model, X), atol=2e-4)
        assert type(result.model[1].rnn) is type(alone.model[1].rnn)  # torch's own module for prediction


def _jobs_around(job):
    """``job`` in the middle of a stack of 4 with other configs (dropout rates too), rows and seeds (same
    steps per epoch)."""
    other = job.config.with_overrides({"optim.lr": 0.003, "optim.weight_decay": 0.01, "model.dropout": 0.5})
    twin = job.config.with_overrides({"model.dropout": 0.0 if job.config.model.dropout else 0.3})
    return [FitJob(np.arange(5, 66), other, 11), FitJob(np.arange(0, 61), twin, 12), job,
            FitJob(np.arange(9, 70), other, 13)]


@pytest.mark.parametrize("over", [
    {"model.cell": "gru", "model.hidden_size": 16, "model.readout": "mean", "optim.name": "rmsprop"},
    {"model.cell": "lstm", "model.hidden_size": 8, "model.layers": 2, "model.bidirectional": True,
     "model.depth": 2, "model.hidden": 16},
    {"model.cell": "rnn", "model.hidden_size": 12, "model.sequence": "pixels", "model.layers": 2,
     "model.dropout": 0.2, "optim.name": "sgd"},  # dropout on, among mates with rates 0.5 and 0
])
def test_a_models_bytes_do_not_depend_on_its_stack_mates(over):
    """The fit cache keys a fit by its own config, rows and seed: alone or among others, the same bytes."""
    X, y = _data()
    config = FitConfig().with_overrides({**RNN, "train.epochs": 2, **over})
    job = FitJob(np.arange(3, 63), config, 5)
    alone, = fit_stacked(X, y, 3, [job])
    among = fit_stacked(X, y, 3, _jobs_around(job))[2]
    assert (alone.info["group_size"], among.info["group_size"]) == (1, 4)
    assert alone.history == among.history
    for (name, a), b in zip(alone.model.state_dict().items(), among.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("over", [
    # widths no multiple of a vector (gates 3 x 5, 4 x 7, 1 x 6, 3 x 13): unaligned models and element-wise
    # tails, which gave other bits before stacked_rnn._buffer / _right
    {"model.cell": "gru", "model.hidden_size": 5, "model.readout": "mean"},
    {"model.cell": "lstm", "model.hidden_size": 7, "model.layers": 2, "model.bidirectional": True},
    {"model.cell": "rnn", "model.hidden_size": 6, "model.sequence": "pixels", "model.activation": "relu"},
    {"model.cell": "gru", "model.hidden_size": 13, "model.layers": 2, "model.bidirectional": True},
])
def test_the_recurrent_layer_gives_a_model_its_own_bits_in_any_stack(over):
    """The composite alone, forward and backward: model r's output and gradients are the same bytes in a
    stack of 1, 2 or 4 (its parameters views of a shared master copy at any offset, as in the stack)."""
    from dlrig.models import build_model
    from dlrig.models.rnn import Recurrent
    from dlrig.train.stacked_rnn import COMPOSITES

    config = FitConfig().with_overrides({**RNN, **over})
    torch.manual_seed(0)
    modules = [build_model(config.model, (1, 8, 8), 3)[1] for _ in range(4)]
    names = [n for n, _ in modules[0].named_parameters()]
    x, g_out = torch.randn(4, 17, 1, 8, 8), None
    seen = {}
    for members in ([2], [2, 3], [0, 1, 2, 3], [3, 1, 2]):
        # a master copy [M, P] with an odd P, each parameter a view of it (as stacked_func's theta)
        theta = torch.cat([torch.cat([modules[r].get_parameter(n).detach().reshape(-1) for n in names]
                                     + [torch.zeros(3)]) for r in members]).view(len(members), -1)
        params, at = {}, 0
        for n in names:
            shape = modules[0].get_parameter(n).shape
            params[n] = theta[:, at: at + shape.numel()].view(len(members), *shape).requires_grad_()
            at += shape.numel()
        out = COMPOSITES[Recurrent].forward(modules[0], "", params, {}, x[members], None)
        g_out = torch.randn(4, *out.shape[1:]) if g_out is None else g_out
        grads = torch.autograd.grad((out * g_out[members]).sum(), list(params.values()))
        k = members.index(2)
        mine = [out[k].detach(), *(g[k] for g in grads)]
        reference = seen.setdefault("model 2", mine)
        assert [torch.equal(a, b) for a, b in zip(mine, reference, strict=True)] == [True] * len(mine), members
    torch.testing.assert_close(reference[0], modules[2](x[2]), rtol=1e-5, atol=1e-6)  # torch's own numbers


def test_inter_layer_dropout_is_drawn_per_model_and_trains(monkeypatch):
    """Two layers, dropout 0.5: torch's dropout between the layers is a stack site with its own masks
    (keeping about half, per model); a dropout-0 mate draws nothing and trains as it does alone."""
    import dlrig.train.stacked_func as sf

    masks = []
    real = sf._dropout_mask
    monkeypatch.setattr(sf, "_dropout_mask", lambda *a: masks.append(real(*a)) or masks[-1])
    X, y = _data()
    config = FitConfig().with_overrides({**RNN, "model.layers": 2, "model.dropout": 0.5, "optim.lr": 0.01,
                                         "train.epochs": 6})
    quiet = config.with_overrides({"model.dropout": 0.0})
    assert stack_key(config, X.shape[1:], 3) == stack_key(quiet, X.shape[1:], 3) is not None
    dropping, kept = fit_stacked(X, y, 3, [FitJob(np.arange(60), config, 1), FitJob(np.arange(60), quiet, 2)])
    # per step: the site between the layers ([T, W, H] per model), then the read-out's dropout
    assert len(masks) == 2 * 4 * 6 and masks[0].shape == (2, 8, 17, 12) and masks[1].shape == (2, 17, 12)
    inner = torch.cat([m[0].reshape(-1) for m in masks[::2]])
    assert (inner > 0).float().mean().item() == pytest.approx(0.5, abs=0.02)
    assert all(torch.equal(m[1], torch.ones_like(m[1])) for m in masks)  # the dropout-0 mate: exactly 1
    assert not torch.equal(masks[0][0, 0], masks[0][0, 1])  # fresh masks at each time step too
    losses = [r["train_loss"] for r in dropping.history]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    masks.clear()
    alone, = fit_stacked(X, y, 3, [FitJob(np.arange(60), quiet, 2)])
    assert masks == [] and alone.history == kept.history
    assert all(torch.equal(p, q) for p, q in zip(alone.model.parameters(), kept.model.parameters(), strict=True))


def test_the_sites_follow_the_layers():
    from dlrig.models import build_model
    from dlrig.models.rnn import Recurrent
    from dlrig.train.stacked_rnn import COMPOSITES

    for layers, dropout, sites in ((1, 0.3, {}), (3, 0.3, {"rnn.between.0": 0.3, "rnn.between.1": 0.3}),
                                   (2, 0.0, {"rnn.between.0": 0.0})):
        config = FitConfig().with_overrides({**RNN, "model.layers": layers, "model.dropout": dropout})
        module = build_model(config.model, (1, 8, 8), 3)[1]
        assert COMPOSITES[Recurrent].dropouts(module) == pytest.approx(sites)


def test_which_recurrent_configs_stack():
    """Every cell, depth, direction, sequence and read-out stacks; an LSTM of more than 256 steps x hidden
    size trains with fit() (torch's fused CPU LSTM is faster there), as does a hidden size of 1."""
    X, y = _data()
    for over in ({}, {"model.cell": "gru", "model.hidden_size": 64}, {"model.cell": "rnn", "model.hidden_size": 128},
                 {"model.hidden_size": 32, "model.layers": 3, "model.bidirectional": True, "model.dropout": 0.3},
                 {"model.cell": "gru", "model.sequence": "pixels", "model.readout": "mean"}):
        config = FitConfig().with_overrides({**RNN, **over})
        assert stack_key(config, X.shape[1:], 3) is not None and trains_stacked(config, X.shape[1:], 3), over
    for over in ({"model.hidden_size": 64}, {"model.sequence": "pixels"}, {"model.cell": "gru", "model.hidden_size": 1},
                 {"train.early_stopping": {"patience": 2}}):
        config = FitConfig().with_overrides({**RNN, **over})
        assert stack_key(config, X.shape[1:], 3) is None, over
    config = FitConfig().with_overrides({**RNN, "model.hidden_size": 64, "train.epochs": 1})
    result, = fit_stacked(X, y, 3, [FitJob(np.arange(60), config, 1)])
    assert result.info["stacked"] is False


def test_a_second_forward_before_the_backward_fails_loudly():
    """The layer's buffers are kept from step to step (stacked_rnn._space): reusing them while an earlier
    graph still needs them must raise, never backpropagate through overwritten numbers."""
    from dlrig.models import build_model
    from dlrig.models.rnn import Recurrent
    from dlrig.train.stacked_rnn import COMPOSITES

    module = build_model(FitConfig().with_overrides(RNN).model, (1, 8, 8), 3)[1]
    params = {n: p.detach()[None].clone().requires_grad_() for n, p in module.named_parameters()}
    x = torch.randn(1, 5, 1, 8, 8)
    first = COMPOSITES[Recurrent].forward(module, "", params, {}, x, None)
    COMPOSITES[Recurrent].forward(module, "", params, {}, 2 * x, None)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        torch.autograd.grad(first.sum(), list(params.values()))
