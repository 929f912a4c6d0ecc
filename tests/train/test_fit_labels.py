"""Imbalance and noise handling inside fit(): each data-fitted step sees only the gradient rows."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

import dlrig.train.infold as infold
from dlrig.params import parse_params
from dlrig.train import fit, predict_proba
from dlrig.train.fit import early_stopping_split

fit_module = importlib.import_module("dlrig.train.fit")  # `dlrig.train.fit` the attribute is the function


def config(**train):
    return parse_params({"model": {"hidden": 32, "depth": 1, "dropout": 0.0}, "optim": {"lr": 0.01},
                         "train": {"epochs": 10, "batch_size": 32, **train}}).fit_config()


@pytest.fixture
def skewed():
    """Three classes, 60/30/6 samples."""
    rng = np.random.default_rng(0)
    counts = [60, 30, 6]
    centers = rng.normal(0, 3, size=(3, 5))
    X = np.concatenate([c + rng.normal(0, 1, size=(n, 5)) for c, n in zip(centers, counts, strict=True)])
    y = np.repeat(np.arange(3), counts)
    return X.astype(np.float32), y


def spy(monkeypatch, module, name):
    calls = []
    original = getattr(module, name)

    def wrapper(*args, **kwargs):
        calls.append((args, kwargs))
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return calls


@pytest.mark.parametrize("method", ["oversample", "undersample"])
def test_resampling_draws_from_the_gradient_rows_only(monkeypatch, skewed, method):
    X, y = skewed
    cfg = config(resample=method)
    calls = spy(monkeypatch, fit_module, "resample_indices")
    fit_idx, val_idx = early_stopping_split(y, cfg.train, seed=0)
    X = X.copy()
    X[val_idx] += 1000.0  # poisoned early-stopping rows: any use by the scaler or sampler shows
    result = fit(X, y, 3, cfg, seed=0)
    (args, _), = calls
    assert np.array_equal(args[0], y[fit_idx])  # the sampler saw the gradient rows' labels, nothing else
    assert result.model[0].mean.abs().max() < 100
    expected = {"oversample": 3 * np.bincount(y[fit_idx]).max(), "undersample": 3 * np.bincount(y[fit_idx]).min()}
    assert result.info["resampled_rows"] == expected[method]


def test_class_weights_come_from_the_gradient_rows(monkeypatch, skewed):
    X, y = skewed
    cfg = config(class_weight="balanced")
    calls = spy(monkeypatch, infold, "class_weights")
    fit_idx, _ = early_stopping_split(y, cfg.train, seed=0)
    fit(X, y, 3, cfg, seed=0)
    (args, _), = calls
    assert np.array_equal(args[0], y[fit_idx])


def test_noise_filter_looks_only_inside_the_gradient_rows(monkeypatch, skewed):
    X, y = skewed
    cfg = config(noise_filter="drop", noise_filter_folds=2)
    calls = spy(monkeypatch, infold, "out_of_fold_proba")
    y_noisy = y.copy()
    flip = np.arange(0, 60, 7)
    y_noisy[flip] = (y_noisy[flip] + 1) % 3
    fit_idx, val_idx = early_stopping_split(y_noisy, cfg.train, seed=0)
    result = fit(X, y_noisy, 3, cfg, seed=0)
    (args, _), = calls
    assert np.array_equal(args[1], y_noisy[fit_idx])  # OOF over the gradient rows' labels only
    assert set(result.train_index) <= set(fit_idx) and not set(result.train_index) & set(val_idx)
    dropped = set(fit_idx) - set(result.train_index)
    assert result.info["noise_filter"]["dropped"] == len(dropped) > 0
    assert len(dropped & set(flip)) >= len(dropped) // 2  # mostly the flipped rows


@pytest.mark.parametrize("name", ["gce", "sce", "focal", "logit_adjusted"])
def test_robust_and_imbalance_losses_train(skewed, name):
    X, y = skewed
    result = fit(X, y, 3, config(loss={"name": name}), seed=0)
    assert (predict_proba(result.model, X).argmax(1) == y).mean() > 0.8


def test_plain_config_is_untouched_by_the_new_options(skewed):
    """Defaults keep torch's own CrossEntropyLoss: results identical to before the options existed."""
    X, y = skewed
    a = fit(X, y, 3, config(), seed=0)
    b = fit(X, y, 3, config(class_weight="none", resample="none", noise_filter="none"), seed=0)
    assert a.history == b.history
