"""train: fit the model on the training split (early stopping carved from it), save models/model.pt.

Curves are logged with DVCLive to reports/train/ (``dvc plots show``, ``dvc exp show``); the full history
goes to reports/train/history.json for the report.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch

from dlrig.cli import run_stage
from dlrig.data.dataset import Dataset
from dlrig.io import save_json
from dlrig.models import count_parameters
from dlrig.params import load_params
from dlrig.train import fit
from dlrig.train.checkpoint import save_model


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--train", default="data/processed/train.npz")
    ap.add_argument("--meta", default="data/raw/meta.json")
    ap.add_argument("--model", default="models/model.pt")
    ap.add_argument("--logdir", default="reports/train")
    args = ap.parse_args(argv)

    params = load_params(args.params)
    torch.set_num_threads(params.compute.torch_threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    train = Dataset.load(args.train, args.meta)
    config = params.fit_config()

    from dvclive import Live  # imported late: the params above are checked before any slow import

    with Live(dir=args.logdir, save_dvc_exp=False, dvcyaml=None, report=None) as live:
        def log_epoch(record: dict[str, float]) -> None:
            for key, value in record.items():
                if key != "epoch":
                    live.log_metric(key.replace("_", "/", 1), value)
            live.next_step()

        result = fit(
            train.X, train.y, train.n_classes, config, params.seed,
            device=params.compute.device, on_epoch=log_epoch,
        )

    save_model(
        args.model, result.model, config,
        sample_shape=train.sample_shape, classes=train.classes, seed=params.seed,
        extra={"best_epoch": result.best_epoch, "n_fit": len(result.train_index)},
    )
    save_json(
        f"{args.logdir}/history.json",
        {
            "history": result.history,
            "best_epoch": result.best_epoch,
            "stopped_early": result.stopped_early,
            "n_parameters": count_parameters(result.model),
            "n_fit": int(len(result.train_index)),
            "n_val": int(len(result.val_index)),
            "seconds": round(result.seconds, 3),
        },
    )
    last = result.history[-1]
    print(
        f"train: {len(result.history)} epochs (best {result.best_epoch}) in {result.seconds:.1f}s; "
        f"last val accuracy {last.get('val_accuracy', float('nan')):.4f} -> {args.model}"
    )


if __name__ == "__main__":
    run_stage(main)
