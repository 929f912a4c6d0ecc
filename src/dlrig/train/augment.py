"""Data augmentation and mixing of the gradient batches: what :func:`dlrig.train.fit` does to each batch of
gradient rows before the forward pass (``train.augment.*``, ``train.mixup_alpha``, ``train.cutmix_alpha``).

Only the batches that take gradient steps pass through here: the early-stopping rows, the test rows and any
held-out rows are never augmented or mixed (tests/train/test_augment.py poisons them to prove it). The
transforms are torchvision's (``torchvision.transforms.v2``):

- per image: random flips, ``RandomAffine`` (rotation, translation, zoom; the uncovered border is filled with
  0) and ``RandomErasing`` (one rectangle set to 0), each image with its own random draw -- v2 transforms
  given a batch would draw ONE set of parameters for all of it, so they run image by image;
- per batch: ``GaussianNoise`` (in the data's own pixel units, not clipped: digits run 0..16, not 0..1),
  then ``MixUp`` or ``CutMix`` (one chosen at random per batch when both are on), which turn the integer
  labels into soft targets ``[B, K]``. fit's loss takes them as they are: ``nn.CrossEntropyLoss`` with
  probability targets is ``-sum_k q_k log p_k``; with ``train.label_smoothing`` e it trains towards
  ``(1 - e) q + e / K`` (torch's formula: the mixed target, smoothed). Mixing needs loss ce without class
  weights (params refuse the rest: gce/sce/focal and the class-weighted reduction are defined on one label
  per row). Training accuracy counts a mixed row against its soft target's argmax, the class most of the
  mixed input shows.

They act on the raw pixels, before the model's first layer (``Standardize``) scales them, so 0 is the
data's own background (black on digits), and the scaler fitted on the un-augmented gradient rows stays
the one the model predicts with.

Reproducible and isolated: the transforms draw from torch's global generator, so every call runs inside
``torch.random.fork_rng`` with the augmenter's own generator state, seeded from the fit seed
(``derive_seed(seed, "augment")``) and carried from batch to batch. Same params, same seed: the same
augmented batches and the same weights; and turning augmentation on does not move the dropout masks or
the initial weights, which keep drawing from the fit's own stream.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from dlrig.errors import UserError
from dlrig.params import TrainParams
from dlrig.seeds import derive_seed


def mixing(tcfg: TrainParams) -> bool:
    """Whether batches get soft targets (mixup or cutmix on)."""
    return tcfg.mixup_alpha > 0 or tcfg.cutmix_alpha > 0


class Augmenter:
    """``augmenter(xb, yb) -> (xb', target)``: the batch transformed; ``target`` is ``yb`` unchanged, or
    soft targets ``[B, K]`` (float) when mixup / cutmix is on."""

    def __init__(self, tcfg: TrainParams, sample_shape: Sequence[int], n_classes: int, seed: int) -> None:
        # torchvision is imported here, not at module level: fit() imports this module, and torchvision
        # costs seconds of start-up (it drags in torch._dynamo) to every stage that never augments.
        from torchvision.transforms import v2

        a = tcfg.augment
        image = len(sample_shape) == 3
        if (a.active or tcfg.cutmix_alpha > 0) and not image:
            keys = "train.augment" if a.active else "train.cutmix_alpha"
            raise UserError(f"{keys}: augmentation needs image data [N, C, H, W]; these samples have shape "
                            f"{list(sample_shape)} (turn it off for tables)")
        per_image: list[v2.Transform] = []
        if a.hflip:
            per_image.append(v2.RandomHorizontalFlip())
        if a.vflip:
            per_image.append(v2.RandomVerticalFlip())
        if a.rotation > 0 or a.translate > 0 or a.scale != [1.0, 1.0]:
            per_image.append(v2.RandomAffine(
                degrees=a.rotation,
                translate=(a.translate, a.translate) if a.translate > 0 else None,
                scale=tuple(a.scale) if a.scale != [1.0, 1.0] else None,
                # bilinear: at 8 x 8 pixels, nearest-neighbour rotation breaks strokes apart
                interpolation=v2.InterpolationMode.BILINEAR,
                fill=0,  # the background of digit-like images
            ))
        if a.erasing > 0:
            per_image.append(v2.RandomErasing(p=a.erasing, value=0))
        self.per_image = v2.Compose(per_image) if per_image else None
        self.noise = v2.GaussianNoise(mean=0.0, sigma=a.noise_std, clip=False) if a.noise_std > 0 else None
        mixers: list[v2.Transform] = []
        if tcfg.mixup_alpha > 0:
            mixers.append(v2.MixUp(alpha=tcfg.mixup_alpha, num_classes=n_classes))
        if tcfg.cutmix_alpha > 0:
            mixers.append(v2.CutMix(alpha=tcfg.cutmix_alpha, num_classes=n_classes))
        self.mix = None if not mixers else mixers[0] if len(mixers) == 1 else v2.RandomChoice(mixers)
        self._state = torch.Generator().manual_seed(derive_seed(seed, "augment")).get_state()

    def __call__(self, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        device = xb.device
        x, target = xb.cpu(), yb.cpu()
        with torch.random.fork_rng(devices=[]):  # the augmenter's own stream, not the fit's
            torch.set_rng_state(self._state)
            if self.per_image is not None:
                x = torch.stack([self.per_image(img) for img in x])
            if self.noise is not None:
                x = self.noise(x)
            if self.mix is not None:
                shape = x.shape
                # MixUp wants [B, C, H, W]; a table row mixes the same way viewed as a 1 x 1 x F image.
                x4 = x if x.dim() == 4 else x.reshape(len(x), 1, 1, -1)
                x4, target = self.mix(x4, target)
                x = x4.reshape(shape)
            self._state = torch.get_rng_state()
        return x.to(device), target.to(device)


def build_augmenter(
    tcfg: TrainParams, sample_shape: Sequence[int], n_classes: int, seed: int
) -> Augmenter | None:
    """The augmenter ``tcfg`` asks for, or None when augmentation and mixing are off (then fit's batches
    are exactly what they were without this module)."""
    if not (tcfg.augment.active or mixing(tcfg)):
        return None
    return Augmenter(tcfg, sample_shape, n_classes, seed)


def hard_labels(target: torch.Tensor) -> torch.Tensor:
    """The label a training-accuracy count compares with: the target itself, or for soft (mixed) targets
    its argmax -- the class that makes up most of the mixed input (ties: the lower class index)."""
    return target.argmax(1) if target.dim() == 2 else target


__all__ = ["Augmenter", "build_augmenter", "hard_labels", "mixing"]
