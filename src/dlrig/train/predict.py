"""From a trained model to numbers: class probabilities, and the selection metrics computed from them.

Below ``select`` and ``evaluate`` on purpose: the search, the baselines, the detect stage and the studies
all score a model the same way, without importing each other.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


@torch.no_grad()
def predict_proba(model: nn.Module, X: np.ndarray | torch.Tensor, batch_size: int = 2048) -> np.ndarray:
    """Class probabilities in eval mode (dropout off, batch norm running stats)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    X_t = torch.as_tensor(X, dtype=torch.float32)
    out = [
        torch.softmax(model(X_t[i : i + batch_size].to(device)), dim=1).cpu()
        for i in range(0, len(X_t), batch_size)
    ]
    model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def score_proba(y: np.ndarray, proba: np.ndarray, n_classes: int) -> dict[str, float]:
    """The selection metrics (higher is better for all four) from predicted probabilities."""
    from sklearn.metrics import balanced_accuracy_score, f1_score, log_loss

    pred = proba.argmax(1)
    return {
        "accuracy": float((pred == y).mean()),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
        "macro_f1": float(f1_score(y, pred, average="macro", labels=np.unique(y), zero_division=0)),
        "neg_log_loss": -float(log_loss(y, np.clip(proba, 1e-15, 1), labels=np.arange(n_classes))),
    }


__all__ = ["predict_proba", "score_proba"]
