"""Stacked CNNs (dlrig.train.stacked_func) train each model as fit() does, to float tolerance (with dropout:
statistically, its masks drawn from the model's own generator), and a model's bytes do not depend on which
other models share its stack."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

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
    {"optim.name": "sgd", "optim.momentum": 0.9, "optim.nesterov": True, "optim.weight_decay": 0.01},
    {"optim.l1": 0.001, "optim.weight_decay": 0.01, "schedule.name": "onecycle"},  # adam: L2 in the gradient
    {"model.name": "mlp", "model.norm": "layer", "optim.name": "adagrad"},  # dense layers, layer norm
])
def test_each_stacked_model_matches_its_own_fit(over):
    X, y = _data()
    family = {k: v for k, v in CNN.items() if k != "model.channels"} if over.get("model.name") == "mlp" else CNN
    config = FitConfig().with_overrides({**family, **over})
    assert stack_key(config, X.shape[1:], 3) is not None
    # uneven row counts in one stack (padded, masked batches), each with its own seed
    jobs = [FitJob(np.arange(0, 60), config, 1), FitJob(np.arange(5, 66), config, 2),
            FitJob(np.arange(10, 70), config, 3)]
    stacked = fit_stacked(X, y, 3, jobs)
    for job, result in zip(jobs, stacked, strict=True):
        alone = fit(X[job.train_index], y[job.train_index], 3, config, job.seed)
        assert result.info["stacked"] == "stacked_func"
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
    for over in ({"train.early_stopping": {"patience": 2}}, {"train.grad_clip": 1.0},
                 {"model.norm": "batch"}, {"train.loss.name": "focal"}, {"model.residual": True}):
        family = {**MLP, "model.dropout": 0.2} if "model.residual" in over else CNN
        config = FitConfig().with_overrides({**family, **over})
        assert stack_key(config, X.shape[1:], 3) is None, over
    config = FitConfig().with_overrides({**CNN, "model.dropout": 0.2, "train.grad_clip": 1.0, "train.epochs": 1})
    result, = fit_stacked(X, y, 3, [FitJob(np.arange(60), config, 1)])
    assert result.info["stacked"] is False


def _jobs_around(job, X):
    """``job`` in the middle of a stack of 4 with other configs (dropout rates too), rows and seeds (same
    steps per epoch)."""
    other = job.config.with_overrides({"optim.lr": 0.003, "optim.weight_decay": 0.01, "model.dropout": 0.5})
    twin = job.config.with_overrides({"model.dropout": 0.0 if job.config.model.dropout else 0.3})
    return [FitJob(np.arange(5, 66), other, 11), FitJob(np.arange(0, 61), twin, 12), job,
            FitJob(np.arange(9, 70), other, 13)]


MLP = {"model.name": "mlp", "model.hidden": 16, "model.depth": 2, "model.norm": "layer", "model.dropout": 0.0,
       "optim.name": "rmsprop", "train.epochs": 3, "train.batch_size": 16, "train.early_stopping": None}


@pytest.mark.parametrize(("family", "channels", "dropout"), [
    (CNN, 1, 0.0), (CNN, 3, 0.0),  # with one group oneDNN's kernel differs for these widths: the twin
    (MLP, 1, 0.0),  # a family fit_many leaves to fit() (rmsprop): dense layers, layer norm, torch's optimizer
    (CNN, 1, 0.2), (MLP, 1, 0.2),  # dropout on, among mates with other rates (0.5, 0.0)
    # widths at which MKL's batched GEMM gave a model in a stack other bits than alone (row-major right
    # operand, unaligned models): stacked_ops.bmm's layouts
    ({**MLP, "model.hidden": 7}, 1, 0.0), ({**CNN, "model.hidden": 15}, 1, 0.0),
])
def test_a_models_bytes_do_not_depend_on_its_stack_mates(family, channels, dropout):
    """The fit cache keys a fit by its own config, rows and seed: trained alone or among others, the same
    job gives the same bytes (batches padded to its own width, per-model reductions, a twin when alone,
    dropout masks from the model's own generator in blocks of its own width; with dropout 0 the mates'
    masks never touch it)."""
    X, y = _data()
    X = np.repeat(X, channels, axis=1) + np.arange(channels, dtype=np.float32)[:, None, None]
    config = FitConfig().with_overrides({**family, "optim.weight_decay": 1e-3, "model.dropout": dropout}
                                        | ({"model.channels": [4, 6]} if family["model.name"] == "cnn" else {}))
    assert stack_key(config, X.shape[1:], 3) is not None
    job = FitJob(np.arange(3, 63), config, 5)
    alone, = fit_stacked(X, y, 3, [job])
    among = fit_stacked(X, y, 3, _jobs_around(job, X))[2]
    assert (alone.info["group_size"], among.info["group_size"]) == (1, 4)
    assert alone.history == among.history
    for (name, a), b in zip(alone.model.state_dict().items(), among.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_padding_never_reads_rows_outside_the_job():
    """Padded batch rows repeat the model's own rows: poisoned rows outside every job change nothing."""
    X, y = _data()
    config = FitConfig().with_overrides(CNN)
    jobs = [FitJob(np.arange(10, 70), config, 1), FitJob(np.arange(10, 65), config, 2)]  # padded batches
    clean = fit_stacked(X, y, 3, jobs)
    X[:10] = np.nan
    poisoned = fit_stacked(X, y, 3, jobs)
    for a, b in zip(clean, poisoned, strict=True):
        assert a.history == b.history
        assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True))


