"""fit_many against its oracle, fit(): every stacked model must train as fit() would train it alone."""

import copy
import math

import numpy as np
import pytest
import torch

import dlrig.train.batched as batched
from dlrig.params import FitConfig
from dlrig.train import fit, predict_proba
from dlrig.train.batched import FitJob, batch_key, fit_many
from dlrig.train.fit import early_stopping_split, l1_penalty
from dlrig.train.infold import training_loss
from dlrig.train.optim import build_optimizer, build_scheduler


@pytest.fixture(scope="module")
def data():
    """Three overlapping Gaussian classes in 10-d (hard enough that models differ and early stopping acts)."""
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 1.5, size=(3, 10))
    y = rng.integers(0, 3, 300)
    X = (centers[y] + rng.normal(0, 1, (300, 10))).astype(np.float32)
    folds = [np.sort(rng.choice(300, size=n, replace=False)) for n in (200, 201, 199, 150)]
    return X, y, folds


BASE = FitConfig().with_overrides({
    "model.hidden": 32, "model.depth": 2, "model.dropout": 0.0, "train.epochs": 8, "train.batch_size": 32,
})


def jobs_for(config, folds, lr_spread=True):
    """A handful of jobs with different folds (different row counts), seeds, learning rates and epochs."""
    return [
        FitJob(rows, config.with_overrides({
            "optim.lr": config.optim.lr * (1 + 0.5 * i if lr_spread else 1),
            "train.epochs": config.train.epochs - i,
        }), seed=i)
        for i, rows in enumerate(folds)
    ]


def reference(X, y, job):
    return fit(X[job.train_index], y[job.train_index], 3, job.config, job.seed)


def assert_same_training(X, y, result, ref, job, rtol=1e-4):
    """Same history (to float32 rounding), stopping, rows and predictions as fit() on the job's rows."""
    assert result.info["batched"]
    assert len(result.history) == len(ref.history)
    for got, want in zip(result.history, ref.history, strict=True):
        assert got.keys() == want.keys()
        for key in want:
            assert got[key] == pytest.approx(want[key], rel=rtol, abs=1e-7), (key, got["epoch"])
    assert result.best_epoch == ref.best_epoch and result.stopped_early == ref.stopped_early
    for key in ("diverged", "pruned", "stop_reason"):
        assert result.info[key] == ref.info[key], key
    # fit() returns positions inside the rows it got; fit_many maps them back to rows of X.
    assert np.array_equal(result.train_index, job.train_index[ref.train_index])
    assert np.array_equal(result.val_index, job.train_index[ref.val_index])
    got, want = predict_proba(result.model, X), predict_proba(ref.model, X)
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.99
    assert np.allclose(got, want, atol=1e-3)
    assert result.model.state_dict().keys() == ref.model.state_dict().keys()


CASES = {
    "adam": {},
    "sgd_nesterov_step": {"optim.name": "sgd", "optim.nesterov": True, "optim.lr": 0.05,
                          "schedule.name": "step", "schedule.step_size": 3},
    "adamw_everything": {"optim.name": "adamw", "optim.weight_decay": 0.05, "optim.l1": 1e-4,
                         "train.grad_clip": 0.5, "train.label_smoothing": 0.1, "schedule.name": "cosine",
                         "schedule.warmup_epochs": 2},
    "layer_norm_gelu": {"model.norm": "layer", "model.activation": "gelu", "model.init": "xavier_uniform"},
    # With Adam, a bias right before batch norm has a zero gradient up to rounding noise, and Adam
    # normalises that noise into lr-sized steps: fit() itself is not reproducible across summation
    # orders there. SGD keeps the noise at noise level, so the comparison is meaningful.
    "batch_norm_sgd_elu": {"model.norm": "batch", "model.activation": "elu", "optim.name": "sgd",
                           "optim.lr": 0.05},
    "onecycle_sgd": {"optim.name": "sgd", "schedule.name": "onecycle", "optim.lr": 0.1},
    "onecycle_adam_depth3_silu": {"schedule.name": "onecycle", "schedule.warmup_epochs": 3,
                                  "model.depth": 3, "model.activation": "silu"},
    "early_stopping": {"train.epochs": 40, "optim.lr": 0.02,
                       "train.early_stopping": {"patience": 2, "monitor": "val_accuracy", "val_fraction": 0.2}},
}


