"""Training losses for noisy labels and imbalanced classes: ``loss(logits, target) -> scalar``.

Every loss takes integer targets ``[N]`` and logits ``[N, K]``, optional per-class weights (fitted on the
training labels of the fold, see ``dlrig.train.infold.class_weights``) and, per call, optional
per-sample weights ``[N]`` (e.g. 0 for rows a noise filter dropped). The reduction is the weighted mean of
``nn.CrossEntropyLoss``::

    loss = sum_i s_i * l_i / sum_i s_i * w[y_i]

where ``l_i`` already carries its class weight ``w[y_i]`` (for label-smoothed cross-entropy, torch's
smoothing term weights every class by its own ``w_c``, exactly as torch does). So ``ce`` with class
weights *is* ``nn.CrossEntropyLoss(weight=w, label_smoothing=eps)``, and a batch whose weights are all
zero gives 0, not NaN.

- ``ce``: cross-entropy, optional label smoothing.
- ``gce``: generalised cross-entropy (Zhang & Sabuncu 2018), ``(1 - p_y^q) / q`` with q in (0, 1]:
  -> CE as q -> 0, ``1 - p_y`` (MAE / 2, robust but slow to fit) at q = 1.
- ``sce``: symmetric cross-entropy (Wang et al. 2019), ``alpha * CE + beta * RCE``; the reverse CE
  ``-sum_k p_k log y_k`` has log 0 clamped to A = -4 (the paper's value), so RCE = 4 * (1 - p_y).
- ``focal``: focal loss (Lin et al. 2017), ``-(1 - p_y)^gamma log p_y``; its alpha becomes the per-class
  weights; gamma = 0 is CE.
- ``logit_adjusted``: CE on ``logits + tau * log prior`` (Menon et al. 2021); predict with the raw logits.

The validation loss the fit loop monitors should stay plain CE, so runs with different losses compare.

Plain and label-smoothed cross-entropy, for both trainers: ``fit()`` trains with ``nn.CrossEntropyLoss``
(or ``CrossEntropy`` above), i.e. ``F.cross_entropy``, and autograd differentiates it. The stacked
trainer (``dlrig.train.batched``) has no autograd and one smoothing value per model, so it takes the
loss from :func:`cross_entropy_rows` (torch's label-smoothing formula, term for term, on ``[M, R, K]``)
and its gradient from :func:`cross_entropy_grad` (``softmax - smoothed targets``).
tests/train/test_losses.py holds both to ``F.cross_entropy`` and to autograd of ``CrossEntropy``.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dlrig.errors import UserError
from dlrig.labels.imbalance import logit_adjustment

LOSS_NAMES: tuple[str, ...] = ("ce", "gce", "sce", "focal", "logit_adjusted")
SCE_LOG_ZERO = -4.0  # A in Wang et al. 2019: log(0) of the one-hot label, clamped


def cross_entropy_rows(
    log_probs: torch.Tensor, target: torch.Tensor, label_smoothing: float | torch.Tensor = 0.0
) -> torch.Tensor:
    """Per-row cross-entropy from log-probabilities ``[..., K]`` (``log_softmax`` of the logits) and
    targets ``[...]``, with label smoothing ``e``: torch's formula term for term,
    ``(1 - e) * -log p_y + (-sum_k log p_k) * (e / K)`` -- what ``nn.CrossEntropyLoss(label_smoothing=e,
    reduction="none")`` returns (unweighted), for any leading shape.

    ``label_smoothing``: a float, or a tensor broadcastable to ``target`` (one value per model of a stack,
    ``[M, 1]``). The log-probabilities are the caller's so that the stacked trainer computes them once for
    the loss and its gradient."""
    nll = -log_probs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    if not torch.is_tensor(label_smoothing) and label_smoothing == 0:
        return nll
    smooth = -log_probs.sum(-1)
    return (1 - label_smoothing) * nll + smooth * (label_smoothing / log_probs.shape[-1])


@cache
def _minus_one(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.tensor(-1.0, device=device, dtype=dtype)


def cross_entropy_grad(
    probs: torch.Tensor, target: torch.Tensor, label_smoothing: float | torch.Tensor = 0.0
) -> torch.Tensor:
    """Gradient of :func:`cross_entropy_rows` w.r.t. the logits, row by row, written into ``probs``
    (``softmax`` of the logits, ``[..., K]``) and returned: ``probs - q`` with
    ``q = (1 - e) * onehot(y) + e / K``, the distribution label smoothing trains towards.
    ``label_smoothing`` as in :func:`cross_entropy_rows`."""
    index = target.unsqueeze(-1)
    if not torch.is_tensor(label_smoothing) and label_smoothing == 0:
        return probs.scatter_add_(-1, index, _minus_one(probs.device, probs.dtype).expand_as(index))
    if torch.is_tensor(label_smoothing):
        e = label_smoothing.unsqueeze(-1)  # one value per row of target: [..., 1] against [..., K]
    else:
        e = probs.new_tensor(label_smoothing)
    probs.sub_(e / probs.shape[-1])  # - e / K everywhere, then - (1 - e) at the target
    return probs.scatter_add_(-1, index, (e - 1).expand_as(index))


def _as_weight(class_weight: np.ndarray | torch.Tensor | None, n_classes: int) -> torch.Tensor | None:
    if class_weight is None:
        return None
    w = torch.as_tensor(np.asarray(class_weight, dtype=np.float64), dtype=torch.float32)
    if w.shape != (n_classes,):
        raise ValueError(f"class_weight must have one entry per class ({n_classes}) (got {list(w.shape)})")
    if not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError("class_weight must be finite, >= 0 and not all zero")
    return w


class WeightedLoss(nn.Module):
    """Base: optional per-class weights (a buffer) and the weighted-mean reduction described above."""

    def __init__(self, n_classes: int, class_weight: np.ndarray | torch.Tensor | None = None) -> None:
        super().__init__()
        if n_classes < 2:
            raise ValueError(f"n_classes must be >= 2 (got {n_classes})")
        self.n_classes = n_classes
        self.register_buffer("weight", _as_weight(class_weight, n_classes))

    def _weight(self, logits: torch.Tensor) -> torch.Tensor | None:
        return None if self.weight is None else self.weight.to(logits.device, torch.float32)

    def per_sample(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``[N]`` losses, each already multiplied by its class weight."""
        raise NotImplementedError

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, sample_weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        if logits.dim() != 2 or logits.shape[1] != self.n_classes:
            raise ValueError(f"logits must be [N, {self.n_classes}] (got {list(logits.shape)})")
        if target.shape != logits.shape[:1]:
            raise ValueError(f"target must be [{logits.shape[0]}] (got {list(target.shape)})")
        losses = self.per_sample(logits, target)
        w = self._weight(logits)
        denom = torch.ones_like(losses) if w is None else w[target]
        if sample_weight is not None:
            s = torch.as_tensor(sample_weight, dtype=losses.dtype, device=losses.device)
            if s.shape != losses.shape:
                raise ValueError(f"sample_weight must be [{len(losses)}] (got {list(s.shape)})")
            losses, denom = losses * s, denom * s
        # All-zero weights (a batch of dropped rows) give 0 rather than 0/0 = NaN.
        return losses.sum() / denom.sum().clamp_min(torch.finfo(losses.dtype).tiny)

    def _log_p_target(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(logits.float(), dim=1).gather(1, target[:, None]).squeeze(1)

    def _class_factor(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor | float:
        w = self._weight(logits)
        return 1.0 if w is None else w[target]


class CrossEntropy(WeightedLoss):
    """``nn.CrossEntropyLoss(weight, label_smoothing)``, plus per-sample weights."""

    def __init__(
        self, n_classes: int, label_smoothing: float = 0.0, class_weight: np.ndarray | None = None
    ) -> None:
        super().__init__(n_classes, class_weight)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1) (got {label_smoothing})")
        self.label_smoothing = label_smoothing

    def per_sample(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(
            logits.float(),
            target,
            weight=self._weight(logits),
            reduction="none",
            label_smoothing=self.label_smoothing,
        )


class LogitAdjustedCrossEntropy(CrossEntropy):
    """CE on ``logits + tau * log prior`` (the prior of the fold's training labels)."""

    def __init__(
        self,
        n_classes: int,
        class_prior: np.ndarray,
        tau: float = 1.0,
        label_smoothing: float = 0.0,
        class_weight: np.ndarray | None = None,
    ) -> None:
        super().__init__(n_classes, label_smoothing, class_weight)
        adjustment = torch.as_tensor(logit_adjustment(class_prior, tau), dtype=torch.float32)
        if adjustment.shape != (n_classes,):
            raise ValueError(f"class_prior must have {n_classes} entries (got {len(adjustment)})")
        self.register_buffer("adjustment", adjustment)

    def per_sample(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return super().per_sample(logits.float() + self.adjustment.to(logits.device), target)


class GeneralizedCrossEntropy(WeightedLoss):
    """``(1 - p_y^q) / q`` (Zhang & Sabuncu 2018)."""

    def __init__(self, n_classes: int, q: float = 0.7, class_weight: np.ndarray | None = None) -> None:
        super().__init__(n_classes, class_weight)
        if not 0.0 < q <= 1.0:
            raise ValueError(f"q must be in (0, 1] (got {q})")
        self.q = q

    def per_sample(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # -expm1(q log p) = 1 - p^q, accurate when p^q is close to 1.
        loss = -torch.expm1(self.q * self._log_p_target(logits, target)) / self.q
        return loss * self._class_factor(logits, target)


class SymmetricCrossEntropy(WeightedLoss):
    """``alpha * CE + beta * RCE`` with RCE = -A * (1 - p_y), A = -4 (Wang et al. 2019)."""

    def __init__(
        self, n_classes: int, alpha: float = 0.1, beta: float = 1.0, class_weight: np.ndarray | None = None
    ) -> None:
        super().__init__(n_classes, class_weight)
        if alpha < 0 or beta < 0 or alpha + beta == 0:
            raise ValueError(f"alpha and beta must be >= 0 and not both 0 (got {alpha}, {beta})")
        self.alpha, self.beta = alpha, beta

    def per_sample(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_p = self._log_p_target(logits, target)
        ce = -log_p
        rce = -SCE_LOG_ZERO * -torch.expm1(log_p)  # sum_{k != y} p_k * (-A) = -A * (1 - p_y)
        return (self.alpha * ce + self.beta * rce) * self._class_factor(logits, target)


class FocalLoss(WeightedLoss):
    """``-(1 - p_y)^gamma * log p_y`` (Lin et al. 2017), class weights in the role of alpha."""

    def __init__(self, n_classes: int, gamma: float = 2.0, class_weight: np.ndarray | None = None) -> None:
        super().__init__(n_classes, class_weight)
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0 (got {gamma})")
        self.gamma = gamma

    def per_sample(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_p = self._log_p_target(logits, target)
        # Floor 1 - p_y away from 0: (1 - p)^gamma has an infinite slope there when gamma < 1.
        modulator = (-torch.expm1(log_p)).clamp_min(1e-12) ** self.gamma
        return modulator * -log_p * self._class_factor(logits, target)


def build_loss(
    name: str,
    *,
    n_classes: int,
    label_smoothing: float = 0.0,
    class_weight: np.ndarray | None = None,
    gce_q: float = 0.7,
    sce_alpha: float = 0.1,
    sce_beta: float = 1.0,
    focal_gamma: float = 2.0,
    class_prior: np.ndarray | None = None,
    tau: float = 1.0,
) -> WeightedLoss:
    """The training loss ``name`` (one of :data:`LOSS_NAMES`); options of other losses are ignored.

    ``class_weight`` and ``class_prior`` must come from the training labels of the fold being fitted.
    Label smoothing is refused for gce/sce/focal rather than silently dropped.
    """
    if name not in LOSS_NAMES:
        raise UserError(f"loss must be one of {list(LOSS_NAMES)} (got {name!r})")
    if label_smoothing and name not in ("ce", "logit_adjusted"):
        raise UserError(
            f"label_smoothing={label_smoothing} works only with the ce or logit_adjusted loss "
            f"(got loss {name!r}); set label_smoothing to 0"
        )
    if name == "ce":
        return CrossEntropy(n_classes, label_smoothing, class_weight)
    if name == "gce":
        return GeneralizedCrossEntropy(n_classes, gce_q, class_weight)
    if name == "sce":
        return SymmetricCrossEntropy(n_classes, sce_alpha, sce_beta, class_weight)
    if name == "focal":
        return FocalLoss(n_classes, focal_gamma, class_weight)
    if class_prior is None:
        raise ValueError("the logit_adjusted loss needs class_prior (from the fold's training labels)")
    return LogitAdjustedCrossEntropy(n_classes, class_prior, tau, label_smoothing, class_weight)


__all__ = [
    "LOSS_NAMES",
    "CrossEntropy",
    "FocalLoss",
    "GeneralizedCrossEntropy",
    "LogitAdjustedCrossEntropy",
    "SymmetricCrossEntropy",
    "WeightedLoss",
    "build_loss",
    "cross_entropy_grad",
    "cross_entropy_rows",
]