def test_on_a_cpu_the_scorer_stacks_cnns_and_a_fit_depends_on_its_key_only(monkeypatch):
    """One torch thread: the scorer stacks CNNs, and two searches share each fit bit for bit whichever
    other fits they stack; with more threads (oneDNN's reductions split by stack width) it never stacks."""
    import dlrig.train.stacked_func as sf
    from dlrig.select.scorers import TorchScorer

    stacked = []
    real = sf.fit_stacked
    monkeypatch.setattr(sf, "fit_stacked", lambda X, y, k, jobs, **kw: stacked.append(len(jobs)) or real(
        X, y, k, jobs, **kw))
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    X, y = _data()
    scorer = TorchScorer(X, y, 3, FitConfig().with_overrides(CNN), "accuracy")
    rows = (np.arange(0, 50), np.arange(50, 70))
    alone = scorer.fit_score([({"optim.lr": 0.01}, *rows, 0)], None)
    together = scorer.fit_score([({"optim.lr": 0.003}, *rows, 0), ({"optim.lr": 0.01}, *rows, 0)], None)
    assert stacked == [1, 2]
    assert alone[0]["metrics"] == together[1]["metrics"]
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    again = scorer.fit_score([({"optim.lr": 0.01}, *rows, 0)], None)
    assert stacked == [1, 2]  # fit() one by one
    assert again[0]["metrics"]["accuracy"] == pytest.approx(alone[0]["metrics"]["accuracy"], abs=0.06)


def test_a_diverging_stack_mate_is_reported_as_fit_reports_it_and_changes_nothing_else():
    X, y = _data()
    good = FitConfig().with_overrides({**CNN, "optim.name": "sgd", "optim.lr": 0.05})
    bad = good.with_overrides({"optim.lr": 1e8})
    alone, = fit_stacked(X, y, 3, [FitJob(np.arange(60), good, 1)])
    blown, kept = fit_stacked(X, y, 3, [FitJob(np.arange(60), bad, 1), FitJob(np.arange(60), good, 1)])
    assert kept.info["group_size"] == 2
    reference = fit(X[:60], y[:60], 3, bad, 1)
    assert blown.info["diverged"] and reference.info["diverged"]
    assert [r["epoch"] for r in blown.history] == [r["epoch"] for r in reference.history]
    assert blown.info["stop_reason"] == reference.info["stop_reason"]
    assert kept.history == alone.history
    assert all(torch.equal(p, q) for p, q in zip(kept.model.parameters(), alone.model.parameters(), strict=True))


def _digits():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return X.reshape(-1, 1, 8, 8).astype(np.float32), y


