"""detect: which training labels look wrong? Confident learning on out-of-fold probabilities computed
inside the training split (k-fold over its rows; the test split is never used).

Reports the estimated noise rate, the per-class confusion estimate, ambiguous vs confidently contradicted
samples, and -- when the labels stage injected noise -- precision/recall/F1 against the true flip mask.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import numpy as np
import torch

from dlrig.data.dataset import Dataset
from dlrig.data.folds import make_folds
from dlrig.errors import UserError
from dlrig.io import load_npz, save_json
from dlrig.labels.detect import detection_scores, find_label_issues
from dlrig.params import load_params
from dlrig.progress import Progress
from dlrig.seeds import derive_seed
from dlrig.select.scorers import TorchScorer
from dlrig.stage import run_stage


def check_detect_folds(train: Dataset, n_splits: int, path: str) -> None:
    """Refuse, naming labels.detect.n_splits, a training set its stratified folds cannot split."""
    counts = np.bincount(train.y, minlength=train.n_classes)
    present = np.flatnonzero(counts)
    if not len(present):
        raise UserError(f"{path}: holds no samples; rerun the labels stage")
    k = int(present[np.argmin(counts[present])])
    if counts[k] < n_splits:
        raise UserError(
            f"{path}: class {train.classes[k]!r} has {int(counts[k])} training sample(s), fewer than the "
            f"labels.detect.n_splits={n_splits} folds need: lower labels.detect.n_splits (>= 2), set "
            "labels.detect.enabled=false, or keep more of the class (labels.imbalance.ratio)"
        )
    if train.groups is not None and len(np.unique(train.groups)) < n_splits:
        raise UserError(
            f"{path}: {len(np.unique(train.groups))} group(s) (split.group_column) cannot fill "
            f"labels.detect.n_splits={n_splits} grouped folds: lower labels.detect.n_splits"
        )


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--train", default="data/processed/train_labels.npz")
    ap.add_argument("--meta", default="data/raw/meta.json")
    ap.add_argument("--out", default="reports/detect.json")
    ap.add_argument("--quiet", action="store_true",
                    help="no progress bar (also off when stderr is no terminal, under CI, or DLRIG_QUIET=1)")
    args = ap.parse_args(argv)

    params = load_params(args.params)
    cfg = params.labels.detect
    if not cfg.enabled:
        save_json(args.out, {"enabled": False})
        print("detect: off (labels.detect.enabled = false)")
        return
    torch.set_num_threads(params.compute.torch_threads)
    train = Dataset.load(args.train, args.meta)
    check_detect_folds(train, cfg.n_splits, args.train)
    arrays = load_npz(args.train)
    K, rows = train.n_classes, np.arange(len(train.y))
    folds = make_folds(train.y, train.groups, rows, cfg.n_splits, params.seed + 3)
    jobs = [({}, tr, te, derive_seed(params.seed, "detect", i)) for i, (tr, te) in enumerate(folds)]
    oof = np.zeros((len(rows), K))
    with Progress(len(jobs), "detect: out-of-fold fits", quiet=args.quiet) as bar:
        scorer = TorchScorer(train.X, train.y, K, params.fit_config(), "accuracy",
                             device=params.compute.device, progress=bar.tally)
        results = scorer.fit_score(jobs, None, keep_proba=True)
    for (_, _, te, _), result in zip(jobs, results, strict=True):
        oof[te] = np.asarray(result["proba"])
    issues = find_label_issues(train.y, oof, K, ambiguity_threshold=cfg.ambiguity_threshold)
    report = {"enabled": True, "n": int(len(rows)), "n_splits": cfg.n_splits, **issues["summary"]}
    flipped = arrays.get("flipped")
    if flipped is not None and flipped.any():
        report["against_injected"] = detection_scores(issues["issue_mask"], flipped.astype(bool))
        report["true_noise_rate"] = round(float(flipped.mean()), 6)
    save_json(args.out, report)
    found = report.get("against_injected")
    extra = f"; vs injected: F1 {found['f1']:.3f}" if found else ""
    print(f"detect: estimated noise rate {report['noise_rate']:.4f}, "
          f"{int(issues['issue_mask'].sum())} rows flagged{extra} -> {args.out}")


if __name__ == "__main__":
    run_stage(main)