@pytest.mark.parametrize("case", list(CASES))
def test_matches_fit(data, case):
    X, y, folds = data
    jobs = jobs_for(BASE.with_overrides(CASES[case]), folds)
    assert len({batch_key(job.config) for job in jobs}) == 1  # one stack
    results = fit_many(X, y, 3, jobs)
    for job, result in zip(jobs, results, strict=True):
        assert result.info["group_size"] == len(jobs)
        assert_same_training(X, y, result, reference(X, y, job), job)
    if case == "early_stopping":
        assert any(r.stopped_early for r in results)


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_unfused_adam_matches_fit(data, monkeypatch, optimizer):
    """The hand-written vectorised Adam (used when torch has no fused kernel) is torch's arithmetic too."""
    monkeypatch.setattr(batched, "_FUSED_ADAM", False)
    X, y, folds = data
    config = BASE.with_overrides({"optim.name": optimizer, "optim.weight_decay": 0.01})
    jobs = jobs_for(config, folds[:2])
    for job, result in zip(jobs, fit_many(X, y, 3, jobs), strict=True):
        assert_same_training(X, y, result, reference(X, y, job), job)


def test_early_stopping_restores_the_best_state(data, monkeypatch):
    monkeypatch.setattr(batched, "_BLOCK_FLOATS", 64)  # validation in many row blocks: the same numbers
    X, y, folds = data
    config = BASE.with_overrides({"optim.lr": 0.05, "train.epochs": 60,
                                  "train.early_stopping": {"patience": 3, "monitor": "val_loss"}})
    job = FitJob(folds[0], config, seed=0)
    result = fit_many(X, y, 3, [job])[0]
    assert_same_training(X, y, result, reference(X, y, job), job)
    best = min(result.history, key=lambda r: r["val_loss"])
    assert result.stopped_early and result.best_epoch == best["epoch"]
    assert len(result.history) == result.best_epoch + 4
    proba = torch.as_tensor(predict_proba(result.model, X[result.val_index]))
    val_loss = torch.nn.functional.cross_entropy(torch.log(proba), torch.as_tensor(y[result.val_index]))
    assert float(val_loss) == pytest.approx(best["val_loss"], rel=1e-4)


def test_models_are_independent_and_scalers_see_only_their_own_rows(data):
    """Leakage bar. Rows outside a job's training rows -- even rows its stack neighbour trains on -- change
    nothing about that job's model; its own early-stopping rows never reach its scaler."""
    X, y, folds = data
    config = BASE.with_overrides({"train.early_stopping": {"patience": 5}})
    rows = folds[0]
    job = FitJob(rows, config, seed=3)
    clean = fit_many(X, y, 3, [job])[0]

    poisoned = X.copy()
    poisoned[np.setdiff1d(np.arange(len(X)), rows)] += 1000.0  # rows the job does not own
    neighbour = FitJob(np.arange(len(X)), config, seed=4)  # trains on everything, poison included
    dirty = fit_many(poisoned, y, 3, [neighbour, job])[1]
    assert dirty.info["group_size"] == 2
    assert len(dirty.history) == len(clean.history)
    for got, want in zip(dirty.history, clean.history, strict=True):
        for key in want:
            assert got[key] == pytest.approx(want[key], rel=1e-5), key
    for key, value in clean.model.state_dict().items():
        assert torch.allclose(dirty.model.state_dict()[key], value, atol=1e-6), key

    fit_local, val_local = early_stopping_split(y[rows], config.train, seed=3)
    poisoned = X.copy()
    poisoned[rows[val_local]] += 1000.0  # the job's own early-stopping rows
    result = fit_many(poisoned, y, 3, [neighbour, job])[1]
    assert np.array_equal(result.train_index, rows[fit_local]) and np.array_equal(result.val_index, rows[val_local])
    assert np.allclose(result.model[0].mean.numpy(), X[rows[fit_local]].mean(0), atol=1e-5)
    assert np.allclose(result.model[0].scale.numpy(), X[rows[fit_local]].std(0), atol=1e-5)
    assert result.model[0].mean.abs().max() < 100  # the +1000 rows did not move it
    assert result.history[0]["val_loss"] > 10 * clean.history[0]["val_loss"]  # but they are its val rows


