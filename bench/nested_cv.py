"""Nested cross-validation, three ways, on one workload: textbook skorch, a per-fit loop, and fit_many.

Run by hand from the repo root:  .venv/bin/python bench/nested_cv.py [--epochs 30] [--only batched,loop]
Needs skorch for the textbook variant (not a dependency of dlrig):  .venv/bin/pip install skorch==1.4.0
Prints a table and writes bench/results/nested_cv.json. Never part of the test suite.

Workload: sklearn digits (1797 x 64, 10 classes), outer StratifiedKFold(5), inner StratifiedKFold(3), a grid
of 8 configs (lr {1e-3, 3e-3} x weight decay {0, 1e-4} x hidden {64, 128}) of one model (MLP, depth 2,
relu, dropout 0, Adam, constant lr, batch 64, 30 epochs, no early stopping), inputs standardised inside
every fit (skorch: a StandardScaler in the Pipeline; dlrig: the model's Standardize layer). Each outer
fold picks the config with the best mean inner accuracy (first on ties, as GridSearchCV), refits it on
the whole outer training part and scores the outer test part.

  (a) textbook: cross_val_score(GridSearchCV(Pipeline([scaler, NeuralNetClassifier])), cv=outer)
  (b) loop: the same nested CV, dlrig.train.fit once per fit (120 inner fits + 5 refits)
  (c) batched: the same, all 24 inner fits of an outer fold in one fit_many call, the 5 refits in another

All three run with torch.set_num_threads(1) (the fits are many and small; a search would run them in
parallel processes, one thread each). skorch also runs with 2 threads, in case that helps it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import StratifiedKFold
from torch import nn

from dlrig.params import FitConfig
from dlrig.train import fit, predict_proba
from dlrig.train.batched import FitJob, fit_many

ROOT = Path(__file__).resolve().parents[1]
GRID = [{"optim.lr": lr, "optim.weight_decay": wd, "model.hidden": h}
        for lr in (1e-3, 3e-3) for wd in (0.0, 1e-4) for h in (64, 128)]


def base_config(epochs: int) -> FitConfig:
    return FitConfig().with_overrides({
        "model.name": "mlp", "model.depth": 2, "model.activation": "relu", "model.dropout": 0.0,
        "model.norm": "none", "model.init": "default", "optim.name": "adam", "schedule.name": "constant",
        "train.epochs": epochs, "train.batch_size": 64, "train.standardize": "feature",
        "train.early_stopping": None,
    })


def splits(X, y):
    outer = StratifiedKFold(5, shuffle=True, random_state=0)
    inner = StratifiedKFold(3, shuffle=True, random_state=1)
    return outer, inner


def accuracy(model, X, y) -> float:
    return float((predict_proba(model, X).argmax(1) == y).mean())


# ------------------------------------------------------------------------------------- (a) skorch
class MLP(nn.Module):
    """build_model's MLP for this workload, minus the Standardize layer (the Pipeline's scaler)."""

    def __init__(self, hidden: int = 128, n_features: int = 64, n_classes: int = 10):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                 nn.ReLU(), nn.Linear(hidden, n_classes))

    def forward(self, X):
        return self.net(X)


def run_skorch(X, y, epochs: int) -> dict:
    from sklearn.model_selection import GridSearchCV, cross_val_score
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from skorch import NeuralNetClassifier

    torch.manual_seed(0)
    outer, inner = splits(X, y)
    net = NeuralNetClassifier(
        MLP, max_epochs=epochs, batch_size=64, optimizer=torch.optim.Adam, criterion=nn.CrossEntropyLoss,
        train_split=None, iterator_train__shuffle=True, verbose=0,
        optimizer__param_groups=[("*.bias", {"weight_decay": 0.0})],  # as dlrig: no decay on biases
    )
    pipe = Pipeline([("scale", StandardScaler()), ("net", net)])
    grid = {"net__lr": [1e-3, 3e-3], "net__optimizer__weight_decay": [0.0, 1e-4],
            "net__module__hidden": [64, 128]}
    start, cpu = time.perf_counter(), time.process_time()
    scores = cross_val_score(GridSearchCV(pipe, grid, cv=inner), X, y, cv=outer)
    return {"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu,
            "fold_accuracy": [float(s) for s in scores]}


# --------------------------------------------------------------------------------- (b), (c) dlrig
def run_dlrig(X, y, epochs: int, batched: bool) -> dict:
    outer, inner = splits(X, y)
    configs = [base_config(epochs).with_overrides(o) for o in GRID]
    start, cpu = time.perf_counter(), time.process_time()
    fold_accuracy, chosen, refits, train_seconds = [], [], [], 0.0
    for k, (train, test) in enumerate(outer.split(X, y)):
        jobs, scored = [], []
        for j, (fit_rows, val_rows) in enumerate(inner.split(X[train], y[train])):
            for c, config in enumerate(configs):
                jobs.append(FitJob(train[fit_rows], config, seed=100 * k + j))
                scored.append((c, train[val_rows]))
        tick = time.perf_counter()
        if batched:
            results = fit_many(X, y, 10, jobs)
        else:
            results = [fit(X[job.train_index], y[job.train_index], 10, job.config, job.seed) for job in jobs]
        train_seconds += time.perf_counter() - tick
        inner_scores = np.zeros((len(configs), inner.get_n_splits()))
        for n, (result, (c, rows)) in enumerate(zip(results, scored, strict=True)):
            inner_scores[c, n // len(configs)] = accuracy(result.model, X[rows], y[rows])
        best = int(np.argmax(inner_scores.mean(1)))  # first of ties, as GridSearchCV
        chosen.append(GRID[best])
        refits.append((FitJob(train, configs[best], seed=100 * k + 99), test))
    tick = time.perf_counter()
    if batched:
        results = fit_many(X, y, 10, [job for job, _ in refits])
    else:
        results = [fit(X[job.train_index], y[job.train_index], 10, job.config, job.seed) for job, _ in refits]
    refit_seconds = time.perf_counter() - tick
    for result, (_, test) in zip(results, refits, strict=True):
        fold_accuracy.append(accuracy(result.model, X[test], y[test]))
    return {"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu,
            "inner_fit_seconds": train_seconds, "refit_seconds": refit_seconds,
            "fold_accuracy": fold_accuracy, "chosen": chosen}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=1, help="runs of each variant, interleaved (round robin)")
    ap.add_argument("--only", default="skorch,loop,batched,skorch_2_threads",
                    help="comma-separated subset of: skorch, loop, batched, skorch_2_threads")
    ap.add_argument("--out", default="bench/results/nested_cv.json")
    args = ap.parse_args()
    variants = args.only.split(",")
    if any(v.startswith("skorch") for v in variants):
        try:
            import skorch  # noqa: F401
        except ImportError:
            print("bench/nested_cv.py: the textbook variant needs skorch, which dlrig does not depend on;\n"
                  "install it into the venv:  .venv/bin/pip install skorch==1.4.0\n"
                  "(or leave it out: --only loop,batched)")
            return 2

    X, y = load_digits(return_X_y=True)
    X, y = X.astype(np.float32), y.astype(np.int64)
    warm = base_config(1)
    fit(X[:200], y[:200], 10, warm, seed=0)  # first-call costs (MKL, allocator) outside every timing
    fit_many(X, y, 10, [FitJob(np.arange(200), warm, seed=0)])

    runs: dict[str, list[dict]] = {name: [] for name in variants}
    meta = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
                    "platform": platform.platform(), "load_average_before": os.getloadavg()},
        "workload": {"data": "sklearn digits", "outer_folds": 5, "inner_folds": 3, "grid": GRID,
                     "epochs": args.epochs, "batch_size": 64, "model": "mlp depth 2 relu, dropout 0, adam",
                     "torch_threads": "1 (skorch_2_threads: 2)"},
    }
    for round_ in range(args.repeats):
        for name in variants:
            if name == "skorch_2_threads" and round_ > 0:
                continue  # informational, and slow: once is enough
            torch.set_num_threads(2 if name == "skorch_2_threads" else 1)
            load = os.getloadavg()[0]
            if name.startswith("skorch"):
                run = run_skorch(X, y, args.epochs)
            else:
                run = run_dlrig(X, y, args.epochs, batched=name == "batched")
            run.update(threads=torch.get_num_threads(), load_average_1min=load,
                       mean_accuracy=float(np.mean(run["fold_accuracy"])))
            runs[name].append(run)
            print(f"{name}: {run['seconds']:.1f} s wall, {run['cpu_seconds']:.1f} s cpu, "
                  f"accuracy {run['mean_accuracy']:.4f} (load {load:.1f})", flush=True)
            summary = summarise(runs)
            write(ROOT / args.out, {**meta, "summary": summary, "runs": runs})  # after every run
    torch.set_num_threads(1)
    report(summary)
    return 0


def summarise(runs: dict[str, list[dict]]) -> dict[str, dict]:
    """Best of the repeats (the machine may be shared, and other load only ever adds time), and the
    median of each round's ratio to skorch (runs of one round are close in time: robust to load drift)."""
    summary = {name: {"threads": rs[0]["threads"], "seconds": min(r["seconds"] for r in rs),
                      "cpu_seconds": min(r["cpu_seconds"] for r in rs),
                      "mean_accuracy": rs[0]["mean_accuracy"]} for name, rs in runs.items() if rs}
    ref = summary.get("skorch")
    for name, row in summary.items():
        if ref:
            row["speedup_vs_skorch"] = ref["seconds"] / row["seconds"]
            row["cpu_speedup_vs_skorch"] = ref["cpu_seconds"] / row["cpu_seconds"]
            pairs = [a["seconds"] / x["seconds"] for a, x in zip(runs["skorch"], runs[name], strict=False)]
            row["median_round_speedup_vs_skorch"] = float(np.median(pairs))
    return summary


