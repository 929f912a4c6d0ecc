"""evaluate: score the trained model on the held-out test split (touched here only, to score)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch

from dlrig.cli import run_stage
from dlrig.data.dataset import Dataset
from dlrig.errors import UserError
from dlrig.evaluate.metrics import classification_metrics, write_plot_data
from dlrig.io import save_json
from dlrig.params import load_params
from dlrig.train import predict_proba
from dlrig.train.checkpoint import load_model


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--test", default="data/processed/test.npz")
    ap.add_argument("--meta", default="data/raw/meta.json")
    ap.add_argument("--model", default="models/model.pt")
    ap.add_argument("--metrics", default="reports/metrics.json")
    ap.add_argument("--plots", default="reports/plots")
    args = ap.parse_args(argv)

    params = load_params(args.params)
    torch.set_num_threads(params.compute.torch_threads)
    test = Dataset.load(args.test, args.meta)
    model, ckpt = load_model(args.model)
    if list(ckpt["sample_shape"]) != test.sample_shape or list(ckpt["classes"]) != test.classes:
        raise UserError(
            f"{args.model}: trained on samples {ckpt['sample_shape']} with classes {ckpt['classes']}, "
            f"but {args.test} has {test.sample_shape} and {test.classes}; rerun train"
        )
    proba = predict_proba(model, test.X)
    metrics = classification_metrics(test.y, proba, test.classes)
    save_json(args.metrics, {"test": metrics})
    write_plot_data(args.plots, test.y, proba, test.classes)
    print(
        f"evaluate: test accuracy {metrics['accuracy']:.4f}, balanced {metrics['balanced_accuracy']:.4f}, "
        f"macro-F1 {metrics['macro_f1']:.4f} on {metrics['n']} samples -> {args.metrics}"
    )


if __name__ == "__main__":
    run_stage(main)
