"""labels: optional controlled imbalance and label noise on the training split (off by default).

Writes data/processed/train_labels.npz (the set train uses, plus the clean labels and the flip mask for
measurement) and reports/labels.json. The test split is never corrupted. A class left too small for the
folds of train (``cv.*``) or detect (``labels.detect.n_splits``) is refused before anything is written.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import numpy as np

from dlrig.data.dataset import Dataset
from dlrig.io import save_json, save_npz
from dlrig.labels.corrupt import check_fold_sizes, corrupt_training_labels
from dlrig.params import load_params
from dlrig.stage import run_stage


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--train", default="data/processed/train.npz")
    ap.add_argument("--meta", default="data/raw/meta.json")
    ap.add_argument("--out", default="data/processed/train_labels.npz")
    ap.add_argument("--report", default="reports/labels.json")
    args = ap.parse_args(argv)

    params = load_params(args.params)
    train = Dataset.load(args.train, args.meta)
    out, report, truth = corrupt_training_labels(train, params.labels, params.seed)
    check_fold_sizes(out, np.bincount(train.y, minlength=train.n_classes), params.labels, params.cv)
    # Everything is checked; only writes follow.
    arrays = {"X": out.X, "y": out.y, **truth}
    if out.groups is not None:
        arrays["groups"] = out.groups
    save_npz(args.out, **arrays)
    save_json(args.report, report)
    print(f"labels: {report['n_after']} of {report['n_before']} training rows kept "
          f"(imbalance ratio {report['imbalance']['ratio']:.3g}), "
          f"{report['noise']['n_flipped']} labels flipped -> {args.out}")


if __name__ == "__main__":
    run_stage(main)
