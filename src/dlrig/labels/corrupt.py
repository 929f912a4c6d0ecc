"""The ``labels`` stage's work: controlled imbalance and label noise on the *training* split only.

The held-out test split is never touched, so test metrics keep measuring the truth. The clean labels and
the flip mask are kept beside the corrupted ones, so detection can be scored against the truth.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dlrig.data.dataset import Dataset
from dlrig.labels.imbalance import imbalance_summary, induce_imbalance
from dlrig.labels.noise import inject_noise, noise_summary
from dlrig.params import LabelsParams


def corrupt_training_labels(
    train: Dataset, cfg: LabelsParams, seed: int
) -> tuple[Dataset, dict[str, Any], dict[str, np.ndarray]]:
    """Imbalance first (drop rows), then noise (flip labels).

    Returns the corrupted set, a JSON report, and the truth: ``y_clean``, the ``flipped`` mask and the
    ``source_index`` of each kept row in the training split.
    """
    K = train.n_classes
    kept = np.arange(len(train.y))
    report: dict[str, Any] = {"n_before": int(len(train.y))}
    if cfg.imbalance.profile != "none" and cfg.imbalance.ratio > 1:
        kept = induce_imbalance(train.y, K, cfg.imbalance.profile, cfg.imbalance.ratio, seed,
                                minority=cfg.imbalance.minority)
    out = train.subset(kept)
    report["imbalance"] = {"profile": cfg.imbalance.profile, "requested_ratio": cfg.imbalance.ratio,
                           **imbalance_summary(out.y, K)}
    y_clean = out.y.copy()
    flipped = np.zeros(len(y_clean), dtype=bool)
    if cfg.noise.kind != "none" and cfg.noise.rate > 0:
        out.y, flipped = inject_noise(y_clean, K, cfg.noise.kind, cfg.noise.rate, seed + 1,
                                      mapping=cfg.noise.mapping)
    # "rate" (from the summary) is the realised flip rate; "requested_rate" is what params asked for.
    report["noise"] = {"kind": cfg.noise.kind, "requested_rate": cfg.noise.rate,
                       **noise_summary(y_clean, out.y, K)}
    report["n_after"] = int(len(out.y))
    return out, report, {"y_clean": y_clean, "flipped": flipped, "source_index": kept}
