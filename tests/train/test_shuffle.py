"""train.shuffle: the order the gradient rows go through the loop (epoch | once | none), read off the model's
own inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dlrig.errors import UserError
from dlrig.params import parse_params
from dlrig.train import fit
from dlrig.train.batched import batch_key
from dlrig.train.callbacks import Callback


class BatchRows(Callback):
    """Records, per epoch, the row ids (the last feature) of every training batch the model sees."""

    def __init__(self) -> None:
        self.epochs: list[list[list[int]]] = []

    def on_fit_start(self, state) -> None:
        def record(module, inputs):
            if module.training:
                if state.epoch > len(self.epochs):
                    self.epochs.append([])
                self.epochs[-1].append([int(v) for v in inputs[0][:, -1]])

        state.model.register_forward_pre_hook(record)


def _rows(blobs, shuffle: str, epochs: int = 3, seed: int = 0) -> list[list[list[int]]]:
    X, y = blobs
    X = np.hstack([X, np.arange(len(y), dtype=np.float32)[:, None]])  # the row id rides along as a feature
    config = parse_params({"model": {"hidden": 8, "depth": 1, "dropout": 0.0},
                           "train": {"epochs": epochs, "batch_size": 32, "early_stopping": None,
                                     "shuffle": shuffle}}).fit_config()
    cb = BatchRows()
    fit(X, y, 3, config, seed, callbacks=[cb])
    return cb.epochs


def test_epoch_draws_a_new_order_every_epoch(blobs):
    epochs = _rows(blobs, "epoch")
    assert len(epochs) == 3
    flat = [sum(e, []) for e in epochs]
    assert all(sorted(f) == list(range(120)) for f in flat)  # every row once per epoch
    assert flat[0] != flat[1] and flat[1] != flat[2] and flat[0] != list(range(120))
    assert [len(b) for b in epochs[0]] == [32, 32, 32, 24]


def test_once_reuses_the_first_epochs_order(blobs):
    once, every = _rows(blobs, "once"), _rows(blobs, "epoch")
    assert once[0] == once[1] == once[2]
    assert once[0] == every[0]  # the one order is the first one "epoch" draws
    assert sorted(sum(once[0], [])) == list(range(120))
    assert _rows(blobs, "once", seed=1)[0] != once[0]  # still seeded


def test_none_keeps_the_given_order(blobs):
    epochs = _rows(blobs, "none")
    for e in epochs:
        assert sum(e, []) == list(range(120))
    assert e[0] == list(range(32))


def test_the_default_is_epoch_and_the_stack_trains_only_the_default(fast_config):
    assert fast_config.train.shuffle == "epoch"
    assert batch_key(fast_config) is not None
    for value in ("once", "none"):
        assert batch_key(fast_config.with_overrides({"train.shuffle": value})) is None  # -> fit()


def test_a_bad_value_is_one_line():
    with pytest.raises(UserError) as err:
        parse_params({"train": {"shuffle": "sometimes"}})
    assert str(err.value) == "params.yaml: train.shuffle must be one of 'epoch', 'once' or 'none' (got 'sometimes')"


def test_shuffle_changes_the_weights_but_once_and_epoch_agree_after_one_epoch(blobs):
    X, y = blobs
    base = parse_params({"model": {"hidden": 8, "depth": 1, "dropout": 0.0},
                         "train": {"epochs": 1, "batch_size": 32, "early_stopping": None}}).fit_config()
    w = {s: fit(X, y, 3, base.with_overrides({"train.shuffle": s}), 0).model[-1].weight for s in
         ("epoch", "once", "none")}
    assert torch.equal(w["epoch"], w["once"])
    assert not torch.equal(w["epoch"], w["none"])
