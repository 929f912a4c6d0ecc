import numpy as np
import pytest
import torch

from dlrig.params import parse_params
from dlrig.train import fit, predict_proba
from dlrig.train.checkpoint import load_model, save_model
from dlrig.train.fit import early_stopping_split


def accuracy(model, X, y):
    return float((predict_proba(model, X).argmax(1) == y).mean())


def test_fit_learns_separable_blobs(blobs, fast_config):
    X, y = blobs
    result = fit(X, y, 3, fast_config, seed=0)
    assert accuracy(result.model, X, y) > 0.95
    assert result.history[0]["train_loss"] > result.history[-1]["train_loss"]


def test_same_seed_same_weights_different_seed_different(blobs, fast_config):
    X, y = blobs
    a, b = fit(X, y, 3, fast_config, seed=1), fit(X, y, 3, fast_config, seed=1)
    c = fit(X, y, 3, fast_config, seed=2)
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k]), k
    assert not torch.equal(a.model[2].weight, c.model[2].weight)
    assert a.history == b.history


def test_scaler_and_early_stopping_see_only_their_rows(blobs, fast_config):
    """Leakage guard: the scaler is fitted on the gradient rows only, never on the early-stopping rows."""
    X, y = blobs
    X = X.copy()
    fit_idx, val_idx = early_stopping_split(y, fast_config.train, seed=3)
    X[val_idx] += 1000.0  # poison the early-stopping rows: any use of them in the scaler shows up
    result = fit(X, y, 3, fast_config, seed=3)
    assert np.array_equal(result.train_index, fit_idx) and np.array_equal(result.val_index, val_idx)
    assert not set(fit_idx) & set(val_idx)
    assert np.allclose(result.model[0].mean.numpy(), X[fit_idx].mean(0), atol=1e-4)
    assert result.model[0].mean.abs().max() < 100  # the +1000 rows did not move it


def test_early_stopping_split_is_stratified_and_in_range(blobs, fast_config):
    _, y = blobs
    fit_idx, val_idx = early_stopping_split(y, fast_config.train, seed=0)
    assert len(fit_idx) + len(val_idx) == len(y)
    assert sorted(np.bincount(y[val_idx]).tolist()) == [6, 6, 6]  # 15% of 120, stratified


def test_early_stopping_restores_the_best_epoch(blobs):
    X, y = blobs
    cfg = parse_params(
        {"optim": {"lr": 0.05}, "model": {"hidden": 64, "dropout": 0.0},
         "train": {"epochs": 80, "early_stopping": {"patience": 3, "monitor": "val_loss"}}}
    ).fit_config()
    result = fit(X, y, 3, cfg, seed=0)
    best = min(result.history, key=lambda r: r["val_loss"])
    assert result.best_epoch == best["epoch"]
    assert result.stopped_early and len(result.history) == result.best_epoch + 4
    # The returned model is the best epoch's, not the last one's.
    val_loss = torch.nn.functional.cross_entropy(
        torch.log(torch.as_tensor(predict_proba(result.model, X[result.val_index]))),
        torch.as_tensor(y[result.val_index]),
    )
    assert float(val_loss) == pytest.approx(best["val_loss"], rel=1e-4)


def test_without_early_stopping_every_row_trains(blobs, fast_config):
    X, y = blobs
    cfg = fast_config.with_overrides({"train.early_stopping": None})
    result = fit(X, y, 3, cfg, seed=0)
    assert len(result.train_index) == len(y) and len(result.val_index) == 0
    assert "val_loss" not in result.history[-1] and len(result.history) == cfg.train.epochs


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "rmsprop", "adagrad", "adadelta", "nadam"])
def test_every_optimizer_reduces_the_loss(blobs, fast_config, name):
    X, y = blobs
    lr = {"adadelta": 10.0, "sgd": 0.05, "rmsprop": 0.003}.get(name, 0.01)
    cfg = fast_config.with_overrides({"optim.name": name, "optim.lr": lr, "train.early_stopping": None})
    history = fit(X, y, 3, cfg, seed=0).history
    assert history[-1]["train_loss"] < 0.7 * history[0]["train_loss"], name


