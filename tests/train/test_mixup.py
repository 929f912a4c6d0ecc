"""train.mixup_alpha / train.cutmix_alpha: mixed batches with soft targets, gradient rows only."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlrig.errors import UserError
from dlrig.params import parse_params
from dlrig.train import augment as augment_module
from dlrig.train import fit
from dlrig.train.augment import build_augmenter, hard_labels
from dlrig.train.batched import batch_key
from dlrig.train.fit import early_stopping_split


def _train(**train):
    return parse_params({"train": train}).train


def test_mixup_mixes_pairs_and_their_labels():
    aug = build_augmenter(_train(mixup_alpha=0.4), [1, 2, 2], 3, seed=0)
    x = torch.rand(8, 1, 2, 2)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    xm, soft = aug(x, y)
    assert soft.shape == (8, 3) and torch.allclose(soft.sum(1), torch.ones(8))
    lam = float(soft[0, 0])  # row 0 (label 0) is mixed with row 7 (label 1): lam on 0, 1 - lam on 1
    assert 0 < lam < 1
    torch.testing.assert_close(xm, lam * x + (1 - lam) * x.roll(1, 0))
    torch.testing.assert_close(soft, lam * F.one_hot(y, 3) + (1 - lam) * F.one_hot(y.roll(1, 0), 3))


def test_cutmix_pastes_a_box_and_weights_labels_by_its_area():
    aug = build_augmenter(_train(cutmix_alpha=1.0), [1, 8, 8], 2, seed=1)
    x = torch.zeros(4, 1, 8, 8)
    x[1::2] = 1.0
    y = torch.tensor([0, 1, 0, 1])
    xm, soft = aug(x, y)
    pasted = float(xm[0].mean())  # row 0 (zeros) got a box of row 3 (ones): its area is the mixing weight
    torch.testing.assert_close(soft[0], torch.tensor([1 - pasted, pasted]))


def test_the_soft_target_loss_is_cross_entropy_with_probabilities():
    """fit's loss takes the soft targets as they are: -sum_k q_k log p_k, averaged; label smoothing applies
    to the mixed target, (1 - e) q + e / K (torch's formula), which is what we document."""
    logits = torch.randn(5, 4)
    q = torch.softmax(torch.randn(5, 4), 1)
    manual = -(q * F.log_softmax(logits, 1)).sum(1).mean()
    torch.testing.assert_close(nn.CrossEntropyLoss()(logits, q), manual)
    e = 0.1
    smoothed = -(((1 - e) * q + e / 4) * F.log_softmax(logits, 1)).sum(1).mean()
    torch.testing.assert_close(nn.CrossEntropyLoss(label_smoothing=e)(logits, q), smoothed)


def test_training_accuracy_counts_the_dominant_class():
    assert torch.equal(hard_labels(torch.tensor([[0.7, 0.3], [0.2, 0.8]])), torch.tensor([0, 1]))
    assert torch.equal(hard_labels(torch.tensor([1, 0])), torch.tensor([1, 0]))


def test_mixup_trains_on_gradient_rows_only(blobs, monkeypatch):
    """Mixup on a table (rows mix like 1 x 1 x F images); the poisoned early-stopping rows never enter."""
    X, y = blobs
    X = X.copy()
    config = parse_params({"model": {"hidden": 16, "depth": 1, "dropout": 0.0}, "optim": {"lr": 0.01},
                           "train": {"epochs": 15, "batch_size": 32, "mixup_alpha": 0.2}}).fit_config()
    _, val_idx = early_stopping_split(y, config.train, seed=0)
    X[val_idx] += 1000.0
    seen = []
    original = augment_module.Augmenter.__call__
    monkeypatch.setattr(augment_module.Augmenter, "__call__",
                        lambda self, xb, yb: (seen.append(float(xb.abs().max())), original(self, xb, yb))[1])
    result = fit(X, y, 3, config, seed=0)
    assert seen and max(seen) < 100
    assert result.history[-1]["train_accuracy"] > 0.8  # the dominant label of the mixed rows is learnt
    again = fit(X, y, 3, config, seed=0)
    assert torch.equal(result.model[-1].weight, again.model[-1].weight)
    plain = fit(X, y, 3, config.with_overrides({"train.mixup_alpha": 0.0}), seed=0)
    assert not torch.equal(result.model[-1].weight, plain.model[-1].weight)


def test_cutmix_on_a_table_is_refused(blobs):
    X, y = blobs
    config = parse_params({"train": {"epochs": 1, "cutmix_alpha": 1.0}}).fit_config()
    with pytest.raises(UserError, match=r"^train.cutmix_alpha: augmentation needs image data"):
        fit(X, y, 3, config, seed=0)


def test_both_on_picks_one_per_batch():
    aug = build_augmenter(_train(mixup_alpha=1.0, cutmix_alpha=1.0), [1, 4, 4], 2, seed=0)
    kinds = set()
    for _ in range(20):
        x = torch.rand(4, 1, 4, 4)
        xm, soft = aug(x, torch.tensor([0, 1, 0, 1]))
        lam = float(soft[0, 0])
        kinds.add("mixup" if torch.allclose(xm, lam * x + (1 - lam) * x.roll(1, 0), atol=1e-6) else "cutmix")
    assert kinds == {"mixup", "cutmix"}


@pytest.mark.parametrize(("train", "message"), [
    ({"mixup_alpha": -0.1}, "params.yaml: train.mixup_alpha must be >= 0 (got -0.1)"),
    ({"cutmix_alpha": -1}, "params.yaml: train.cutmix_alpha must be >= 0 (got -1)"),
    ({"mixup_alpha": 0.2, "loss": {"name": "gce"}},
     "params.yaml: train.mixup_alpha / cutmix_alpha train on soft targets, which only loss ce without class "
     "weights takes (got loss.name 'gce', class_weight 'none'); set them to 0"),
    ({"cutmix_alpha": 0.2, "class_weight": "balanced"},
     "params.yaml: train.mixup_alpha / cutmix_alpha train on soft targets, which only loss ce without class "
     "weights takes (got loss.name 'ce', class_weight 'balanced'); set them to 0"),
])
def test_bad_values_are_one_line(train, message):
    with pytest.raises(UserError) as err:
        parse_params({"train": train})
    assert str(err.value) == message


def test_the_stack_routes_mixing_to_fit(fast_config):
    assert batch_key(fast_config.with_overrides({"train.mixup_alpha": 0.2})) is None
    assert batch_key(fast_config.with_overrides({"train.cutmix_alpha": 0.2})) is None
