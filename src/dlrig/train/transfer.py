"""Transfer learning: start a fit from a pretrained dlrig checkpoint's body (``train.transfer``).

A model is ``Standardize -> body -> head``. :func:`apply_transfer` (called by ``fit()`` right after it
builds the model) copies the checkpoint's body weights into it, decides which body *blocks* train, and
returns the optimizer's per-parameter learning-rate scales plus the callbacks the mode needs. Modes:

- ``scratch``: the checkpoint is ignored (the baseline every other mode is measured against);
- ``linear_probe``: the body is frozen -- ``requires_grad`` off *and* its modules held in eval mode, so
  batch-norm running statistics and dropout do not move either -- and only the new head trains;
- ``finetune``: every layer trains, the body at ``optim.lr x body_lr_scale`` (discriminative rates);
- ``finetune_top``: only the last ``unfreeze`` body blocks train (at the body rate), with the head;
- ``gradual``: ULMFiT's gradual unfreezing -- the head alone first, then one more block from the top every
  ``unfreeze_every`` epochs (:class:`GradualUnfreezing`).

A *block* is a body layer with parameters (Linear, Conv2d, ...) with the layers that follow it up to the
next one (its norm, activation, dropout, pooling): the unit a "layer" of a network means in these papers.

The head is re-initialised (``head: new``): the target's classes are other classes, even when their number
matches the source's; ``head: keep`` keeps the checkpoint's head and needs the same number of classes.
The input scaler (``scaler``): ``source`` keeps the checkpoint's Standardize statistics -- the body was
trained on inputs scaled that way, and a few target rows give noisy per-pixel statistics; ``refit`` uses
the ones fit() fitted on this fit's gradient rows. Neither sees a held-out row of the target: the source
statistics come from the source data. (What does leak is a checkpoint trained on the very rows a CV later
holds out -- the weights carry them either way; pretrain on other data.)

Adam and the other optimizers keep per-parameter state that starts at the first step a parameter has a
gradient. Gradual unfreezing therefore puts the frozen body into the optimizer from the start (at the
body rate) and only flips ``requires_grad``: a frozen parameter has no gradient, so torch skips it (no
step, no weight decay, no state); once unfrozen, its moments start from zero with its own step count --
Adam's bias correction is right for it, and no optimizer or scheduler is rebuilt mid-run.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dlrig.data.sources import sha256_file
from dlrig.errors import UserError
from dlrig.params import FitConfig, TransferParams
from dlrig.train.callbacks import Callback

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)
_KEY = "train.transfer.pretrained"


@dataclass
class Transfer:
    """What :func:`apply_transfer` hands back to fit(): per-parameter lr scales for the optimizer (a name
    listed here is in the optimizer even while frozen) and the callbacks of the mode."""

    lr_scales: dict[str, float] = field(default_factory=dict)
    callbacks: list[Callback] = field(default_factory=list)
    blocks: list[list[int]] = field(default_factory=list)  # model indices of each body block


def weights_sha256(path: str | Path) -> str:
    """The checkpoint file's sha256: what the fit-cache key records (a path says nothing of its bytes)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{_KEY}: {path}: file not found (run `dvc repro studies/dvc.yaml:pretrain`)")
    # Read every time (a checkpoint of these models is kilobytes to a few megabytes): a cache keyed on
    # the file's mtime could miss a rewrite within the file system's timestamp granularity.
    return sha256_file(p)


def uses_checkpoint(config: FitConfig) -> bool:
    t = config.train.transfer
    return t.mode != "scratch" and t.pretrained is not None


def body_blocks(model: nn.Sequential) -> list[list[int]]:
    """Indices into ``model`` of each body block (between the scaler at 0 and the head at -1): a layer
    with parameters starts one; norms, activations, dropout and pooling join the block before them (a
    Flatten before the first has nothing to freeze and belongs to none)."""
    blocks: list[list[int]] = []
    for i in range(1, len(model) - 1):
        layer = model[i]
        if any(True for _ in layer.parameters()) and not isinstance(layer, _NORMS):
            blocks.append([i])
        elif blocks:
            blocks[-1].append(i)
    return blocks


def load_source(path: str | Path) -> tuple[nn.Sequential, dict[str, Any]]:
    """The pretrained model as its checkpoint describes it (one-line errors: :func:`load_model`)."""
    from dlrig.train.checkpoint import load_model

    weights_sha256(path)  # a missing file: one line naming the key
    with torch.random.fork_rng(devices=[]):  # building it draws init weights: leave the fit's stream alone
        return load_model(path)


