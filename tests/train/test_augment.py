"""train.augment: image augmentation of the gradient batches only, seeded, every key doing something."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dlrig.errors import UserError
from dlrig.params import TrainParams, parse_params
from dlrig.train import augment as augment_module
from dlrig.train import fit
from dlrig.train.augment import build_augmenter
from dlrig.train.batched import batch_key
from dlrig.train.fit import early_stopping_split

MARK = 1000.0  # no augmentation of a 0..16 image reaches it: a poisoned row shows up


@pytest.fixture
def images() -> tuple[np.ndarray, np.ndarray]:
    """Three classes of 6 x 6 images: a bright bar at a class-specific row, on a faint noisy background."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 30)
    X = rng.uniform(0, 2, size=(90, 1, 6, 6)).astype(np.float32)
    for i, c in enumerate(y):
        X[i, 0, 1 + 2 * c, :] += 12.0
    return X, y


def _config(**augment):
    return parse_params({"model": {"name": "cnn", "channels": [4], "hidden": 8, "dropout": 0.0},
                         "optim": {"lr": 0.01},
                         "train": {"epochs": 2, "batch_size": 16, "augment": augment}}).fit_config()


ROTATE = {"rotation": 15.0}


def test_only_gradient_rows_are_augmented(images, monkeypatch):
    """Poison the early-stopping rows: the augmenter never sees one, and sees every gradient row each epoch."""
    X, y = images
    X = X.copy()
    config = _config(**ROTATE)
    fit_idx, val_idx = early_stopping_split(y, config.train, seed=0)
    assert len(val_idx) > 0
    X[val_idx] = MARK
    seen: list[torch.Tensor] = []
    original = augment_module.Augmenter.__call__

    def spy(self, xb, yb):
        seen.append(xb.clone())
        out = original(self, xb, yb)
        seen.append(out[0].clone())
        return out

    monkeypatch.setattr(augment_module.Augmenter, "__call__", spy)
    result = fit(X, y, 3, config, seed=0)
    assert np.array_equal(result.val_index, val_idx)
    assert seen and all(float(t.max()) < MARK for t in seen)
    inputs = seen[0::2]
    assert sum(len(t) for t in inputs) == 2 * len(fit_idx)  # every gradient row, every epoch, nothing else
    assert np.isfinite(result.history[-1]["val_loss"])


def test_seeded_same_params_same_weights(images):
    X, y = images
    a, b = (fit(X, y, 3, _config(**ROTATE, erasing=0.5, noise_std=0.5), seed=3) for _ in range(2))
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k]), k
    assert a.history == b.history
    c = fit(X, y, 3, _config(**ROTATE, erasing=0.5, noise_std=0.5), seed=4)
    assert not torch.equal(a.model[1].weight, c.model[1].weight)


@pytest.mark.parametrize("key", [
    {"rotation": 20.0}, {"translate": 0.2}, {"scale": [0.8, 1.2]}, {"erasing": 1.0}, {"noise_std": 1.0},
    {"hflip": True}, {"vflip": True},
])
def test_each_key_changes_the_batches_and_the_weights(images, key):
    X, y = images
    tcfg = _config(**key).train
    aug = build_augmenter(tcfg, X.shape[1:], 3, seed=0)
    xb, yb = torch.from_numpy(X[:16]), torch.from_numpy(y[:16])
    out, target = aug(xb, yb)
    assert out.shape == xb.shape and torch.equal(target, yb)
    assert not torch.equal(out, xb)
    plain = fit(X, y, 3, _config(), seed=0).model
    augmented = fit(X, y, 3, _config(**key), seed=0).model
    assert not torch.equal(plain[1].weight, augmented[1].weight)


def test_images_differ_within_a_batch():
    """Each image gets its own draw (a v2 transform called on a batch would turn all by one angle)."""
    tcfg = parse_params({"train": {"augment": {"hflip": True}}}).train
    aug = build_augmenter(tcfg, [1, 4, 4], 2, seed=0)
    x = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4).repeat(64, 1, 1, 1)
    out, _ = aug(x, torch.zeros(64, dtype=torch.long))
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    assert 10 < int(flipped.sum()) < 54


def test_off_by_default_and_the_default_fit_is_unchanged(images):
    assert build_augmenter(TrainParams(), [1, 6, 6], 3, seed=0) is None
    X, y = images
    a = fit(X, y, 3, _config(), seed=0)
    b = fit(X, y, 3, _config(rotation=0.0, scale=[1.0, 1.0]), seed=0)
    assert torch.equal(a.model[1].weight, b.model[1].weight)


def test_augmentation_draws_from_its_own_stream(images):
    """Turning augmentation on leaves the fit's random stream alone: same initial weights, same dropout."""
    X, y = images
    config = _config(**ROTATE).with_overrides({"train.epochs": 1})
    torch.manual_seed(123)
    aug = build_augmenter(config.train, X.shape[1:], 3, seed=0)
    aug(torch.from_numpy(X[:8]), torch.from_numpy(y[:8]))
    after = torch.rand(3)
    torch.manual_seed(123)
    assert torch.equal(after, torch.rand(3))


def test_table_data_is_refused_with_one_line(blobs):
    X, y = blobs
    config = parse_params({"train": {"epochs": 1, "augment": ROTATE}}).fit_config()
    with pytest.raises(UserError) as err:
        fit(X, y, 3, config, seed=0)
    assert str(err.value) == ("train.augment: augmentation needs image data [N, C, H, W]; these samples have "
                              "shape [5] (turn it off for tables)")


@pytest.mark.parametrize(("augment", "message"), [
    ({"rotation": -5}, "params.yaml: train.augment.rotation must be >= 0 (got -5)"),
    ({"translate": 1.0}, "params.yaml: train.augment.translate must be < 1 (got 1.0)"),
    ({"scale": [1.2, 0.8]}, "params.yaml: train.augment.scale must be [low, high] with low <= high (got [1.2, 0.8])"),
    ({"erasing": 1.5}, "params.yaml: train.augment.erasing must be <= 1 (got 1.5)"),
    ({"noise_std": -1.0}, "params.yaml: train.augment.noise_std must be >= 0 (got -1.0)"),
    ({"hflip": 1}, "params.yaml: train.augment.hflip must be true or false (got 1)"),
    ({"shear": 3}, "params.yaml: train.augment.shear is not a known key"),
])
def test_bad_values_are_one_line(augment, message):
    with pytest.raises(UserError) as err:
        parse_params({"train": {"augment": augment}})
    assert str(err.value) == message


def test_the_stack_routes_augmentation_to_fit(fast_config):
    assert batch_key(fast_config.with_overrides({"train.augment": {"rotation": 10.0}})) is None
