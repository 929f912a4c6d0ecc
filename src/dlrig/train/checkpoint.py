"""Checkpoints carry the config they were trained with, so a model file is enough to rebuild the model.

Only tensors and plain Python values go in: the file loads with ``torch.load(weights_only=True)``.

A checkpoint also records a digest of every sample it was trained on (``trained_rows``,
:func:`dlrig.data.dataset.row_digests`). A model that starts from it (``train.transfer.pretrained``), learns
from it (``train.distill.teacher``) or uses its features (compare's ``pretrained_logreg``) carries what it
learnt about those rows; if some are rows a CV or the test split holds out, the estimate leaks.
:func:`check_unseen` refuses that, with one line, before any training.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from torch import nn

import dlrig
from dlrig.errors import UserError
from dlrig.io import load_checkpoint, save_checkpoint
from dlrig.models import build_model
from dlrig.params import FitConfig, ModelBase, format_validation_error


def save_model(
    path: str | Path,
    model: nn.Module,
    config: FitConfig,
    *,
    sample_shape: list[int],
    classes: list[str],
    seed: int,
    rows: Any = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """``rows``: the samples the model was trained on (gradient and early-stopping rows), recorded as
    digests for :func:`check_unseen`."""
    from dlrig.data.dataset import row_digests

    trained = {} if rows is None else {"trained_rows": torch.from_numpy(row_digests(rows))}
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
            **trained,
        },
    )


def check_unseen(path: str | Path, key: str, *held_out: tuple[Any, str]) -> None:
    """Refuse (one line naming ``key``) a checkpoint trained on any sample of the ``(X, what)`` sets held
    out (``what``: the rows in words). A checkpoint without the record (written by another tool or an
    older dlrig) cannot be checked and passes."""
    import numpy as np

    from dlrig.data.dataset import row_digests

    ckpt = load_checkpoint(path)
    seen = ckpt.get("trained_rows") if isinstance(ckpt, dict) else None
    if seen is None:
        return
    for X, what in held_out:
        overlap = int(np.isin(row_digests(X), seen.numpy()).sum()) if len(X) else 0
        if overlap:
            raise UserError(
                f"{key}: {path} was trained on {overlap} of the {len(X)} rows of {what}: its estimate would "
                f"leak what the checkpoint learnt from them (use a checkpoint trained on rows this run does "
                f"not hold out: another data set, or classes this data set leaves out)"
            )


def checkpoints_in(config: Any) -> list[tuple[str, str]]:
    """``(key, path)`` of every checkpoint a fit with ``config`` (a FitConfig) reads."""
    found = [("train.transfer.pretrained", config.train.transfer.pretrained),
             ("train.distill.teacher", config.train.distill.teacher)]
    return [(key, str(path)) for key, path in found if path]


def load_model(
    path: str | Path,
    *,
    sample_shape: Sequence[int] | None = None,
    classes: Sequence[str] | None = None,
    data: str | Path | None = None,
) -> tuple[nn.Sequential, dict[str, Any]]:
    """Rebuild the network from the checkpoint's own config and load its weights (eval mode).

    Every way the file can fail to fit is one :class:`UserError` naming it: not a dlrig checkpoint, a
    config this version cannot read, weights of another architecture (:func:`check_state_dict`), or --
    when the caller passes the data's ``sample_shape`` / ``classes`` (``data`` names that file) -- a
    model trained on other samples or classes.
    """
    ckpt = load_checkpoint(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != "dlrig-checkpoint/1":
        raise UserError(f"{path}: not a dlrig checkpoint (no 'format: dlrig-checkpoint/1')")
    missing = [k for k in ("config", "state_dict", "sample_shape", "classes") if k not in ckpt]
    if missing:
        raise UserError(f"{path}: a damaged dlrig checkpoint (no {', '.join(missing)}); rerun train")
    check_data(path, ckpt, sample_shape, classes, data)
    try:
        config = FitConfig.model_validate(ckpt["config"])
    except ValidationError as exc:
        first = format_validation_error(exc, source="config").splitlines()[0]
        raise UserError(
            f"{path}: its {first} (written by dlrig {ckpt.get('dlrig_version', '?')}, read by "
            f"{dlrig.__version__}); rerun train"
        ) from None
    model = build_model(config.model, ckpt["sample_shape"], len(ckpt["classes"]))
    check_state_dict(path, model, ckpt["state_dict"], config)
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model, ckpt


def check_data(
    path: str | Path,
    ckpt: dict[str, Any],
    sample_shape: Sequence[int] | None,
    classes: Sequence[str] | None,
    data: str | Path | None = None,
) -> None:
    """Refuse a model trained on samples of another shape, or on other classes, than the data given."""
    where = data or "the data"
    trained_shape, trained_classes = list(ckpt["sample_shape"]), [str(c) for c in ckpt["classes"]]
    if sample_shape is not None and list(sample_shape) != trained_shape:
        raise UserError(
            f"{path}: trained on samples of shape {trained_shape}, but {where} has samples of shape "
            f"{list(sample_shape)}; rerun train on this data"
        )
    if classes is not None and list(classes) != trained_classes:
        if len(classes) != len(trained_classes):
            detail = f"{len(trained_classes)} classes, but {where} has {len(classes)}"
        else:
            detail = f"classes {trained_classes}, but {where} has {list(classes)}"
        raise UserError(f"{path}: trained on {detail}; rerun train on this data")


def _architecture(config: FitConfig) -> str:
    """The family and its own shape keys (``model.name=mlp, model.hidden=64, model.depth=2``)."""
    shared = set(ModelBase.model_fields) - {"name"}
    return ", ".join(f"model.{k}={v}" for k, v in config.model.model_dump().items() if k not in shared)


def check_state_dict(
    path: str | Path, model: nn.Module, state: Any, config: FitConfig | None = None, *,
    fix: str = "rerun train",
) -> None:
    """Refuse weights that do not fit ``model`` with one line naming the first layer that differs.

    ``load_state_dict`` would raise a multi-line RuntimeError listing every mismatch; the first one is
    enough to tell that the weights come from another architecture (or another dlrig version).
    """
    arch = f" ({_architecture(config)})" if config is not None else ""
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path}: the checkpoint's state_dict is not a mapping of tensors; {fix}")
    expected = model.state_dict()
    extra = [k for k in state if k not in expected]
    for key, tensor in expected.items():
        if key not in state:
            instead = f", which holds {extra[0]!r} instead" if extra else ""
            raise UserError(
                f"{path}: layer {key!r} of its config{arch} is missing from the checkpoint{instead}; "
                f"the weights come from another architecture: {fix}"
            )
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise UserError(
                f"{path}: layer {key!r} has shape {list(state[key].shape)} in the checkpoint but "
                f"{list(tensor.shape)} in its config{arch}; the weights come from another architecture: "
                f"{fix}"
            )
    if extra:
        raise UserError(
            f"{path}: the checkpoint holds layer {extra[0]!r}, which its config{arch} does not build "
            f"({len(extra)} such tensor(s)); the weights come from another architecture: {fix}"
        )
