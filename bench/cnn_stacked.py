"""CNN nested cross-validation: stacked (dlrig.train.stacked_func) vs one fit at a time.

Run by hand from the repo root:
  OMP_NUM_THREADS=1 .venv/bin/python bench/cnn_stacked.py [--epochs 10] [--repeats 2]
Prints a table and writes bench/results/cnn_stacked.json (``--out`` elsewhere). Never part of the test
suite. ``--dropout 0.1``: the same workload with params.yaml's default dropout (write it with --out).
``--family rnn`` / ``--family transformer``: the same search over a GRU of 64 reading the 8 rows (the
default LSTM of 64 trains with fit(), whose fused kernel is faster) or the default 2-layer encoder of width
64 over the 8 rows as tokens, stacked by stacked_func's composite layers (stacked_rnn, stacked_attn);
written to bench/results/<family>_stacked.json by default.

Workload: sklearn digits as 1 x 8 x 8 images (1797), the train stage's path (``select_config``): nested CV,
outer 5 x inner 3 folds, a grid of 2 learning rates of one CNN (channels [16, 32], dense head 64, depth 2,
relu, dropout 0 unless ``--dropout``, Adam, constant lr, batch 64, no early stopping), final selection
included: 5 x (2 x 3 + 1) + 2 x 3 = 41 fits. Three variants, interleaved in rounds, in this one process
(one torch thread, no cache):

  stacked   the train stage's path as it runs on a CPU: every selection's fits of one shape in one stack
            (grouped convolutions, one vectorised Adam), the 5 outer refits in another (run.py stacks CNN
            searches up front on a CPU: ``_bigger_stacks_pay``)
  per_selection  up-front stacking off: each selection's 6 fits (2 configs x 3 inner folds) in one stack,
            each outer refit alone (a stack of one, beside a twin: see stacked_func._conv). A stacked fit's
            bytes do not depend on its stack, so every variant makes the same selection
  loop      the same selection with the scorer's stacking off: fit() once per fit

The CPU time of the process is the fairer number on a shared machine; the load average is recorded.
With dropout the stack draws its masks from each model's own generator, fit() from the global RNG: the two
stacked variants make the same selection, the loop a statistically equal one (not the same numbers).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits

from dlrig.data.dataset import Dataset
from dlrig.params import parse_params
from dlrig.select import run as select_run
from dlrig.select.run import select_config

ROOT = Path(__file__).resolve().parents[1]


MODELS = {
    "cnn": {"name": "cnn", "channels": [16, 32], "hidden": 64, "depth": 2, "activation": "relu"},
    # a GRU of 64 reading the 8 rows (the default LSTM of 64 trains with fit(): its fused kernel wins)
    "rnn": {"name": "rnn", "cell": "gru"},
    "transformer": {"name": "transformer", "attention_dropout": 0.0},  # d_model 64, 4 heads, 2 layers
}


def params(epochs: int, dropout: float = 0.0, family: str = "cnn"):
    return parse_params({
        "seed": 0,
        "model": {**MODELS[family], "dropout": dropout},
        "optim": {"name": "adam", "lr": 1e-3, "weight_decay": 0.0},
        "schedule": {"name": "constant"},
        "train": {"epochs": epochs, "batch_size": 64, "standardize": "feature", "early_stopping": None},
        "cv": {"depth": 2, "outer_folds": 5, "inner_folds": 3},
        "search": {"strategy": "grid", "space": {"optim.lr": [1e-3, 3e-3]}},
        "compute": {"torch_threads": 1, "n_jobs": 1, "cache_dir": None},
    })


class _Loop(select_run.TorchScorer):
    """The scorer with stacking off (``batched=False``): fit() once per fit."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{**kwargs, "batched": False})