def test_dropout_trains_as_fit_does_with_masks_kept_at_one_minus_p(monkeypatch):
    """Dropout 0.3: the stack's masks keep 1 - p of the units, scaled by 1 / (1 - p) as nn.Dropout, each
    model its own masks; held-out accuracy on digits as fit()'s (whose masks come from the global RNG)."""
    import dlrig.train.stacked_func as sf

    masks = []
    real = sf._dropout_mask
    monkeypatch.setattr(sf, "_dropout_mask", lambda *a: masks.append(real(*a)) or masks[-1])
    X, y = _digits()
    config = FitConfig().with_overrides({
        "model.name": "cnn", "model.channels": [8], "model.hidden": 32, "model.depth": 2, "model.dropout": 0.3,
        "optim.lr": 3e-3, "train.epochs": 5, "train.batch_size": 32, "train.early_stopping": None})
    train, test = np.arange(1200), np.arange(1200, len(y))
    seeds = (1, 2, 3)
    stacked = fit_stacked(X, y, 10, [FitJob(train, config, s) for s in seeds])
    assert {r.info["group_size"] for r in stacked} == {3}
    # two dropout layers (after Flatten, after the hidden layer) per step, 38 steps, 5 epochs
    assert len(masks) == 2 * 38 * 5 and masks[0].shape == (3, 33, 8 * 4 * 4)
    drawn = torch.cat([m.reshape(-1) for m in masks])
    assert (drawn > 0).float().mean().item() == pytest.approx(0.7, abs=0.005)
    assert set(drawn.unique().tolist()) == {0.0, (torch.ones(1) / 0.7).item()}
    assert not torch.equal(masks[0][0], masks[0][1])  # each model its own masks

    def accuracy(model):
        assert not model.training  # prediction: no dropout
        return float((predict_proba(model, X[test]).argmax(1) == y[test]).mean())

    ours = np.mean([accuracy(r.model) for r in stacked])
    theirs = np.mean([accuracy(fit(X[train], y[train], 10, config, s).model) for s in seeds])
    assert ours > 0.8 and theirs > 0.8
    assert ours == pytest.approx(theirs, abs=0.04)
    np.testing.assert_array_equal(predict_proba(stacked[0].model, X[test]), predict_proba(stacked[0].model, X[test]))


def test_dropout_zero_draws_nothing(monkeypatch):
    """A model with dropout 0 takes no mask draw (its generator untouched) and no multiply: a stack without
    dropout runs the old path; beside a dropping mate only the mate draws."""
    draws = []
    real = torch.rand
    monkeypatch.setattr(torch, "rand", lambda *a, generator=None, **kw: draws.append(generator) or real(
        *a, generator=generator, **kw))
    X, y = _data()
    config = FitConfig().with_overrides(CNN)  # dropout 0
    fit_stacked(X, y, 3, [FitJob(np.arange(60), config, 1), FitJob(np.arange(5, 65), config, 2)])
    assert draws == []
    mate = config.with_overrides({"model.dropout": 0.3})
    fit_stacked(X, y, 3, [FitJob(np.arange(60), config, 1), FitJob(np.arange(5, 65), mate, 2)])
    assert len(draws) == 2 * 4 * 3  # the mate only: 2 dropout layers x 4 steps x 3 epochs
    assert len({id(g) for g in draws}) == 1


def test_dropout_where_the_stack_has_no_masks_for_it_trains_with_fit(monkeypatch):
    """A dropout on a feature map (cnn.py builds none: its dropout sits in the dense head) or a Dropout2d is
    not a layout the stack draws masks for: stack_key is None. At rate 0 the map's dropout is the identity."""
    import dlrig.train.stacked_func as sf
    from dlrig.models import build_model

    def inserting(layer):
        def build(cfg, shape, k):
            layers = list(build_model(cfg, shape, k))
            i = next(i for i, m in enumerate(layers) if isinstance(m, nn.Conv2d)) + 1
            return nn.Sequential(*layers[:i], layer(cfg.dropout), *layers[i:])
        return build

    X, _ = _data()
    try:
        for layer, dropout, supported in ((nn.Dropout, 0.2, False), (nn.Dropout, 0.0, True),
                                          (nn.Dropout2d, 0.2, False)):
            sf._template_json.cache_clear()
            sf._family_supported.cache_clear()
            monkeypatch.setattr(sf, "build_model", inserting(layer))
            config = FitConfig().with_overrides({**CNN, "model.dropout": dropout})
            assert (stack_key(config, X.shape[1:], 3) is not None) == supported, (layer, dropout)
    finally:
        monkeypatch.undo()
        sf._template_json.cache_clear()
        sf._family_supported.cache_clear()
    assert stack_key(FitConfig().with_overrides({**CNN, "model.dropout": 0.2}), X.shape[1:], 3) is not None