def test_l1_shrinks_weights(blobs, fast_config):
    X, y = blobs
    plain = fit(X, y, 3, fast_config, seed=0).model
    sparse = fit(X, y, 3, fast_config.with_overrides({"optim.l1": 0.01}), seed=0).model
    assert sparse[2].weight.abs().sum() < 0.7 * plain[2].weight.abs().sum()


def test_grad_clip_bounds_the_update(blobs, fast_config):
    X, y = blobs
    cfg = fast_config.with_overrides(
        {"optim.name": "sgd", "optim.momentum": 0.0, "optim.lr": 1.0, "optim.weight_decay": 0.0,
         "train.grad_clip": 1e-3, "train.epochs": 1, "train.batch_size": 1000,
         "train.early_stopping": None, "schedule.name": "constant", "model.dropout": 0.0}
    )
    before = fit(X, y, 3, cfg.with_overrides({"train.epochs": 1, "optim.lr": 1e-12}), seed=0).model
    after = fit(X, y, 3, cfg, seed=0).model
    delta = torch.cat([(a - b).detach().flatten() for a, b in zip(after.parameters(), before.parameters(), strict=True)])
    assert float(delta.norm()) <= 1e-3 + 1e-6  # one full-batch step of lr 1 moves at most clip norm


def test_divergence_stops_instead_of_training_on_nan(blobs, fast_config):
    X, y = blobs
    cfg = fast_config.with_overrides(
        {"optim.name": "sgd", "optim.lr": 1e6, "optim.momentum": 0.0, "train.early_stopping": None}
    )
    result = fit(X * 1e3, y, 3, cfg, seed=0)
    assert result.info["diverged"] and len(result.history) < cfg.train.epochs


def test_checkpoint_roundtrip_predicts_identically(tmp_path, blobs, fast_config):
    X, y = blobs
    result = fit(X, y, 3, fast_config, seed=0)
    save_model(tmp_path / "m.pt", result.model, fast_config, sample_shape=[5], classes=["a", "b", "c"], seed=0)
    model, ckpt = load_model(tmp_path / "m.pt")
    assert ckpt["config"]["optim"]["lr"] == fast_config.optim.lr
    assert np.array_equal(predict_proba(model, X), predict_proba(result.model, X))