def one(variant: str, data: Dataset, epochs: int, dropout: float = 0.0, family: str = "cnn") -> dict:
    select_run.TorchScorer = _Loop if variant == "loop" else _Scorer
    if variant == "per_selection":
        select_run._bigger_stacks_pay = lambda *_args: False
    try:
        start, cpu = time.perf_counter(), time.process_time()
        report = select_config(params(epochs, dropout, family), data, progress=False, log=lambda _line: None)
        return {"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu,
                "mean_accuracy": report.summary["mean"], "fold_accuracy": report.summary["scores"],
                "final": report.final.config}
    finally:
        select_run.TorchScorer = _Scorer
        select_run._bigger_stacks_pay = _bigger_stacks_pay


_Scorer = select_run.TorchScorer
_bigger_stacks_pay = select_run._bigger_stacks_pay


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--dropout", type=float, default=0.0,
                    help="the CNN's dropout rate (0: the recorded workload)")
    ap.add_argument("--family", choices=sorted(MODELS), default="cnn")
    ap.add_argument("--out", default=None, help="default: bench/results/<family>_stacked.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    X, y = load_digits(return_X_y=True)
    data = Dataset(X.reshape(-1, 1, 8, 8).astype(np.float32), y, [str(k) for k in range(10)], "digits")
    runs: dict[str, list[dict]] = {"stacked": [], "per_selection": [], "loop": []}
    for _ in range(args.repeats):
        for variant in runs:
            load = os.getloadavg()[0]
            r = one(variant, data, args.epochs, args.dropout, args.family)
            r["load_average_1min"] = load
            runs[variant].append(r)
            print(f"{variant:13s} {r['seconds']:7.1f} s wall, {r['cpu_seconds']:7.1f} s cpu, "
                  f"accuracy {r['mean_accuracy']:.4f} (load {load:.1f})", flush=True)
    pairs = list(zip(runs["loop"], runs["stacked"], strict=True))
    reference = runs["loop"][0]
    ratios = [a["seconds"] / b["seconds"] for a, b in pairs]
    cpu_ratios = [a["cpu_seconds"] / b["cpu_seconds"] for a, b in pairs]
    summary = {"speedup_wall_median": statistics.median(ratios),
               "speedup_wall_range": [min(ratios), max(ratios)],
               "speedup_cpu_median": statistics.median(cpu_ratios),
               "accuracy_stacked_minus_loop": pairs[0][1]["mean_accuracy"] - pairs[0][0]["mean_accuracy"],
               "speedup_cpu_per_selection_median": statistics.median(
                   a["cpu_seconds"] / b["cpu_seconds"]
                   for a, b in zip(runs["loop"], runs["per_selection"], strict=True)),
               "same_fold_accuracy_and_config": all(
                   (r["fold_accuracy"], r["final"]) == (reference["fold_accuracy"], reference["final"])
                   for rs in runs.values() for r in rs),
               "same_fold_accuracy_and_config_stacked_variants": all(
                   (r["fold_accuracy"], r["final"]) == (runs["stacked"][0]["fold_accuracy"],
                                                        runs["stacked"][0]["final"])
                   for v in ("stacked", "per_selection") for r in runs[v])}
    print(f"stacked vs loop: {summary['speedup_wall_median']:.1f}x wall (per-round range "
          f"{min(ratios):.1f}-{max(ratios):.1f}), {summary['speedup_cpu_median']:.1f}x cpu; accuracy "
          f"{summary['accuracy_stacked_minus_loop']:+.4f}; per_selection vs loop "
          f"{summary['speedup_cpu_per_selection_median']:.1f}x cpu; the same fold scores and configs: "
          f"{summary['same_fold_accuracy_and_config']}")
    out = ROOT / (args.out or f"bench/results/{args.family}_stacked.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
                    "load_average_after": os.getloadavg()},
        "workload": {"data": "sklearn digits as 1x8x8", "epochs": args.epochs, "fits": 41,
                     "family": args.family, "model": MODELS[args.family],
                     "training": "adam, constant lr, batch 64",
                     "dropout": args.dropout},
        "summary": summary, "runs": runs}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
