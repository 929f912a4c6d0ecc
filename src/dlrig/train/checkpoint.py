"""Checkpoints carry the config they were trained with, so a model file is enough to rebuild the model.

Only tensors and plain Python values go in: the file loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

import dlrig
from dlrig.errors import UserError
from dlrig.io import load_checkpoint, save_checkpoint
from dlrig.models import build_model
from dlrig.params import FitConfig


def save_model(
    path: str | Path,
    model: nn.Module,
    config: FitConfig,
    *,
    sample_shape: list[int],
    classes: list[str],
    seed: int,
    extra: dict[str, Any] | None = None,
) -> None:
    save_checkpoint(
        path,
        {
            "format": "dlrig-checkpoint/1",
            "dlrig_version": dlrig.__version__,
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "config": config.model_dump(mode="json"),
            "sample_shape": list(sample_shape),
            "classes": list(classes),
            "seed": seed,
            "extra": extra or {},
        },
    )


def load_model(path: str | Path) -> tuple[nn.Sequential, dict[str, Any]]:
    """Rebuild the network from the checkpoint's own config and load its weights (eval mode)."""
    ckpt = load_checkpoint(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != "dlrig-checkpoint/1":
        raise UserError(f"{path}: not a dlrig checkpoint (no 'format: dlrig-checkpoint/1')")
    config = FitConfig.model_validate(ckpt["config"])
    model = build_model(config.model, ckpt["sample_shape"], len(ckpt["classes"]))
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model, ckpt
