"""compare: the tuned model against the baselines in ``params.compare`` -- on the same outer folds
(corrected resampled t-test, Bayesian correlated t-test, naive t-test for contrast), on the held-out
test predictions (McNemar), and by 5x2cv on the training split.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch

from dlrig.data.dataset import Dataset
from dlrig.evaluate.baselines import compare_with_baselines, planned_fits
from dlrig.evaluate.compare import markdown_table
from dlrig.io import load_json, save_json, save_text
from dlrig.params import FitConfig, load_params
from dlrig.progress import Progress
from dlrig.stage import run_stage
from dlrig.train.checkpoint import check_unseen, checkpoints_in, load_model


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--train", default="data/processed/train_labels.npz")
    ap.add_argument("--test", default="data/processed/test.npz")
    ap.add_argument("--meta", default="data/raw/meta.json")
    ap.add_argument("--model", default="models/model.pt")
    ap.add_argument("--folds", default="reports/cv/folds.json")
    ap.add_argument("--out", default="reports/compare.json")
    ap.add_argument("--table", default="reports/compare.md")
    ap.add_argument("--quiet", action="store_true",
                    help="no progress bar (also off when stderr is no terminal, under CI, or DLRIG_QUIET=1)")
    args = ap.parse_args(argv)

    params = load_params(args.params)
    torch.set_num_threads(params.compute.torch_threads)
    train, test = Dataset.load(args.train, args.meta), Dataset.load(args.test, args.meta)
    folds = load_json(args.folds)
    model, ckpt = load_model(args.model, sample_shape=test.sample_shape, classes=test.classes, data=args.test)
    tuned = FitConfig.model_validate(ckpt["config"])
    for key, path in _checkpoints(params, tuned):  # before any fit: one that saw held-out rows leaks
        check_unseen(path, key, (train.X, "the training split, which compare's folds hold out one by one"),
                     (test.X, "the test split"))
    print(f"compare: tuned model vs {sorted(params.compare.baselines) or 'no baselines'}")
    with Progress(planned_fits(params, folds), "compare: baseline fits", quiet=args.quiet) as bar:
        result = compare_with_baselines(params, train, test, folds, tuned, model, log=bar.write,
                                        progress=bar.tally)
    save_json(args.out, result)
    table = markdown_table(result["baselines"], result["reference"], result["metric"])
    save_text(args.table, f"# Tuned model vs baselines ({result['metric']})\n\n{table}")
    print(table)


def _checkpoints(params, tuned: FitConfig) -> list[tuple[str, str]]:
    """``(key, path)`` of every checkpoint a comparison reads: the tuned config's, each dlrig baseline's,
    and each pretrained_logreg's feature extractor."""
    found = checkpoints_in(tuned)
    for name, baseline in sorted(params.compare.baselines.items()):
        where = f"compare.baselines.{name}"
        if baseline.estimator == "pretrained_logreg" and baseline.params.get("checkpoint"):
            found.append((f"{where}.params.checkpoint", str(baseline.params["checkpoint"])))
        elif baseline.estimator == "dlrig":
            found += [(f"{where}.overrides: {key}", path)
                      for key, path in checkpoints_in(tuned.with_overrides(baseline.overrides))]
    return list(dict.fromkeys(found))


if __name__ == "__main__":
    run_stage(main)
