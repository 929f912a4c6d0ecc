"""train.distill: Hinton-style distillation from a saved teacher; T^2 scaling, alpha 0 = no teacher, the
cache key follows the teacher's bytes, the teacher scores gradient rows only."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dlrig.errors import UserError
from dlrig.params import parse_params
from dlrig.select.scorers import TorchScorer
from dlrig.train import distill as distill_module
from dlrig.train import fit, predict_proba
from dlrig.train.batched import batch_key
from dlrig.train.checkpoint import save_model
from dlrig.train.distill import distillation_loss
from dlrig.train.fit import early_stopping_split


def _teacher(path, X, y, fast_config, seed=0, epochs=15):
    result = fit(X, y, 3, fast_config.with_overrides({"train.epochs": epochs}), seed)
    save_model(path, result.model, fast_config, sample_shape=list(X.shape[1:]), classes=["a", "b", "c"],
               seed=seed)
    return result.model


def test_the_loss_is_alpha_t2_kl_plus_the_hard_loss():
    torch.manual_seed(0)
    s, t = torch.randn(6, 4, requires_grad=True), torch.randn(6, 4)
    hard = F.cross_entropy(s, torch.tensor([0, 1, 2, 3, 0, 1]))
    T, alpha = 3.0, 0.7
    loss = distillation_loss(s, t, hard, T, alpha)
    p_t, log_q = torch.softmax(t / T, 1), F.log_softmax(s / T, 1)
    kl = (p_t * (p_t.log() - log_q)).sum(1).mean()
    torch.testing.assert_close(loss, alpha * T * T * kl + (1 - alpha) * hard)
    # The soft term's gradient: T^2 * (1/T) * (q - p_t) / B = T * (q - p_t) / B.
    (grad,) = torch.autograd.grad(distillation_loss(s, t, torch.zeros(()), T, 1.0), s)
    torch.testing.assert_close(grad, T * (torch.softmax(s / T, 1) - p_t).detach() / 6)


def test_t2_keeps_the_gradient_scale_across_temperatures():
    """Hinton et al.: without T^2 the soft gradients shrink as 1/T^2; with it they level off."""
    torch.manual_seed(1)
    s, t = torch.randn(32, 10, requires_grad=True), torch.randn(32, 10) * 3

    def norm(T):
        (g,) = torch.autograd.grad(distillation_loss(s, t, torch.zeros(()), T, 1.0), s)
        return float(g.norm())

    assert norm(20.0) / norm(10.0) == pytest.approx(1.0, abs=0.05)
    assert (norm(20.0) / 400) / (norm(10.0) / 100) == pytest.approx(0.25, abs=0.02)  # the unscaled loss


def test_alpha_zero_trains_bit_for_bit_as_without_a_teacher(tmp_path, blobs, fast_config):
    X, y = blobs
    _teacher(tmp_path / "t.pt", X, y, fast_config, seed=5)
    cfg = fast_config.with_overrides({"model.dropout": 0.2})  # dropout: the random stream must line up too
    plain = fit(X, y, 3, cfg, seed=1)
    zero = fit(X, y, 3, cfg.with_overrides({"train.distill": {"teacher": str(tmp_path / "t.pt"),
                                                               "temperature": 4.0, "alpha": 0.0}}), seed=1)
    assert plain.history == zero.history
    for k, v in plain.model.state_dict().items():
        assert torch.equal(v, zero.model.state_dict()[k]), k


def test_a_distilled_student_follows_its_teacher(tmp_path, blobs, fast_config):
    X, y = blobs
    teacher = _teacher(tmp_path / "t.pt", X, y, fast_config)
    cfg = fast_config.with_overrides({"train.distill": {"teacher": str(tmp_path / "t.pt"), "alpha": 1.0}})
    student = fit(X, y, 3, cfg, seed=2).model
    agree = (predict_proba(student, X).argmax(1) == predict_proba(teacher, X).argmax(1)).mean()
    assert agree > 0.95
    plain = fit(X, y, 3, fast_config, seed=2).model
    assert not torch.equal(student[-1].weight, plain[-1].weight)


def test_the_teacher_scores_only_the_gradient_rows(tmp_path, blobs, fast_config, monkeypatch):
    X, y = blobs
    _teacher(tmp_path / "t.pt", X, y, fast_config)
    X = X.copy()
    fit_idx, val_idx = early_stopping_split(y, fast_config.train, seed=0)
    X[val_idx] = 1000.0
    seen = []
    original = distill_module.teacher_logits
    monkeypatch.setattr(importlib.import_module("dlrig.train.fit"), "teacher_logits",
                        lambda d, Xs, k: (seen.append(Xs.clone()), original(d, Xs, k))[1])
    fit(X, y, 3, fast_config.with_overrides({"train.distill.teacher": str(tmp_path / "t.pt")}), seed=0)
    (rows,) = seen
    assert len(rows) == len(fit_idx) and float(rows.max()) < 1000


def test_the_cache_key_follows_the_teachers_content(tmp_path, blobs, fast_config):
    X, y = blobs
    path = tmp_path / "t.pt"
    _teacher(path, X, y, fast_config, seed=0)
    scorer = TorchScorer(X, y, 3, fast_config, "accuracy")
    rows = np.arange(100), np.arange(100, 120)
    jobs = [({"train.distill.teacher": str(path)}, *rows, 0)]
    key = scorer.jobs_key("cv", jobs)
    assert scorer.jobs_key("cv", jobs) == key
    assert scorer.jobs_key("cv", [({}, *rows, 0)]) != key
    _teacher(path, X, y, fast_config, seed=1)  # another teacher, same path
    assert scorer.jobs_key("cv", jobs) != key


def test_a_teacher_of_other_data_is_refused_with_one_line(tmp_path, blobs, fast_config):
    X, y = blobs
    _teacher(tmp_path / "t.pt", X, y, fast_config, epochs=1)
    wide = np.hstack([X, X])
    cfg = fast_config.with_overrides({"train.distill.teacher": str(tmp_path / "t.pt")})
    with pytest.raises(UserError) as err:
        fit(wide, y, 3, cfg, seed=0)
    assert "t.pt: trained on samples of shape [5], but the data has samples of shape [10]" in str(err.value)
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match=r"the teacher predicts 3 classes, but this data has 4"):
        fit(X, np.where(y == 2, 3, y), 4, cfg, seed=0)
    missing = fast_config.with_overrides({"train.distill.teacher": str(tmp_path / "nope.pt")})
    with pytest.raises(UserError, match=r"^train.distill.teacher: .*nope.pt: file not found"):
        fit(X, y, 3, missing, seed=0)


@pytest.mark.parametrize(("distill", "message"), [
    ({"temperature": 0}, "params.yaml: train.distill.temperature must be > 0 (got 0)"),
    ({"alpha": 1.5}, "params.yaml: train.distill.alpha must be <= 1 (got 1.5)"),
    ({"teacher": ""}, "params.yaml: train.distill.teacher"),
])
def test_bad_values_are_one_line(distill, message):
    with pytest.raises(UserError) as err:
        parse_params({"train": {"distill": distill}})
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_distillation_with_augmentation_is_refused():
    with pytest.raises(UserError) as err:
        parse_params({"train": {"distill": {"teacher": "t.pt"}, "augment": {"rotation": 5.0}}})
    assert str(err.value).startswith("params.yaml: train.distill.teacher: the teacher's logits are computed once")


def test_the_stack_routes_distillation_to_fit(fast_config):
    assert batch_key(fast_config.with_overrides({"train.distill.teacher": "t.pt"})) is None