# ------------------------------------------------------- the callback refactor changes no number
def _old_fit(X, y, n_classes, config, seed, on_epoch=None):
    """The fit loop as it was before callbacks (early stopping and on_epoch inline): the oracle that the
    refactored loop must match bit for bit. Only the loop is copied; the helpers are fit.py's own."""
    import copy
    import math

    from torch import nn

    from dlrig.models import build_model
    from dlrig.train.fit import _evaluate, fit_standardizer, l1_penalty
    from dlrig.train.infold import training_loss
    from dlrig.train.optim import build_optimizer, build_scheduler

    tcfg = config.train
    torch.manual_seed(seed)
    rng = torch.Generator().manual_seed(seed)
    fit_idx, val_idx = early_stopping_split(y, tcfg, seed)
    mean, scale = fit_standardizer(X[fit_idx], tcfg.standardize)
    loss_fn = training_loss(y[fit_idx], n_classes, tcfg)
    model = build_model(config.model, X.shape[1:], n_classes)
    model[0].mean.copy_(torch.from_numpy(mean))
    model[0].scale.copy_(torch.from_numpy(scale))
    X_fit, y_fit = torch.as_tensor(X[fit_idx]), torch.as_tensor(y[fit_idx])
    X_val, y_val = torch.as_tensor(X[val_idx]), torch.as_tensor(y[val_idx])
    n = len(fit_idx)
    batch_size = min(tcfg.batch_size, n)
    steps_per_epoch = max(1, n // batch_size if n % batch_size == 1 else math.ceil(n / batch_size))
    optimizer = build_optimizer(model, config.optim)
    scheduler = build_scheduler(optimizer, config.schedule, config.optim.lr, tcfg.epochs, steps_per_epoch)
    eval_loss, l1, es = nn.CrossEntropyLoss(), config.optim.l1, tcfg.early_stopping
    monitor = es.monitor if es else "val_loss"
    best_value = -math.inf if monitor == "val_accuracy" else math.inf
    best_state, best_epoch, bad_epochs, stopped, pruned = None, tcfg.epochs, 0, False, False
    history = []
    model.train()
    for epoch in range(1, tcfg.epochs + 1):
        perm = torch.randperm(n, generator=rng)
        total_loss, total_correct, seen = 0.0, 0, 0
        for step in range(steps_per_epoch):
            idx = perm[step * batch_size : (step + 1) * batch_size]
            if step == steps_per_epoch - 1:
                idx = perm[step * batch_size :]
            xb, yb = X_fit[idx], y_fit[idx]
            logits = model(xb)
            loss = loss_fn(logits, yb)
            objective = loss + l1 * l1_penalty(model) if l1 > 0 else loss
            optimizer.zero_grad(set_to_none=True)
            objective.backward()
            if tcfg.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
            optimizer.step()
            scheduler.step()
            total_loss += float(loss.detach()) * len(idx)
            total_correct += int((logits.detach().argmax(1) == yb).sum())
            seen += len(idx)
        if not math.isfinite(total_loss):
            history.append({"epoch": epoch, "train_loss": float("nan")})
            stopped = True
            break
        record = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"], "train_loss": total_loss / seen,
                  "train_accuracy": total_correct / seen}
        if len(val_idx):
            record["val_loss"], record["val_accuracy"] = _evaluate(model, X_val, y_val, eval_loss)
        history.append(record)
        if on_epoch is not None and on_epoch(record) is False:
            stopped, pruned = True, True
            break
        if es is None:
            continue
        value = record[monitor]
        better = value > best_value + es.min_delta if monitor == "val_accuracy" else value < best_value - es.min_delta
        if better:
            best_value, best_epoch, bad_epochs = value, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            bad_epochs += 1
            if bad_epochs > es.patience:
                stopped = True
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    return model.eval(), history, best_epoch if es else len(history), stopped, pruned


def _refactor_cases(fast_config):
    return {
        "default": fast_config,
        "early stop on val_loss": parse_params(
            {"optim": {"lr": 0.05}, "model": {"hidden": 64, "dropout": 0.0},
             "train": {"epochs": 80, "early_stopping": {"patience": 3, "monitor": "val_loss"}}}).fit_config(),
        "early stop on val_accuracy, dropout": fast_config.with_overrides(
            {"model.dropout": 0.3, "train.epochs": 40,
             "train.early_stopping": {"patience": 2, "monitor": "val_accuracy", "val_fraction": 0.3}}),
        "sgd, l1, clip, onecycle, batch norm": fast_config.with_overrides(
            {"optim.name": "sgd", "optim.l1": 0.001, "train.grad_clip": 0.5, "train.early_stopping": None,
             "schedule.name": "onecycle", "model.dropout": 0.2, "model.norm": "batch"}),
        "diverges": fast_config.with_overrides(
            {"optim.name": "sgd", "optim.lr": 1e6, "optim.momentum": 0.0}),
    }


def _noisy(blobs):
    X, y = blobs
    return X + np.random.default_rng(0).normal(0, 3, X.shape).astype(np.float32), y


@pytest.mark.parametrize("case", ["default", "early stop on val_loss", "early stop on val_accuracy, dropout",
                                  "sgd, l1, clip, onecycle, batch norm", "diverges"])