def apply_transfer(model: nn.Sequential, config: FitConfig, n_classes: int) -> Transfer | None:
    """Load the checkpoint's body into ``model`` (built by fit() for this data) and set up the mode.

    None for ``scratch``. Refuses, with one line naming the first layer that does not fit, a checkpoint
    of another architecture or input shape -- before any training.
    """
    from dlrig.train.checkpoint import check_state_dict

    t: TransferParams = config.train.transfer
    if not uses_checkpoint(config):
        return None
    path = t.pretrained
    source, ckpt = load_source(path)
    head = len(model) - 1
    # Sequential names layers by position, so this model's scaler + body has the source's keys: everything
    # but the head must match (the scaler's shape is the input's), first mismatch named in one line.
    body = nn.Sequential(*model[:head])
    state = {k: v for k, v in source.state_dict().items() if int(k.split(".", 1)[0]) < head}
    check_state_dict(path, body, state, config, fix=f"give {_KEY} a checkpoint of this architecture")
    if t.scaler == "refit":  # keep the statistics fit() fitted on this fit's gradient rows
        state = {k: v for k, v in state.items() if k not in {"0.mean", "0.scale"}}
    src_classes = len(ckpt["classes"])
    if t.head == "keep" and src_classes != n_classes:
        raise UserError(f"train.transfer.head: keep needs the checkpoint's number of classes ({src_classes}"
                        f" in {path}), but this data has {n_classes}; use head: new")
    with torch.no_grad():
        body.load_state_dict(state, strict=False)
        if t.head == "keep":
            model[head].load_state_dict(source[-1].state_dict())

    blocks = body_blocks(model)
    params = {i: [n for n, _ in model.named_parameters() if int(n.split(".", 1)[0]) in block]
              for i, block in enumerate(blocks)}
    if t.mode == "finetune_top" and t.unfreeze > len(blocks):
        raise UserError(f"train.transfer.unfreeze: {t.unfreeze} blocks asked but the model's body has "
                        f"{len(blocks)} (1..{len(blocks)}; or mode: finetune)")
    out = Transfer(blocks=blocks)
    if t.mode == "linear_probe":
        frozen = list(range(len(blocks)))
    elif t.mode == "finetune_top":
        frozen = list(range(len(blocks) - t.unfreeze))
    elif t.mode == "gradual":
        frozen = list(range(len(blocks)))
        out.callbacks.append(GradualUnfreezing(blocks, t.unfreeze_every))
    else:  # finetune
        frozen = []
    for b in frozen:
        freeze(model, blocks[b])
    for b in range(len(blocks)):
        if b not in frozen or t.mode == "gradual":
            out.lr_scales.update(dict.fromkeys(params[b], t.body_lr_scale))
    out.callbacks.append(_ReleaseAtEnd(blocks))
    return out


def _stay_eval(self: nn.Module, mode: bool = True) -> nn.Module:  # noqa: ARG001
    return nn.Module.train(self, False)


def freeze(model: nn.Sequential, block: list[int]) -> None:
    """No gradients, and eval mode that ``model.train()`` cannot undo (batch norm and dropout stay put)."""
    for i in block:
        for module in model[i].modules():
            module.train = types.MethodType(_stay_eval, module)
            module.eval()
            for p in module.parameters(recurse=False):
                p.requires_grad_(False)


def unfreeze(model: nn.Sequential, block: list[int]) -> None:
    for i in block:
        for module in model[i].modules():
            module.__dict__.pop("train", None)
            module.train(model.training)
            for p in module.parameters(recurse=False):
                p.requires_grad_(True)


def frozen_blocks(model: nn.Sequential, blocks: list[list[int]]) -> list[int]:
    return [b for b, block in enumerate(blocks)
            if all(not p.requires_grad for i in block for p in model[i].parameters())]


class GradualUnfreezing(Callback):
    """Unfreeze one more body block, top down, after every ``every`` epochs (Howard & Ruder 2018)."""

    def __init__(self, blocks: list[list[int]], every: int) -> None:
        self.blocks, self.every = blocks, every
        self.unfrozen_at: list[int] = []  # the epoch after which each block (top first) was unfrozen

    def on_epoch_end(self, state, record: dict[str, float]) -> None:
        if state.epoch % self.every or len(self.unfrozen_at) == len(self.blocks):
            return
        unfreeze(state.model, self.blocks[len(self.blocks) - 1 - len(self.unfrozen_at)])
        self.unfrozen_at.append(state.epoch)


class _ReleaseAtEnd(Callback):
    """After training the model is an ordinary one again (trainable, plain ``train()``): what fit returns
    and what a checkpoint saves carries no trace of the freezing."""

    def __init__(self, blocks: list[list[int]]) -> None:
        self.blocks = blocks

    def on_fit_end(self, state) -> None:
        for block in self.blocks:
            unfreeze(state.model, block)


__all__ = ["GradualUnfreezing", "Transfer", "apply_transfer", "body_blocks", "freeze", "frozen_blocks",
           "load_source", "unfreeze", "uses_checkpoint", "weights_sha256"]

