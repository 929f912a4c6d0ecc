"""Stacked transformers (dlrig.train.stacked_attn, a composite layer of dlrig.train.stacked_func) train each
model as fit() does, to float tolerance, and a model's bytes do not depend on its stack mates (dropout
masks from the model's own generator; a model without dropout is untouched by a dropping mate)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dlrig.params import FitConfig
from dlrig.train import fit, predict_proba
from dlrig.train.batched import FitJob
from dlrig.train.stacked_func import fit_stacked, stack_key, trains_stacked

TRANSFORMER = {"model.name": "transformer", "model.d_model": 8, "model.heads": 2, "model.ff_size": 16,
               "model.layers": 2, "model.depth": 1, "model.dropout": 0.0, "model.attention_dropout": 0.0, "train.epochs": 2,
               "train.batch_size": 16, "train.early_stopping": None}


def _data(n=70, seed=0, shape=(1, 8, 8)):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    X = rng.normal(size=(n, *shape)).astype(np.float32)
    X.reshape(n, -1)[np.arange(n), y * 3] += 3.0  # a learnable feature per class
    return X, y


@pytest.mark.parametrize(("over", "shape"), [
    ({}, (1, 8, 8)),  # rows of an image, pre-norm, learned positions, mean pooling, adam
    ({"model.pooling": "cls", "model.norm_first": False, "model.positional": "sinusoidal",
      "optim.name": "sgd", "optim.momentum": 0.9, "optim.weight_decay": 0.01}, (1, 8, 8)),
    ({"model.activation": "gelu", "model.positional": "none", "model.depth": 2, "model.hidden": 8,
      "model.norm": "layer"}, (10,)),  # a table: one token per feature; a dense head after the body
    ({"model.tokens": "patches", "model.patch_size": 4, "model.pooling": "cls"}, (2, 8, 8)),
])
def test_each_stacked_model_matches_its_own_fit(over, shape):
    X, y = _data(shape=shape)
    config = FitConfig().with_overrides({**TRANSFORMER, **over})
    assert stack_key(config, X.shape[1:], 3) is not None and trains_stacked(config, X.shape[1:], 3)
    # uneven row counts in one stack (padded, masked batches), each with its own seed
    jobs = [FitJob(np.arange(0, 60), config, 1), FitJob(np.arange(5, 66), config, 2),
            FitJob(np.arange(10, 70), config, 3)]
    stacked = fit_stacked(X, y, 3, jobs)
    for job, result in zip(jobs, stacked, strict=True):
        alone = fit(X[job.train_index], y[job.train_index], 3, config, job.seed)
        assert result.info["stacked"] == "stacked_func" and result.info["group_size"] == 3
        assert [r["epoch"] for r in result.history] == [r["epoch"] for r in alone.history] == [1, 2]
        for a, b in zip(result.history, alone.history, strict=True):
            assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        np.testing.assert_allclose(predict_proba(result.model, X), predict_proba(alone.model, X), atol=2e-4)


def test_embedded_codes_match_fit_and_bad_codes_are_refused_as_fit_refuses_them():
    from dlrig.errors import UserError

    rng = np.random.default_rng(0)
    y = np.arange(70) % 3
    X = rng.integers(0, 5, size=(70, 6)).astype(np.float32)
    X[:, 2] = y  # the label, as a code
    config = FitConfig().with_overrides({**TRANSFORMER, "model.tokens": "embed", "model.vocab_size": 5,
                                         "train.standardize": "none"})
    assert stack_key(config, X.shape[1:], 3) is not None
    jobs = [FitJob(np.arange(0, 60), config, 1), FitJob(np.arange(5, 66), config, 2)]
    for job, result in zip(jobs, fit_stacked(X, y, 3, jobs), strict=True):
        alone = fit(X[job.train_index], y[job.train_index], 3, config, job.seed)
        assert result.history[-1]["train_loss"] == pytest.approx(alone.history[-1]["train_loss"], rel=1e-4)
        np.testing.assert_allclose(predict_proba(result.model, X), predict_proba(alone.model, X), atol=2e-4)
    X[3, 0] = 7.0  # out of the vocabulary
    with pytest.raises(UserError, match="model.tokens: embed needs integer codes 0..4"):
        fit_stacked(X, y, 3, jobs)


def _jobs_around(job):
    """``job`` third in a stack of 4 with other configs (dropout rates too), rows and seeds (same steps per
    epoch)."""
    other = job.config.with_overrides({"optim.lr": 0.003, "optim.weight_decay": 0.01, "model.dropout": 0.3,
                                       "model.attention_dropout": 0.2})
    twin = job.config.with_overrides({"model.dropout": 0.0 if job.config.model.dropout else 0.3,
                                      "model.attention_dropout": 0.0 if job.config.model.attention_dropout else 0.3})
    return [FitJob(np.arange(5, 66), other, 11), FitJob(np.arange(0, 61), twin, 12), job,
            FitJob(np.arange(9, 70), other, 13)]


@pytest.mark.parametrize("over", [
    {},  # no dropout anywhere in the job; mates drop at 0.3
    {"model.dropout": 0.2, "model.attention_dropout": 0.1},  # its own masks, attention weights included
    {"model.pooling": "cls", "model.norm_first": False, "model.tokens": "patches", "model.patch_size": 4},
])
def test_a_models_bytes_do_not_depend_on_its_stack_mates(over):
    """The fit cache keys a fit by its own config, rows and seed: trained alone or among others, the same
    job gives the same bytes."""
    X, y = _data()
    config = FitConfig().with_overrides({**TRANSFORMER, "optim.weight_decay": 1e-3, **over})
    job = FitJob(np.arange(3, 63), config, 5)
    alone, = fit_stacked(X, y, 3, [job])
    among = fit_stacked(X, y, 3, _jobs_around(job))
    assert (alone.info["group_size"], among[2].info["group_size"]) == (1, 4)
    assert alone.history == among[2].history
    for (name, a), b in zip(alone.model.state_dict().items(), among[2].model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert among[0].history != among[3].history  # the mates did train, each its own way


def test_dropout_trains_and_draws_each_site_from_the_models_own_generator(monkeypatch):
    """Every dropout site of the body draws a mask per step (none for a model at rate 0); rates read from the
    model itself; a model trained with dropout still learns and predicts deterministically."""
    import dlrig.train.stacked_func as sf

    masks = []
    real = sf._dropout_mask
    monkeypatch.setattr(sf, "_dropout_mask", lambda *a: masks.append((a[1], a[2])) or real(*a))
    X, y = _data()
    config = FitConfig().with_overrides({**TRANSFORMER, "model.dropout": 0.3, "model.attention_dropout": 0.2,
                                         "train.epochs": 3, "optim.lr": 3e-3})
    plain = config.with_overrides({"model.dropout": 0.0})  # same attention dropout: same stack
    dropped, kept = fit_stacked(X, y, 3, [FitJob(np.arange(60), config, 1), FitJob(np.arange(60), plain, 1)])
    assert dropped.info["group_size"] == 2
    # per step: body dropout + 2 layers x (attention, feed-forward, dropout1, dropout2); 4 steps x 3 epochs
    assert len(masks) == (1 + 2 * 4) * 4 * 3
    shapes = {tuple(shape) for _, shape in masks}
    assert shapes == {(17, 8, 8), (17, 8, 16), (17, 2, 8, 8)}  # tokens, feed-forward, attention weights
    assert {tuple(k) for k, shape in masks if len(shape) == 4} == {(0.8, 0.8)}
    assert {tuple(round(v, 6) for v in k) for k, shape in masks if len(shape) == 3} == {(0.7, 1.0)}
    assert dropped.history != kept.history
    assert all(np.isfinite(r["train_loss"]) for r in dropped.history)
    assert dropped.history[-1]["train_loss"] < dropped.history[0]["train_loss"]
    assert not dropped.model.training
    np.testing.assert_array_equal(predict_proba(dropped.model, X), predict_proba(dropped.model, X))


def test_options_without_a_stacked_form_train_with_fit():
    X, _ = _data()
    assert stack_key(FitConfig().with_overrides({**TRANSFORMER, "model.norm": "batch"}), X.shape[1:], 3) is None
    config = FitConfig().with_overrides({**TRANSFORMER, "train.grad_clip": 1.0})
    assert stack_key(config, X.shape[1:], 3) is None
