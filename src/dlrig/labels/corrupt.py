"""The ``labels`` stage's work: controlled imbalance and label noise on the *training* split only.

The held-out test split is never touched, so test metrics keep measuring the truth. The clean labels and
the flip mask are kept beside the corrupted ones, so detection can be scored against the truth.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dlrig.data.dataset import Dataset
from dlrig.errors import UserError
from dlrig.labels.imbalance import imbalance_summary, induce_imbalance
from dlrig.labels.noise import inject_noise, noise_summary
from dlrig.params import CvParams, LabelsParams


def corrupt_training_labels(
    train: Dataset, cfg: LabelsParams, seed: int
) -> tuple[Dataset, dict[str, Any], dict[str, np.ndarray]]:
    """Imbalance first (drop rows), then noise (flip labels).

    Returns the corrupted set, a JSON report, and the truth: ``y_clean``, the ``flipped`` mask and the
    ``source_index`` of each kept row in the training split.
    """
    K = train.n_classes
    if K < 2:
        raise UserError(f"labels: the training split has {K} class(es) {train.classes}; classification "
                        "needs at least 2")
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


# ------------------------------------------------------------------------------- enough for the folds
def _survives(count: int, folds: list[int]) -> bool:
    """Whether a class of ``count`` rows has >= k rows for every nested stratified split in ``folds``.

    StratifiedKFold puts ceil(count / k) or floor(count / k) of a class in each test fold, so the
    smallest training part of a k-fold split keeps ``count - ceil(count / k)``.
    """
    for k in folds:
        if count < k:
            return False
        count -= math.ceil(count / k)
    return True


def min_per_class_for_cv(cv: CvParams) -> int:
    """Fewest rows a class needs so that every stratified split the train stage makes can be made.

    Depth 1: the outer folds. Depth 2: inner folds inside each outer-train (and on all rows for the final
    selection). Depth 3: middle folds inside each outer-train and inner folds inside each middle-train.
    Grouped folds (``split.group_column``) may need more.
    """
    if cv.depth == 1:
        chains = [[cv.outer_folds]]
    elif cv.depth == 2:
        chains = [[cv.outer_folds, cv.inner_folds], [cv.inner_folds]]
    else:
        chains = [[cv.outer_folds, cv.middle_folds, cv.inner_folds], [cv.outer_folds, cv.inner_folds],
                  [cv.middle_folds, cv.inner_folds], [cv.inner_folds]]
    need = 1
    while not all(_survives(need, chain) for chain in chains):
        need += 1
    return need


def _cv_keys(cv: CvParams) -> list[str]:
    """The fold counts that the train stage uses at this ``cv.depth``."""
    return ["cv.outer_folds"] + (["cv.middle_folds"] if cv.depth == 3 else []) + (
        ["cv.inner_folds"] if cv.depth >= 2 else [])


def check_fold_sizes(out: Dataset, before: np.ndarray, cfg: LabelsParams, cv: CvParams) -> None:
    """Refuse, before anything is written, a training set that the train (or detect) stage cannot fold.

    A class left with fewer rows than the stratified folds need makes those stages fail after the slow
    imports, or -- worse -- somewhere inside nested CV; a result that cannot be computed is refused here,
    naming the knob that shrank the class and the ones that set the need. ``before`` is the class counts
    of the training split before imbalance and noise.
    """
    counts = np.bincount(out.y, minlength=out.n_classes)
    cv_keys = _cv_keys(cv)
    cv_text = ", ".join(f"{key}={getattr(cv, key[3:])}" for key in cv_keys) + f" (cv.depth={cv.depth})"
    needs = [(min_per_class_for_cv(cv), cv_text, "the train stage's stratified folds", cv_keys)]
    if cfg.detect.enabled:
        needs.append((cfg.detect.n_splits, f"labels.detect.n_splits={cfg.detect.n_splits}",
                      "the detect stage's folds", ["labels.detect.n_splits"]))
    need = max(n for n, *_ in needs)
    present = np.flatnonzero(counts > 0)
    small = [int(k) for k in present if counts[k] < need]
    if not small:
        return
    k = min(small, key=lambda c: (counts[c], c))
    n = int(counts[k])
    unmet = [(m, text, what, keys) for m, text, what, keys in needs if n < m]
    unmet_text = "; ".join(
        f"{text} {'need' if len(keys) > 1 else 'needs'} at least {m} per class ({what})"
        for m, text, what, keys in unmet
    )
    imbalance = cfg.imbalance
    shrunk = imbalance.profile != "none" and imbalance.ratio > 1 and before[k] > n
    if shrunk:
        cause = (f"is left with {n} training sample(s) by labels.imbalance.ratio={imbalance.ratio:g} "
                 f"(profile {imbalance.profile}; {int(before[k])} before)")
        # The smallest class keeps round(n_max / ratio) (half up), which is >= need up to this ratio.
        most = math.floor(int(before.max()) / (need - 0.5))
        fixes = [f"lower labels.imbalance.ratio to at most {most}"] if most >= 1 and before[k] >= need else []
    elif cfg.noise.kind != "none" and cfg.noise.rate > 0 and before[k] > n:
        cause = f"is left with {n} training sample(s) by labels.noise.rate={cfg.noise.rate:g}"
        fixes = ["lower labels.noise.rate"]
    else:
        cause = f"has only {n} training sample(s)"
        fixes = ["collect more data"]
    fixes.append("lower " + " / ".join(key for *_, keys in unmet for key in keys))
    others = f" ({len(small) - 1} other class(es) too)" if len(small) > 1 else ""
    raise UserError(
        f"labels: class {out.classes[k]!r} {cause}{others}, but {unmet_text}: {', or '.join(fixes)}"
    )
