"""Nested cross-validation as the train stage runs it, against textbook skorch, on one workload.

Run by hand from the repo root:  .venv/bin/python bench/nested_cv.py [--epochs 30] [--repeats 3]
Needs skorch for the textbook variant (not a dependency of dlrig):  .venv/bin/pip install skorch==1.4.0
Prints a table and writes bench/results/nested_cv.json. Never part of the test suite.

Workload: sklearn digits (1797 x 64, 10 classes), outer StratifiedKFold(5), inner StratifiedKFold(3) (the
folds ``dlrig.data.folds.make_folds`` makes: shuffled, random_state seed and seed + 1), a grid of 8 configs
(lr {1e-3, 3e-3} x weight decay {0, 1e-4} x hidden {64, 128}) of one model (MLP, depth 2, relu, dropout
0, Adam, constant lr, batch 64, 30 epochs, no early stopping), inputs standardised inside every fit. Each
outer fold picks the config with the best mean inner accuracy, refits it on the outer-train part and scores
the outer-test part; then the final selection searches the grid once more on all rows (what
``select_config`` does for the train stage's final model): 5 x (24 + 1) + 24 = 149 fits.

  skorch        cross_val_score(GridSearchCV(Pipeline([scaler, NeuralNetClassifier])), cv=outer), then
                GridSearchCV(refit=False).fit on all rows (the final selection); one torch thread
  skorch_threads2  the same with two torch threads (torch's default on 2 cores). Each round's reference
                is the faster of the two skorch runs, so no ratio is flattered by a handicapped baseline
  train         ``dlrig.select.run.select_config(params, dataset)``, exactly as stages/train.py calls it
                (compute.n_jobs 1, compute.torch_threads 1, no fit cache)
  train_jobs2   the same with compute.n_jobs 2
  upfront       n_jobs 1 with every selection's fits stacked together up front (what a GPU run does;
                on a CPU the train stage keeps one selection's fits per stack: see run._bigger_stacks_pay)

The roofline: the work is a known number of FLOPs (dlrig's own count, ``dlrig.train.work``: 3 x forward
matrix products x gradient rows x epochs); this script measures the machine's matrix-product peak (a
1024 x 1024 float32 product on all cores) and reports the fastest any implementation could do the work
(FLOPs / peak), and so the largest speedup over skorch this machine allows, in work and in process time
(the process also pays interpreter start and imports, taken as the train variant's process minus work).

Every variant runs in its own fresh Python process, started by this script, in interleaved rounds
(round-robin, so load drift hits all alike). Two times per run: ``process`` is the whole process's wall time
(interpreter start, imports, data, the work: what a user waits for), ``work`` the selection call alone,
timed inside the process. Ratios are per round (runs of one round are close in time), the median over
rounds reported.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("skorch", "skorch_threads2", "train", "train_jobs2", "upfront")
SEED = 0
GRID = {"optim.lr": [1e-3, 3e-3], "optim.weight_decay": [0.0, 1e-4], "model.hidden": [64, 128]}


# ----------------------------------------------------------------------------- in the child process
def child(variant: str, epochs: int) -> dict:
    """One run of one variant (in a fresh process); returns the in-process time and the scores."""
    import numpy as np
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X, y = X.astype(np.float32), y.astype(np.int64)
    if variant.startswith("skorch"):
        return run_skorch(X, y, epochs, threads=2 if variant == "skorch_threads2" else 1)
    return run_train(X, y, epochs, variant)


def workload_params(epochs: int, n_jobs: int):
    from dlrig.params import parse_params

    return parse_params({
        "seed": SEED,
        "model": {"name": "mlp", "hidden": 128, "depth": 2, "activation": "relu", "dropout": 0.0,
                  "norm": "none", "init": "default"},
        "optim": {"name": "adam", "lr": 1e-3, "weight_decay": 0.0},
        "schedule": {"name": "constant"},
        "train": {"epochs": epochs, "batch_size": 64, "standardize": "feature", "early_stopping": None},
        "cv": {"depth": 2, "outer_folds": 5, "inner_folds": 3},
        "search": {"strategy": "grid", "metric": "accuracy", "space": GRID},
        "compute": {"device": "cpu", "torch_threads": 1, "n_jobs": n_jobs, "cache_dir": None},
    })


def run_train(X, y, epochs: int, variant: str) -> dict:
    import torch

    from dlrig.data.dataset import Dataset
    from dlrig.select.run import select_config
    from dlrig.train.fit import deterministic_kernels

    params = workload_params(epochs, n_jobs=2 if variant == "train_jobs2" else 1)
    if variant == "upfront":
        import dlrig.select.run as run

        run._bigger_stacks_pay = lambda *_args: True  # as on a GPU: one stack per shape for all selections
    torch.set_num_threads(params.compute.torch_threads)  # as stages/train.py
    deterministic_kernels()  # as stages/train.py
    data = Dataset(X, y, [str(k) for k in range(10)], "digits")
    start, cpu = time.perf_counter(), time.process_time()
    report = select_config(params, data, progress=False, log=lambda _line: None)
    from dlrig.train import work

    return {"work_seconds": time.perf_counter() - start, "work_cpu_seconds": time.process_time() - cpu,
            "fold_accuracy": report.summary["scores"], "chosen": [f["best_config"] for f in report.folds],
            "final": report.final.config, "stage_seconds": report.seconds, "flops": work.TALLY["flops"]}


def run_skorch(X, y, epochs: int, threads: int) -> dict:
    import torch
    from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from skorch import NeuralNetClassifier
    from torch import nn

    class MLP(nn.Module):
        """build_model's MLP for this workload, minus the Standardize layer (the Pipeline's scaler)."""

        def __init__(self, hidden: int = 128, n_features: int = 64, n_classes: int = 10):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                     nn.ReLU(), nn.Linear(hidden, n_classes))

        def forward(self, X):
            return self.net(X)

    torch.set_num_threads(threads)
    torch.manual_seed(SEED)
    net = NeuralNetClassifier(
        MLP, max_epochs=epochs, batch_size=64, optimizer=torch.optim.Adam, criterion=nn.CrossEntropyLoss,
        train_split=None, iterator_train__shuffle=True, verbose=0,
        optimizer__param_groups=[("*.bias", {"weight_decay": 0.0})],  # as dlrig: no decay on biases
    )
    pipe = Pipeline([("scale", StandardScaler()), ("net", net)])
    grid = {"net__lr": GRID["optim.lr"], "net__optimizer__weight_decay": GRID["optim.weight_decay"],
            "net__module__hidden": GRID["model.hidden"]}
    outer = StratifiedKFold(5, shuffle=True, random_state=SEED)  # = make_folds(..., seed)
    inner = StratifiedKFold(3, shuffle=True, random_state=SEED + 1)  # = make_folds(..., seed + 1)
    start, cpu = time.perf_counter(), time.process_time()
    scores = cross_val_score(GridSearchCV(pipe, grid, cv=inner), X, y, cv=outer)
    final = GridSearchCV(pipe, grid, cv=inner, refit=False).fit(X, y)  # the final selection
    return {"work_seconds": time.perf_counter() - start, "work_cpu_seconds": time.process_time() - cpu,
            "fold_accuracy": [float(s) for s in scores], "final": final.best_params_}


# ----------------------------------------------------------------------------------- the parent
def timed_child(variant: str, epochs: int) -> dict:
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))  # skorch may live there
    threads = "2" if variant == "skorch_threads2" else "1"
    env = {**os.environ, "OMP_NUM_THREADS": threads, "PYTHONPATH": path}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--child", variant, "--epochs", str(epochs)], cwd=ROOT,
                          env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{variant} failed:\n{done.stderr[-3000:]}")
    run = json.loads(done.stdout.strip().splitlines()[-1])
    run["process_seconds"] = seconds
    return run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=1, help="interleaved rounds (each variant once per round)")
    ap.add_argument("--only", default=",".join(VARIANTS), help=f"comma-separated subset of {VARIANTS}")
    ap.add_argument("--out", default="bench/results/nested_cv.json")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.epochs)))
        return 0
    variants = args.only.split(",")
    if "skorch" in variants:
        try:
            import skorch  # noqa: F401
        except ImportError:
            print("bench/nested_cv.py: the textbook variant needs skorch, which dlrig does not depend on;\n"
                  "install it into the venv:  .venv/bin/pip install skorch==1.4.0\n"
                  "(or leave it out: --only train,train_jobs2,upfront)")
            return 2
    import torch

    meta = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
                    "platform": platform.platform(), "load_average_before": os.getloadavg()},
        "workload": {"data": "sklearn digits (1797 x 64)", "outer_folds": 5, "inner_folds": 3, "grid": GRID,
                     "epochs": args.epochs, "batch_size": 64, "fits": 149,
                     "model": "mlp depth 2 relu, dropout 0, adam, constant lr, no early stopping",
                     "torch_threads": 1},
    }
    peak = matmul_peak()  # before the rounds, on the same quiet machine
    meta["machine"]["matmul_peak_gflops"] = round(peak / 1e9, 1)
    print(f"matrix-product peak on {os.cpu_count()} cores: {peak / 1e9:.0f} GFLOP/s", flush=True)
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name in variants:
            load = os.getloadavg()[0]
            run = timed_child(name, args.epochs)
            run.update(load_average_1min=load,
                       mean_accuracy=sum(run["fold_accuracy"]) / len(run["fold_accuracy"]))
            runs[name].append(run)
            print(f"{name:12s} process {run['process_seconds']:6.1f} s, work {run['work_seconds']:6.1f} s, "
                  f"accuracy {run['mean_accuracy']:.4f} (load {load:.1f})", flush=True)
            summary = summarise(runs, peak)
            write(ROOT / args.out, {**meta, "summary": summary, "runs": runs})  # after every run
    report(summary)
    return 0


def summarise(runs: dict[str, list[dict]], peak: float | None = None) -> dict[str, dict]:
    """Per variant: the best of the rounds (other load only ever adds time) and the median over rounds of
    the per-round ratio reference / variant (robust to load drift), for the whole process and the work.
    A round's reference is its faster skorch run (one or two torch threads). With ``peak`` (FLOP/s), the
    roofline: the fastest the work could run on this machine, and the largest ratio that allows."""
    import statistics

    skorch = [name for name in ("skorch", "skorch_threads2") if runs.get(name)]
    rounds = min((len(runs[name]) for name in skorch), default=0)
    reference = [{what: min(runs[name][i][f"{what}_seconds"] for name in skorch)
                  for what in ("process", "work")} for i in range(rounds)]
    summary = {}
    for name, rs in runs.items():
        if not rs:
            continue
        row = {"process_seconds": min(r["process_seconds"] for r in rs),
               "work_seconds": min(r["work_seconds"] for r in rs),
               "mean_accuracy": rs[0]["mean_accuracy"], "rounds": len(rs)}
        pairs = list(zip(reference, rs, strict=False))
        if pairs:
            for what in ("process", "work"):
                ratios = [ref[what] / x[f"{what}_seconds"] for ref, x in pairs]
                row[f"{what}_speedup_vs_skorch"] = statistics.median(ratios)
                row[f"{what}_speedup_vs_skorch_range"] = [min(ratios), max(ratios)]
            row["accuracy_minus_skorch"] = row["mean_accuracy"] - runs[skorch[0]][0]["mean_accuracy"]
        summary[name] = row
    train = runs.get("train")
    if peak and train and reference:
        flops = train[0]["flops"]
        floor = flops / peak  # every FLOP at the measured matrix-product peak of all cores
        start_up = min(r["process_seconds"] - r["work_seconds"] for r in train)  # interpreter + imports
        best = {what: min(ref[what] for ref in reference) for what in ("process", "work")}
        summary["roofline"] = {
            "work_flops": flops, "peak_flops_per_second": peak, "fastest_work_seconds": floor,
            "start_up_seconds": start_up,
            "largest_work_speedup_vs_skorch": best["work"] / floor,
            "largest_process_speedup_vs_skorch": best["process"] / (floor + start_up),
            "train_share_of_peak": flops / min(r["work_seconds"] for r in train) / peak,
        }
    return summary


def matmul_peak() -> float:
    """FLOP/s of a 1024 x 1024 float32 matrix product on all cores: the machine's practical ceiling for
    the products that make up an MLP's training (the best of 5 timings of 10 products)."""
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    for _ in range(3):
        a @ b
    best = math.inf
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(10):
            a @ b
        best = min(best, time.perf_counter() - start)
    return 10 * 2 * 1024**3 / best