def test_dropout_trains_as_well_as_fit(data):
    """Dropout masks come from each model's own generator, not fit()'s global RNG: the numbers differ,
    the training does not. Same accuracy on held-out rows within a few points."""
    X, y, folds = data
    config = BASE.with_overrides({"model.dropout": 0.3, "train.epochs": 25, "optim.lr": 0.01,
                                  "train.early_stopping": None})
    jobs = [FitJob(rows, config, seed=i) for i, rows in enumerate(folds)]

    def held_out_accuracy(result, job):
        test = np.setdiff1d(np.arange(len(X)), job.train_index)
        return (predict_proba(result.model, X[test]).argmax(1) == y[test]).mean()

    stacked = np.mean([held_out_accuracy(r, j) for r, j in zip(fit_many(X, y, 3, jobs), jobs, strict=True)])
    alone = np.mean([held_out_accuracy(reference(X, y, j), j) for j in jobs])
    assert stacked > 0.8 and abs(stacked - alone) < 0.05


def test_a_models_training_does_not_depend_on_its_stack_mates(data):
    """The fit cache keys a fit by its own config, rows and seed: with dropout on, a model trained alone and
    in a stack with others (other lrs, dropout rates, seeds and row counts -- a wider padded batch, early
    finishers leaving) must draw the same masks and learn the same weights."""
    X, y, folds = data
    config = BASE.with_overrides({"model.dropout": 0.3, "train.epochs": 6, "train.batch_size": 33})
    job = FitJob(folds[0], config, seed=5)
    mates = [FitJob(folds[1], config.with_overrides({"optim.lr": 0.01, "model.dropout": 0.1}), seed=7),
             FitJob(folds[2], config.with_overrides({"train.epochs": 2}), seed=5),
             FitJob(folds[3], config, seed=9)]
    (alone,) = fit_many(X, y, 3, [job])
    together = fit_many(X, y, 3, [mates[0], job, *mates[1:]])[1]
    # The same masks and batches, and the same bits: each model's matrix products are its own entries of a
    # batched product (padding rows are zeros added to its sums), so the stack's width and mates do not
    # reach them. With one generator per stack the masks differed, and the weights by far more than that.
    for a, b in zip(alone.model.state_dict().values(), together.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert [r["val_loss"] for r in alone.history] == [r["val_loss"] for r in together.history]


def test_unbatchable_jobs_fall_back_to_fit_in_job_order(data):
    X, y, folds = data
    rng = np.random.default_rng(1)
    images = rng.normal(size=(120, 1, 8, 8)).astype(np.float32)
    labels = rng.integers(0, 3, 120)
    cnn = BASE.with_overrides({"model.name": "cnn", "model.channels": [4], "train.epochs": 2})
    rmsprop = BASE.with_overrides({"optim.name": "rmsprop", "train.epochs": 3})
    assert batch_key(cnn) is None and batch_key(rmsprop) is None

    jobs = [FitJob(folds[0], rmsprop, seed=0), FitJob(folds[1], BASE, seed=1), FitJob(folds[2], rmsprop, seed=2)]
    results = fit_many(X, y, 3, jobs)
    assert [r.info["batched"] for r in results] == [False, True, False]
    for job, result in zip(jobs, results, strict=True):
        ref = reference(X, y, job)
        if not result.info["batched"]:  # the same code path: identical, not merely close
            assert result.history == ref.history
            for key, value in ref.model.state_dict().items():
                assert torch.equal(result.model.state_dict()[key], value)
        assert np.array_equal(result.train_index, job.train_index[ref.train_index])

    image_job = FitJob(np.arange(100), cnn, seed=0)
    result = fit_many(images, labels, 3, [image_job])[0]
    ref = fit(images[:100], labels[:100], 3, cnn, seed=0)
    assert not result.info["batched"] and result.history == ref.history


def test_batch_key_shares_architecture_and_varies_hyperparameters():
    key = batch_key(BASE)
    same = ["optim.lr", "optim.weight_decay", "optim.l1", "optim.beta1", "train.epochs", "train.grad_clip",
            "train.label_smoothing", "model.dropout", "model.init", "schedule.warmup_epochs"]
    values = {"optim.lr": 0.3, "optim.weight_decay": 0.1, "optim.l1": 0.1, "optim.beta1": 0.5,
              "train.epochs": 3, "train.grad_clip": 1.0, "train.label_smoothing": 0.2, "model.dropout": 0.5,
              "model.init": "orthogonal", "schedule.warmup_epochs": 2}
    for name in same:
        assert batch_key(BASE.with_overrides({name: values[name]})) == key, name
    assert batch_key(BASE.with_overrides({"train.early_stopping": None})) == key
    for unsupported in ({"train.loss": {"name": "focal"}}, {"train.class_weight": "balanced"},
                        {"train.resample": "oversample"}, {"train.noise_filter": "drop"}):
        assert batch_key(BASE.with_overrides(unsupported)) is None, unsupported  # fit() implements these
    assert batch_key(BASE.with_overrides({"optim.nesterov": True, "optim.momentum": 0.9})) == key  # adam
    different = {"model.hidden": 64, "model.depth": 3, "model.activation": "tanh", "model.norm": "layer",
                 "optim.name": "sgd", "schedule.name": "step", "train.batch_size": 16,
                 "train.standardize": "global"}
    for name, value in different.items():
        assert batch_key(BASE.with_overrides({name: value})) != key, name


@pytest.mark.parametrize("norm", ["none", "layer", "batch"])
def test_stack_size_estimate_is_the_parameter_count(norm):
    from dlrig.models import build_model, count_parameters

    config = BASE.with_overrides({"model.norm": norm, "model.depth": 3})
    X = np.zeros((4, 2, 5), np.float32)
    assert batched._mlp_size(config, X, 7) == count_parameters(build_model(config.model, [2, 5], 7))


def test_groups_chunks_and_order(data, monkeypatch):
    """Two architectures interleaved, split into chunks: every result is its own job's, in job order."""
    X, y, folds = data
    wide = BASE.with_overrides({"model.hidden": 48, "train.epochs": 4})
    narrow = BASE.with_overrides({"train.epochs": 4})
    jobs = [FitJob(rows, wide if i % 2 else narrow, seed=i) for i, rows in enumerate(folds)]
    together = fit_many(X, y, 3, jobs)
    chunked = fit_many(X, y, 3, jobs, max_models=1)
    monkeypatch.setattr(batched, "_STACK_BYTES", 1)  # the default cap on a stack's memory: one per stack
    assert all(r.info["group_size"] == 1 for r in fit_many(X, y, 3, jobs))
    for job, a, b in zip(jobs, together, chunked, strict=True):
        assert a.info["group_size"] == 2 and b.info["group_size"] == 1
        assert a.model[2].weight.shape[0] == job.config.model.hidden
        assert_same_training(X, y, a, reference(X, y, job), job)
        for key, value in a.model.state_dict().items():
            assert torch.allclose(b.model.state_dict()[key], value, atol=1e-6), key


def test_on_epoch_sees_every_model_and_can_prune_one(data):
    X, y, folds = data
    jobs = jobs_for(BASE.with_overrides({"train.epochs": 6}), folds[:3], lr_spread=False)
    seen = []

    def on_epoch(index, record):
        seen.append((index, record["epoch"]))
        return not (index == 1 and record["epoch"] == 2)  # a pruner gives up on job 1 after epoch 2

    results = fit_many(X, y, 3, jobs, on_epoch=on_epoch)
    assert sorted(seen) == sorted([(0, e) for e in range(1, 7)] + [(1, 1), (1, 2)] + [(2, e) for e in range(1, 5)])
    assert results[1].info["pruned"] and results[1].stopped_early and len(results[1].history) == 2
    ref = fit(X[jobs[1].train_index], y[jobs[1].train_index], 3, jobs[1].config, 1,
              on_epoch=lambda record: record["epoch"] != 2)
    assert_same_training(X, y, results[1], ref, jobs[1])
    assert not results[0].info["pruned"] and len(results[0].history) == 6


def test_a_diverging_model_stops_alone(data):
    X, y, folds = data
    X_big = X * 1e3
    config = BASE.with_overrides({"optim.name": "sgd", "optim.momentum": 0.0, "train.early_stopping": None,
                                  "schedule.name": "constant", "optim.lr": 1e-4, "train.epochs": 5})
    calm, wild = FitJob(folds[0], config, seed=0), FitJob(folds[1], config.with_overrides({"optim.lr": 1e6}), seed=1)
    results = fit_many(X_big, y, 3, [calm, wild])
    ref = reference(X_big, y, wild)
    assert results[1].info["diverged"] and ref.info["diverged"] and results[1].stopped_early
    assert len(results[1].history) == len(ref.history) < 5 and math.isnan(results[1].history[-1]["train_loss"])
    assert_same_training(X_big, y, results[0], reference(X_big, y, calm), calm)


# ------------------------------------------------------------ the stacked forms against fit()'s pieces
@pytest.mark.parametrize("smoothing", [(0.0, 0.0, 0.0), (0.1, 0.1, 0.1), (0.0, 0.1, 0.3)])
def test_stacked_loss_is_autograd_of_fits_loss(data, smoothing):
    """The stack's loss and the logit gradient its backward pass starts from, against autograd of the
    loss fit() trains with, model by model: padded rows and a model without a batch get nothing."""
    X, y, folds = data
    jobs = [FitJob(rows, BASE.with_overrides({"train.label_smoothing": e}), seed=i)
            for i, (rows, e) in enumerate(zip(folds, smoothing, strict=False))]
    stack = batched._Stack.create(X, y, 3, list(enumerate(jobs)), "cpu", None)
    gen = torch.Generator().manual_seed(0)
    M, W = 3, stack.width
    logits = torch.randn(M, W, 3, generator=gen) * 2
    target = torch.randint(0, 3, (M, W), generator=gen)
    n_real = [W, W - 5, 0]
    mask = torch.zeros(M, W)
    for r, n in enumerate(n_real):
        mask[r, :n] = 1.0
    count = mask.sum(-1).clamp(min=1)
    loss, grad = stack._loss(logits, target, mask, count, (mask / count.unsqueeze(-1)).unsqueeze(-1))
    for r, (job, n) in enumerate(zip(jobs, n_real, strict=True)):
        assert not grad[r, n:].any()
        if n == 0:
            assert loss[r] == 0
            continue
        z = logits[r, :n].clone().requires_grad_()
        want = training_loss(y[job.train_index], 3, job.config.train)(z, target[r, :n])
        want.backward()
        assert float(loss[r]) == pytest.approx(float(want.detach()), rel=1e-6)
        assert torch.allclose(grad[r, :n], z.grad, rtol=1e-5, atol=1e-7)


STEP_CASES = {
    "sgd": ({"optim.name": "sgd"}, True),
    "sgd_nesterov_onecycle": ({"optim.name": "sgd", "optim.nesterov": True, "schedule.name": "onecycle"}, True),
    "adam_fused": ({"optim.name": "adam"}, True),
    "adam_unfused": ({"optim.name": "adam"}, False),
    "adamw_onecycle_fused": ({"optim.name": "adamw", "schedule.name": "onecycle"}, True),
    "adamw_unfused": ({"optim.name": "adamw", "schedule.name": "step", "schedule.step_size": 1}, False),
}


@pytest.mark.parametrize("case", list(STEP_CASES))
def test_stacked_step_is_fits_step(monkeypatch, case):
    """An epoch of the stack's optimizer steps on random gradients, against what fit() does with the same
    gradient for each model: autograd of ``l1 * l1_penalty`` added, ``clip_grad_norm_``, then
    build_optimizer's step and build_scheduler's step. Every model has its own lr, weight decay, L1, clip,
    momentum / beta1; a model with fewer rows gets no batch at an epoch's last step and must not move at
    all, nor its optimizer state (the next epoch would show it)."""
    overrides, fused = STEP_CASES[case]
    monkeypatch.setattr(batched, "_FUSED_ADAM", fused)
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 5)).astype(np.float32), rng.integers(0, 3, 40)
    config = BASE.with_overrides({"model.hidden": 6, "model.norm": "layer", "train.batch_size": 8,
                                  "train.epochs": 3, "train.early_stopping": None, **overrides})
    per_model = [
        {"optim.lr": 0.05, "optim.weight_decay": 0.0, "optim.l1": 0.0, "train.grad_clip": None},
        {"optim.lr": 0.02, "optim.weight_decay": 0.1, "optim.l1": 1e-3, "train.grad_clip": 0.5,
         "optim.momentum": 0.5, "optim.beta1": 0.8},
        {"optim.lr": 0.1, "optim.weight_decay": 0.01, "optim.l1": 1e-2, "train.grad_clip": 100.0,
         "optim.momentum": 0.0 if "nesterov" not in case else 0.7, "optim.beta2": 0.99},
    ]
    rows = [np.arange(24), np.arange(17), np.arange(12)]  # 3, 2 and 2 steps (17 = 2 * 8 + 1: merged)
    jobs = [FitJob(r, config.with_overrides(o), seed=i) for i, (r, o) in enumerate(zip(rows, per_model, strict=True))]
    stack = batched._Stack.create(X, y, 3, list(enumerate(jobs)), "cpu", None)
    assert [m.steps for m in stack.models] == [3, 2, 2]
    places = [(lo, hi, op["index"], name) for op in stack.ops for name, (lo, hi) in op.get("params", {}).items()]

    def params(model):
        return [(lo, hi, getattr(model[index], name)) for lo, hi, index, name in places]

    refs = []
    for m in stack.models:
        model = copy.deepcopy(m.model)  # the weights the stack starts from
        opt = build_optimizer(model, m.cfg.optim)
        refs.append((model, opt, build_scheduler(opt, m.cfg.schedule, m.cfg.optim.lr, 3, m.steps)))
    gen = torch.Generator().manual_seed(1)
    used = torch.zeros(stack.size, dtype=torch.bool)
    for lo, hi, _ in params(refs[0][0]):
        used[lo:hi] = True
    for epoch, s in [(epoch, s) for epoch in (1, 2) for s in range(3)]:  # 2 epochs: state carries over
        tables, calls = stack._tables(epoch, 3)
        grad = torch.randn(stack.grad.shape, generator=gen)
        grad[:, ~used] = 0  # the row's alignment padding: no parameter's, kept at 0 by the stack
        active = torch.tensor([float(s < m.steps) for m in stack.models])
        before = stack.theta.clone()
        stack.grad.copy_(grad)
        stack._update(tables[s], calls[s], active, bool(active.all()))
        for r, (m, (model, opt, sched)) in enumerate(zip(stack.models, refs, strict=True)):
            if s >= m.steps:
                assert torch.equal(stack.theta[r], before[r]), (epoch, s, r)
                continue
            for lo, hi, p in params(model):
                p.grad = grad[r, lo:hi].view_as(p).clone()
            if m.cfg.optim.l1:
                (m.cfg.optim.l1 * l1_penalty(model)).backward()  # fit's objective: loss + l1 * penalty
            if m.cfg.train.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), m.cfg.train.grad_clip)
            opt.step()
            sched.step()
            want = torch.zeros(stack.size)
            for lo, hi, p in params(model):
                want[lo:hi] = p.detach().reshape(-1)
            assert torch.allclose(stack.theta[r], want, rtol=1e-5, atol=1e-6), (epoch, s, r)
