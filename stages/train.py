"""train: select hyperparameters by nested cross-validation on the training split, then refit.

1. Nested CV (``cv``, ``search``): estimates how well the *selection procedure* generalises and how
   optimistic the inner scores are; per-fold records go to reports/cv/, and every trial of every search
   to reports/cv/trials.csv (one row per search and trial, like scikit-learn's ``cv_results_``).
2. The final config is selected the same way on all training rows and refit on them (early stopping
   carved from those rows only) -> models/model.pt, by the trainer its fold fits had (``fit_many``: the
   stacked trainer where the config allows it, else ``fit()``). Curves are logged with DVCLive to
   reports/train/.

Every output is a pure function of the params, so two runs write the same bytes. What a run did besides
(seconds per task, fit-cache hits and misses) goes to reports/run/train.json, which is not a DVC output.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from dlrig.data.dataset import Dataset
from dlrig.io import adopt_tree, save_json, save_text
from dlrig.models import count_parameters
from dlrig.params import load_params
from dlrig.select.analysis import analyze_search, optimism_summary
from dlrig.select.run import select_config
from dlrig.select.trials import trial_rows, trials_csv
from dlrig.stage import run_stage
from dlrig.train.batched import FitJob, fit_many
from dlrig.train.callbacks import DVCLiveLogger
from dlrig.train.checkpoint import check_unseen, checkpoints_in, save_model
from dlrig.train.fit import deterministic_kernels, failure_reason


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--train", default="data/processed/train_labels.npz")
    ap.add_argument("--meta", default="data/raw/meta.json")
    ap.add_argument("--model", default="models/model.pt")
    ap.add_argument("--logdir", default="reports/train")
    ap.add_argument("--cvdir", default="reports/cv")
    ap.add_argument("--run-info", default="reports/run/train.json",
                    help="seconds and cache hits of this run (not a DVC output: it differs between runs)")
    args = ap.parse_args(argv)

    params = load_params(args.params)
    torch.set_num_threads(params.compute.torch_threads)
    deterministic_kernels()
    train = Dataset.load(args.train, args.meta)
    # every training row is some outer fold's held-out row: a checkpoint that saw one leaks into the estimate
    for key, path in checkpoints_in(params.fit_config()):
        check_unseen(path, key, (train.X, "the training split, which the nested CV holds out fold by fold"))

    cv = params.cv
    print(f"train: depth-{cv.depth} CV ({cv.outer_folds} outer x {cv.inner_folds} inner folds), "
          f"{params.search.strategy} search over {sorted(params.search.space) or 'nothing'}")
    selection = select_config(params, train)
    summary = selection.summary
    search = selection.final.search.to_json() if selection.final.search else None
    trials = search["trials"] if search else []
    analysis = analyze_search(trials, selection.space, params.search.metric)
    final = {"config": selection.final.config, "inner_score": round(selection.final.inner_score, 6),
             "candidate": selection.final.candidate, "candidates": selection.final.candidates,
             "search": search}
    save_json(f"{args.cvdir}/folds.json", selection.folds)
    save_json(f"{args.cvdir}/summary.json", {
        **summary,
        "optimism_summary": optimism_summary(selection.folds, metric=params.search.metric)
        if cv.depth > 1 else None,
        "final": final,
        "space": selection.space,
        "analysis": analysis,
    })
    # Every trial of every search, flat (scikit-learn's cv_results_); no seconds in it: see select/trials.py.
    save_text(f"{args.cvdir}/trials.csv",
              trials_csv(trial_rows(selection.folds, final, list(selection.space))))
    save_json(f"{args.cvdir}/metrics.json", {
        "cv": {"mean": summary["mean"], "std": summary["std"], "optimism": summary["optimism"],
               "n_trials": len(trials)},
    })

    config = params.fit_config().with_overrides(selection.final.config)
    from dvclive import Live  # imported late: the params above are checked before any slow import

    # DVCLive writes its own files as it goes: it logs into a temp dir whose files join this stage's output
    # set, so a crash mid-refit leaves the previous curves beside the previous model.
    Path(args.logdir).parent.mkdir(parents=True, exist_ok=True)
    live_dir = tempfile.mkdtemp(prefix=".live-", dir=Path(args.logdir).parent)
    try:
        with Live(dir=live_dir, save_dvc_exp=False, dvcyaml=None, report=None) as live:
            logger = DVCLiveLogger(live)
            job = FitJob(np.arange(len(train.y)), config, params.seed)
            result = fit_many(train.X, train.y, train.n_classes, [job], device=params.compute.device,
                              on_epoch=lambda _job, record: logger.log(record))[0]
        adopt_tree(live_dir, args.logdir)
    finally:
        shutil.rmtree(live_dir, ignore_errors=True)

    save_model(
        args.model, result.model, config,
        sample_shape=train.sample_shape, classes=train.classes, seed=params.seed, rows=train.X,
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
        "selected_config": selection.final.config,
    })
    save_json(args.run_info, {"seconds": {**selection.seconds, "refit": round(result.seconds, 3)},
                              "cache": selection.cache})
    label = "plain CV (optimistic)" if cv.depth == 1 else "nested CV"
    optimism = "" if summary["optimism"] is None else f", optimism {summary['optimism']:+.4f}"
    print(f"train: {label} {params.search.metric} {summary['mean']:.4f} ± {summary['std']:.4f}{optimism}; "
          f"final config {selection.final.config}; refit {len(result.history)} epochs -> {args.model}")
    print(f"train: fit cache {selection.cache['hits']} hits, {selection.cache['misses']} misses "
          f"({params.compute.cache_dir or 'no cache'})")
    for warning in analysis.get("warnings", []):
        print(f"  note: {warning}")
    refit_failed = failure_reason(result, train.n_classes)
    if refit_failed:
        print(f"  note: the final refit {refit_failed}; with early stopping off the saved model is unusable")


if __name__ == "__main__":
    run_stage(main)
