"""train: select hyperparameters by nested cross-validation on the training split, then refit.

1. Nested CV (``cv``, ``search``): estimates how well the *selection procedure* generalises and how
   optimistic the inner scores are; per-fold records go to reports/cv/.
2. The final config is selected the same way on all training rows and refit on them (early stopping
   carved from those rows only) -> models/model.pt. Curves are logged with DVCLive to reports/train/.
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
from dlrig.select.analysis import analyze_search, optimism_summary
from dlrig.select.run import select_config
from dlrig.train import fit
from dlrig.train.checkpoint import save_model


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--train", default="data/processed/train_labels.npz")
    ap.add_argument("--meta", default="data/raw/meta.json")
    ap.add_argument("--model", default="models/model.pt")
    ap.add_argument("--logdir", default="reports/train")
    ap.add_argument("--cvdir", default="reports/cv")
    args = ap.parse_args(argv)

    params = load_params(args.params)
    torch.set_num_threads(params.compute.torch_threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    train = Dataset.load(args.train, args.meta)

    cv = params.cv
    print(f"train: depth-{cv.depth} CV ({cv.outer_folds} outer x {cv.inner_folds} inner folds), "
          f"{params.search.strategy} search over {sorted(params.search.space) or 'nothing'}")
    selection = select_config(params, train)
    summary = selection.summary
    trials = selection.final.search.to_json()["trials"] if selection.final.search else []
    analysis = analyze_search(trials, selection.space, params.search.metric)
    save_json(f"{args.cvdir}/folds.json", selection.folds)
    save_json(f"{args.cvdir}/summary.json", {
        **summary,
        "optimism_summary": optimism_summary(selection.folds, metric=params.search.metric)
        if cv.depth > 1 else None,
        "final": {"config": selection.final.config, "inner_score": round(selection.final.inner_score, 6),
                  "candidate": selection.final.candidate, "candidates": selection.final.candidates,
                  "search": selection.final.search.to_json() if selection.final.search else None},
        "space": selection.space,
        "analysis": analysis,
    })
    save_json(f"{args.cvdir}/metrics.json", {
        "cv": {"mean": summary["mean"], "std": summary["std"], "optimism": summary["optimism"],
               "n_trials": len(trials)},
    })
    save_json(f"{args.cvdir}/cache.json", selection.cache)

    config = params.fit_config().with_overrides(selection.final.config)
    from dvclive import Live  # imported late: the params above are checked before any slow import

    with Live(dir=args.logdir, save_dvc_exp=False, dvcyaml=None, report=None) as live:
        def log_epoch(record: dict[str, float]) -> None:
            for key, value in record.items():
                if key != "epoch":
                    live.log_metric(key.replace("_", "/", 1), value)
            live.next_step()

        result = fit(train.X, train.y, train.n_classes, config, params.seed,
                     device=params.compute.device, on_epoch=log_epoch)

    save_model(
        args.model, result.model, config,
        sample_shape=train.sample_shape, classes=train.classes, seed=params.seed,
        extra={"best_epoch": result.best_epoch, "n_fit": len(result.train_index),
               "selected": selection.final.config,
               # Training rows held out for early stopping: evaluate fits its temperature on them.
               "val_index": result.val_index.tolist()},
    )
    save_json(f"{args.logdir}/history.json", {
        "history": result.history,
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "n_parameters": count_parameters(result.model),
        "n_fit": int(len(result.train_index)),
        "n_val": int(len(result.val_index)),
        "seconds": round(result.seconds, 3),
        "selected_config": selection.final.config,
    })
    label = "plain CV (optimistic)" if cv.depth == 1 else "nested CV"
    optimism = "" if summary["optimism"] is None else f", optimism {summary['optimism']:+.4f}"
    print(f"train: {label} {params.search.metric} {summary['mean']:.4f} ± {summary['std']:.4f}{optimism}; "
          f"final config {selection.final.config}; refit {len(result.history)} epochs -> {args.model}")
    for warning in analysis.get("warnings", []):
        print(f"  note: {warning}")


if __name__ == "__main__":
    run_stage(main)