def test_fit_with_callbacks_equals_the_old_loop_bit_for_bit(blobs, fast_config, case):
    X, y = _noisy(blobs) if "val_accuracy" in case else blobs
    X = X * 1e3 if case == "diverges" else X
    cfg = _refactor_cases(fast_config)[case]
    model, history, best_epoch, stopped, _ = _old_fit(X, y, 3, cfg, seed=5)
    result = fit(X, y, 3, cfg, seed=5)
    np.testing.assert_equal(result.history, history)  # exact, NaN == NaN
    assert (result.best_epoch, result.stopped_early) == (best_epoch, stopped)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(result.model.state_dict()[key], value, rtol=0, atol=0, equal_nan=True)
    # A step callback that only watches changes nothing either.
    from dlrig.train.callbacks import Callback

    class Watch(Callback):
        def on_after_backward(self, state):
            self.norm = sum(float(p.grad.norm()) for p in state.model.parameters() if p.grad is not None)

        def on_step_end(self, state):
            self.lr = state.lr

    watched = fit(X, y, 3, cfg, seed=5, callbacks=[Watch()])
    np.testing.assert_equal(watched.history, history)


def test_on_epoch_pruning_equals_the_old_loop(blobs, fast_config):
    """The older on_epoch hook still works: False at epoch 4 stops there, with the best state before it."""
    X, y = blobs
    stop_at_4 = lambda record: record["epoch"] != 4  # noqa: E731
    model, history, best_epoch, stopped, pruned = _old_fit(X, y, 3, fast_config, 0, on_epoch=stop_at_4)
    result = fit(X, y, 3, fast_config, 0, on_epoch=stop_at_4)
    assert result.history == history and len(history) == 4 and pruned and result.info["pruned"]
    assert result.best_epoch == best_epoch == 3 and result.stopped_early
    assert result.info["stop_reason"] == "stopped by on_epoch after epoch 4"
    for key, value in model.state_dict().items():
        assert torch.equal(result.model.state_dict()[key], value), key


def test_pinned_numbers_from_before_the_callback_refactor(blobs, fast_config):
    """Values printed by the fit loop before callbacks existed (this machine's CPU torch; a tolerance keeps
    the pins valid across BLAS builds -- the old-loop test above is the bit-for-bit check)."""
    X, y = blobs
    fast = fit(X, y, 3, fast_config, seed=0)
    assert len(fast.history) == 15 and fast.best_epoch == 15 and not fast.stopped_early
    assert fast.history[0]["train_loss"] == pytest.approx(0.8977589525428473, rel=1e-6)
    assert fast.history[0]["val_loss"] == pytest.approx(0.6173255443572998, rel=1e-6)
    assert fast.history[-1]["train_loss"] == pytest.approx(0.025337375846563603, rel=1e-5)
    assert fast.history[-1]["val_loss"] == pytest.approx(0.017983078956604004, rel=1e-5)

    early = fit(X, y, 3, _refactor_cases(fast_config)["early stop on val_loss"], seed=0)
    assert (len(early.history), early.best_epoch, early.stopped_early) == (14, 10, True)
    assert early.history[0]["train_loss"] == pytest.approx(0.8575260545693192, rel=1e-6)
    assert early.history[0]["val_loss"] == pytest.approx(0.05761227384209633, rel=1e-5)
    assert early.info["stop_reason"].startswith("early stopping: val_loss did not improve for 4 epochs")

    Xn, yn = _noisy(blobs)
    acc = fit(Xn, yn, 3, _refactor_cases(fast_config)["early stop on val_accuracy, dropout"], seed=5)
    assert (len(acc.history), acc.best_epoch, acc.stopped_early) == (9, 6, True)
    assert acc.history[-1]["train_loss"] == pytest.approx(0.4062473972638448, rel=1e-5)
    assert acc.history[-1]["val_accuracy"] == pytest.approx(0.8888888955116272, rel=1e-6)

    sgd = fit(X, y, 3, _refactor_cases(fast_config)["sgd, l1, clip, onecycle, batch norm"], seed=0)
    assert sgd.history[0]["lr"] == pytest.approx(0.0016527571973408359, rel=1e-12)
    assert sgd.history[-1]["train_loss"] == pytest.approx(0.2217321346203486, rel=1e-5)
    assert sgd.history[-1]["train_accuracy"] == pytest.approx(0.9833333333333333)
