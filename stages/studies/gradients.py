"""studies/gradients: per-layer gradient norms of deep narrow MLPs at initialisation and after training.

Writes reports/studies/gradients.json: for depth x activation x init (and the remedies at one deep sigmoid
setting) the median gradient norm of every Linear layer at step 1 and at the last step, the first/last
layer ratio per seed (median and min-max) and the verdict. Run with `dvc repro studies/dvc.yaml:gradients`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from dlrig.data.dataset import Dataset
from dlrig.io import save_json
from dlrig.params import load_params
from dlrig.stage import run_stage
from dlrig.studies.gradients import run


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--train", default="data/processed/train.npz")
    ap.add_argument("--test", default="data/processed/test.npz")
    ap.add_argument("--meta", default="data/raw/meta.json")
    ap.add_argument("--out", default="reports/studies/gradients.json")
    args = ap.parse_args(argv)

    params = load_params(args.params)
    train, test = Dataset.load(args.train, args.meta), Dataset.load(args.test, args.meta)
    study = run(params, train, test)
    save_json(args.out, study)
    for g in [*study["grid"], *study["remedies"]]:
        r = g["ratio"]
        print(f"depth {g['depth']:3d} {g['activation']:8s} {g['init']:15s} {g['remedy'] or '':11s} "
              f"ratio at init {r['init']['median']}, trained {r['trained']['median']}, "
              f"test acc {g['test_accuracy']['median']}")
    print(study["verdict"])


if __name__ == "__main__":
    run_stage(main)
