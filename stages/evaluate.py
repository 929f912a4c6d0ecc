"""evaluate: score the trained model on the held-out test split (touched here only, to score).

Writes test metrics with bootstrap intervals, the nested-CV estimate with its interval, and calibration
(ECE before/after temperature scaling fitted on the training split's early-stopping rows, with the guard
rails of ``dlrig.evaluate.holdout.calibration``) to reports/metrics.json, and the few headline numbers of
it (``dlrig.evaluate.holdout.HEADLINE_KEYS``) to reports/headline.json, the file dvc.yaml declares as the
metric so that `dvc metrics show` and `dvc exp show` stay narrow.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from dlrig.data.dataset import Dataset
from dlrig.errors import UserError
from dlrig.evaluate.holdout import calibration, headline, holdout_metrics, precision_recall
from dlrig.evaluate.metrics import write_plot_data
from dlrig.io import load_json, load_npz, save_json
from dlrig.params import FitConfig, load_params
from dlrig.stage import run_stage
from dlrig.train import predict_proba
from dlrig.train.checkpoint import check_unseen, checkpoints_in, load_model


def fitting_rows(train_path: str, meta_path: str, model: torch.nn.Module,
                 ckpt: dict) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """(labels, predicted probabilities, flipped mask) of the final fit's early-stopping rows, the rows
    temperature scaling is fitted on; all None when there are none. The mask (written by the labels stage)
    is None when the training file lacks it, so calibration can warn when T is fitted to flipped labels."""
    val_index = np.asarray(ckpt["extra"].get("val_index", []), dtype=np.int64)
    if not len(val_index):
        return None, None, None
    train = Dataset.load(train_path, meta_path)
    if val_index.max() >= len(train.y):
        raise UserError(f"{train_path}: has {len(train.y)} rows, but the model's early-stopping rows reach "
                        f"row {val_index.max()}; rerun train")
    flipped = load_npz(train_path).get("flipped")
    if flipped is not None and len(flipped) != len(train.y):
        raise UserError(f"{train_path}: 'flipped' has {len(flipped)} entries for {len(train.y)} rows; "
                        "rerun the labels stage")
    flipped_fit = None if flipped is None else flipped[val_index]
    return train.y[val_index], predict_proba(model, train.X[val_index]), flipped_fit


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--train", default="data/processed/train_labels.npz")
    ap.add_argument("--test", default="data/processed/test.npz")
    ap.add_argument("--meta", default="data/raw/meta.json")
    ap.add_argument("--model", default="models/model.pt")
    ap.add_argument("--cv", default="reports/cv/summary.json")
    ap.add_argument("--metrics", default="reports/metrics.json", help="every test and CV number")
    ap.add_argument("--headline", default=None,
                    help="the few numbers `dvc metrics show` and `dvc exp show` list (the DVC metric); "
                         "default: headline.json beside --metrics")
    ap.add_argument("--plots", default="reports/plots")
    args = ap.parse_args(argv)

    params = load_params(args.params)
    torch.set_num_threads(params.compute.torch_threads)
    test = Dataset.load(args.test, args.meta)
    model, ckpt = load_model(args.model, sample_shape=test.sample_shape, classes=test.classes, data=args.test)
    for key, path in checkpoints_in(FitConfig.model_validate(ckpt["config"])):  # the model learnt from it
        check_unseen(path, key, (test.X, "the test split"))
    cv = load_json(args.cv)
    proba = predict_proba(model, test.X)
    metrics = holdout_metrics(test.y, proba, test.classes, seed=params.seed)
    pr_metrics, pr_curve = precision_recall(test.y, proba, test.classes)
    metrics.update(pr_metrics)

    y_fit, proba_fit, flipped_fit = fitting_rows(args.train, args.meta, model, ckpt)
    calib, curves = calibration(test.y, proba, y_fit, proba_fit, flipped_fit=flipped_fit)

    full = {
        "test": metrics,
        "cv": {"metric": cv["metric"], "depth": cv["depth"], "optimistic": cv["optimistic"],
               "mean": cv["mean"], "std": cv["std"],
               "ci95": {"low": cv["ci95"][0], "high": cv["ci95"][1]}, "optimism": cv["optimism"]},
        "calibration": calib,
    }
    save_json(args.metrics, full)
    save_json(args.headline or Path(args.metrics).with_name("headline.json"), headline(full))
    write_plot_data(args.plots, test.y, proba, test.classes)
    save_json(f"{args.plots}/precision_recall.json", pr_curve)
    for name in ("before", "after"):  # temperature scaling; "after" is empty when no T could be fitted
        save_json(f"{args.plots}/reliability_{name}.json", [r for r in curves.get(name, []) if r["count"]])
    ci = metrics["ci95"]["accuracy"]
    if calib["temperature_fitted"]:
        verdict = "worse" if calib["ece_change"] > 0 else "better" if calib["ece_change"] < 0 else "same"
        scaled = f" -> {calib['ece_scaled']:.4f} at T={calib['temperature']:.2f} ({verdict})"
    else:
        scaled = f", no temperature fitted: {calib['reason']}"
    print(
        f"evaluate: test accuracy {metrics['accuracy']:.4f} (95% CI {ci['low']:.3f}-{ci['high']:.3f}), "
        f"balanced {metrics['balanced_accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f} on {metrics['n']} "
        f"samples; CV {cv['mean']:.4f} ± {cv['std']:.4f}; ECE {calib['ece']:.4f}{scaled} -> {args.metrics}"
    )
    for warning in calib["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)


if __name__ == "__main__":
    run_stage(main)
