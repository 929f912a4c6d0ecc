"""Shared fixtures: tiny data sets and a fast training config."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from dlrig.params import FitConfig, parse_params

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
torch.set_num_threads(1)


@pytest.fixture
def blobs() -> tuple[np.ndarray, np.ndarray]:
    """Three well-separated Gaussian classes in 5-d, 40 samples each: any working model learns them."""
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 4, size=(3, 5))
    X = np.concatenate([c + rng.normal(0, 1, size=(40, 5)) for c in centers]).astype(np.float32)
    y = np.repeat(np.arange(3), 40)
    return X, y


@pytest.fixture
def fast_config() -> FitConfig:
    return parse_params(
        {"model": {"hidden": 32, "depth": 1, "dropout": 0.0}, "optim": {"lr": 0.01},
         "train": {"epochs": 15, "batch_size": 32}}
    ).fit_config()