def write(path: Path, data: dict) -> None:
    data["machine"]["load_average_after"] = os.getloadavg()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def report(summary: dict[str, dict]) -> None:
    print(f"\n{'variant':12s} {'process s':>9s} {'work s':>8s} {'a/x process':>11s} {'a/x work':>9s} "
          f"{'accuracy':>9s}")
    for name, row in summary.items():
        if name == "roofline":
            continue
        ratios = [f"{row[k]:.1f}x" if k in row else "-" for k in
                  ("process_speedup_vs_skorch", "work_speedup_vs_skorch")]
        print(f"{name:12s} {row['process_seconds']:9.1f} {row['work_seconds']:8.1f} {ratios[0]:>11s} "
              f"{ratios[1]:>9s} {row['mean_accuracy']:9.4f}")
    print("seconds: best round; a/x: the round's faster skorch / variant, median over rounds")
    if "roofline" in summary:
        r = summary["roofline"]
        print(f"roofline: {r['work_flops'] / 1e9:.0f} GFLOP of work at the "
              f"{r['peak_flops_per_second'] / 1e9:.0f} GFLOP/s peak takes {r['fastest_work_seconds']:.1f} s "
              f"(train reaches {r['train_share_of_peak']:.0%} of peak); "
              f"start-up {r['start_up_seconds']:.1f} s.\n"
              f"Largest possible speedup vs skorch on this machine: "
              f"{r['largest_work_speedup_vs_skorch']:.1f}x work, "
              f"{r['largest_process_speedup_vs_skorch']:.1f}x process")


if __name__ == "__main__":
    sys.exit(main())
