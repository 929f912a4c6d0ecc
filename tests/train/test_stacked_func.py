"""torch.func stacking (dlrig.train.stacked_func) trains each model as fit() does, to float tolerance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dlrig.params import FitConfig
from dlrig.train import fit, predict_proba
from dlrig.train.batched import FitJob
from dlrig.train.stacked_func import fit_stacked, stack_key

CNN = {"model.name": "cnn", "model.channels": [4], "model.hidden": 16, "model.depth": 2, "model.dropout": 0.0,
       "train.epochs": 3, "train.batch_size": 16, "train.early_stopping": None}


def _data(n=70, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    X = rng.normal(size=(n, 1, 8, 8)).astype(np.float32)
    X[:, 0, y, y] += 3.0  # a learnable pixel per class
    return X, y


@pytest.mark.parametrize("over", [
    {},
    {"optim.name": "sgd", "optim.momentum": 0.9, "schedule.name": "cosine", "train.label_smoothing": 0.1},
    {"optim.name": "adamw", "optim.weight_decay": 0.01, "schedule.name": "onecycle"},
    {"optim.name": "rmsprop", "schedule.name": "step", "schedule.step_size": 1},
])
def test_each_stacked_model_matches_its_own_fit(over):
    X, y = _data()
    config = FitConfig().with_overrides({**CNN, **over})
    assert stack_key(config, X.shape[1:], 3) is not None
    # uneven row counts in one stack (padded, masked batches), each with its own seed
    jobs = [FitJob(np.arange(0, 60), config, 1), FitJob(np.arange(5, 66), config, 2),
            FitJob(np.arange(10, 70), config, 3)]
    stacked = fit_stacked(X, y, 3, jobs)
    for job, result in zip(jobs, stacked, strict=True):
        alone = fit(X[job.train_index], y[job.train_index], 3, config, job.seed)
        assert result.info["stacked"] == "torch.func"
        assert [r["epoch"] for r in result.history] == [r["epoch"] for r in alone.history]
        for a, b in zip(result.history, alone.history, strict=True):
            assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
            assert a["lr"] == pytest.approx(b["lr"], rel=1e-6)
            assert a["train_accuracy"] == pytest.approx(b["train_accuracy"], abs=1.5 / len(job.train_index))
        np.testing.assert_allclose(predict_proba(result.model, X), predict_proba(alone.model, X), atol=2e-4)
        np.testing.assert_array_equal(result.train_index, job.train_index)


def test_models_with_other_optimizer_settings_share_one_stack():
    X, y = _data()
    configs = [FitConfig().with_overrides({**CNN, "optim.lr": lr, "optim.weight_decay": wd})
               for lr, wd in ((1e-3, 0.0), (1e-2, 1e-3))]
    assert stack_key(configs[0], X.shape[1:], 3) == stack_key(configs[1], X.shape[1:], 3)
    jobs = [FitJob(np.arange(60), c, 4) for c in configs]
    stacked = fit_stacked(X, y, 3, jobs)
    assert stacked[0].history[0]["lr"] != stacked[1].history[0]["lr"]  # each model its own schedule
    assert {r.info["group_size"] for r in stacked} == {2}
    for job, result in zip(jobs, stacked, strict=True):
        alone = fit(X[job.train_index], y[job.train_index], 3, job.config, job.seed)
        assert [r["lr"] for r in result.history] == pytest.approx([r["lr"] for r in alone.history])
        assert result.history[-1]["train_loss"] == pytest.approx(alone.history[-1]["train_loss"], rel=1e-4)


def test_the_same_seed_gives_the_same_initial_weights():
    X, y = _data()
    config = FitConfig().with_overrides({**CNN, "train.epochs": 1, "optim.lr": 1e-12})  # barely moves
    first, = fit_stacked(X, y, 3, [FitJob(np.arange(60), config, 7)])
    torch.manual_seed(7)
    from dlrig.models import build_model

    init = build_model(config.model, X.shape[1:], 3)
    for (name, p), q in zip(first.model.named_parameters(), init.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=0, msg=name)


def test_unsupported_settings_train_with_fit():
    X, y = _data()
    for over in ({"model.dropout": 0.2}, {"train.early_stopping": {"patience": 2}}, {"train.grad_clip": 1.0},
                 {"model.norm": "batch"}, {"train.loss.name": "focal"}):
        config = FitConfig().with_overrides({**CNN, **over})
        assert stack_key(config, X.shape[1:], 3) is None, over
    config = FitConfig().with_overrides({**CNN, "model.dropout": 0.2, "train.epochs": 1})
    result, = fit_stacked(X, y, 3, [FitJob(np.arange(60), config, 1)])
    assert result.info["stacked"] is False


def test_on_a_cpu_the_scorer_fits_cnns_one_by_one(monkeypatch):
    """A stacked CNN's last bits depend on its stack mates; a cached fit must depend on its key only, so on a
    CPU (where stacking is no faster) the scorer never stacks them: two searches share each fit bit for bit."""
    import dlrig.train.stacked_func as sf
    from dlrig.select.scorers import TorchScorer

    monkeypatch.setattr(sf, "fit_stacked", lambda *a, **k: pytest.fail("stacked on a CPU"))
    X, y = _data()
    scorer = TorchScorer(X, y, 3, FitConfig().with_overrides(CNN), "accuracy")
    rows = (np.arange(0, 50), np.arange(50, 70))
    alone = scorer.fit_score([({"optim.lr": 0.01}, *rows, 0)], None)
    together = scorer.fit_score([({"optim.lr": 0.01}, *rows, 0), ({"optim.lr": 0.003}, *rows, 0)], None)
    assert alone[0]["metrics"] == together[0]["metrics"]
