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
