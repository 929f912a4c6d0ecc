"""Knowledge distillation (Hinton, Vinyals & Dean 2015): a student trained on a teacher's softened outputs.

``train.distill: {teacher: <checkpoint>, temperature: T, alpha}`` makes fit's training loss

    alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * loss(student, labels)

where ``loss`` is the training loss params choose (plain CE by default). The T^2 keeps the soft term's
gradients on the scale of the hard term's as T grows (the soft gradients shrink as 1 / T^2), so alpha means
the same at any temperature.

The teacher is a dlrig checkpoint loaded with ``torch.load(weights_only=True)``
(:func:`dlrig.train.checkpoint.load_model`); one trained on samples of another shape or another number of
classes is refused with one line. Its logits for the gradient rows are computed once, in eval mode, before
training: the teacher sees only those rows (never the early-stopping or held-out rows, which it scores
nothing for), and it is loaded outside the fit's random stream, so ``alpha = 0`` trains bit for bit as
without a teacher.

The fit cache must change when the teacher's *content* changes, not only its path: ``TorchScorer.jobs_key``
(:mod:`dlrig.select.scorers`) hashes each teacher file's :func:`file_sha256` into the fit's key.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from dlrig.data.sources import sha256_file
from dlrig.errors import UserError
from dlrig.params import DistillParams

_CHUNK = 4096  # rows per teacher forward pass: bounded memory on large training sets


def file_sha256(path: str | Path) -> str:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"train.distill.teacher: {path}: file not found (a dlrig checkpoint, e.g. "
                        "models/model.pt)")
    return sha256_file(path)


def teacher_logits(dcfg: DistillParams, X: torch.Tensor, n_classes: int) -> torch.Tensor:
    """The teacher's logits for the rows ``X`` (the fit's gradient rows, raw), on X's device, no grad.

    Loading builds a model (weight initialisation draws random numbers): it runs in a forked random stream,
    so the fit's own stream -- the student's initial weights, its dropout masks -- is the same with or
    without a teacher.
    """
    from dlrig.train.checkpoint import load_model

    path = dcfg.teacher
    file_sha256(path)  # one line for a missing file, before torch.load
    sample_shape: Sequence[int] = list(X.shape[1:])
    with torch.random.fork_rng(devices=[]):
        teacher, ckpt = load_model(path, sample_shape=sample_shape)
    if len(ckpt["classes"]) != n_classes:
        raise UserError(f"train.distill.teacher: {path}: the teacher predicts {len(ckpt['classes'])} "
                        f"classes, but this data has {n_classes}; distil from a model trained on this data")
    teacher.to(X.device).eval()
    with torch.no_grad():
        return torch.cat([teacher(X[i : i + _CHUNK]) for i in range(0, len(X), _CHUNK)]).float()


def distillation_loss(
    student: torch.Tensor, teacher: torch.Tensor, hard_loss: torch.Tensor, temperature: float, alpha: float
) -> torch.Tensor:
    """``alpha * T^2 * KL(p_teacher^T || p_student^T) + (1 - alpha) * hard_loss``; the KL is the batch mean
    of each row's KL divergence (``F.kl_div(..., reduction="batchmean")``, the mathematical KL)."""
    T = temperature
    soft = F.kl_div(F.log_softmax(student.float() / T, dim=1), F.log_softmax(teacher / T, dim=1),
                    reduction="batchmean", log_target=True)
    return alpha * T * T * soft + (1 - alpha) * hard_loss


__all__ = ["distillation_loss", "file_sha256", "teacher_logits"]
