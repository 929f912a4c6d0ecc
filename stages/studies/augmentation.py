"""studies/augmentation: clean test accuracy vs training rows per class, with and without augmentation and
with mixup (dlrig.studies.augmentation). Writes reports/studies/augmentation.json.
Run with `dvc repro studies/dvc.yaml:augmentation`."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from dlrig.data.dataset import Dataset
from dlrig.io import save_json
from dlrig.params import load_params
from dlrig.stage import run_stage
from dlrig.studies.augmentation import run


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--train", default="data/processed/train.npz")
    ap.add_argument("--test", default="data/processed/test.npz")
    ap.add_argument("--meta", default="data/raw/meta.json")
    ap.add_argument("--out", default="reports/studies/augmentation.json")
    args = ap.parse_args(argv)

    params = load_params(args.params)
    train, test = Dataset.load(args.train, args.meta), Dataset.load(args.test, args.meta)
    study = run(params, train, test)
    save_json(args.out, study)
    print(study["verdict"])


if __name__ == "__main__":
    run_stage(main)