def write(path: Path, data: dict) -> None:
    data["machine"]["load_average_after"] = os.getloadavg()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def report(summary: dict[str, dict]) -> None:
    ref = "skorch" in summary
    print(f"\n{'variant':18s} {'threads':>7s} {'wall s':>8s} {'cpu s':>8s} {'a/x wall':>9s} {'a/x cpu':>8s} "
          f"{'a/x round':>9s} {'accuracy':>9s}")
    for name, row in summary.items():
        ratios = [f"{row[k]:.1f}x" if ref else "-" for k in
                  ("speedup_vs_skorch", "cpu_speedup_vs_skorch", "median_round_speedup_vs_skorch")]
        print(f"{name:18s} {row['threads']:7d} {row['seconds']:8.1f} {row['cpu_seconds']:8.1f} "
              f"{ratios[0]:>9s} {ratios[1]:>8s} {ratios[2]:>9s} {row['mean_accuracy']:9.4f}")
    if "loop" in summary and "batched" in summary:
        print(f"batched vs loop: {summary['loop']['seconds'] / summary['batched']['seconds']:.1f}x wall, "
              f"{summary['loop']['cpu_seconds'] / summary['batched']['cpu_seconds']:.1f}x cpu")
    print("a/x wall, a/x cpu: best run of each; a/x round: median over rounds of the per-round ratio")


if __name__ == "__main__":
    sys.exit(main())
