"""studies/distillation: a small student from labels vs distilled from a teacher on the same folds, judged by
the corrected resampled t-test (dlrig.studies.distillation). Writes reports/studies/distillation.json.
Run with `dvc repro studies/dvc.yaml:distillation`."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from dlrig.data.dataset import Dataset
from dlrig.io import save_json
from dlrig.params import load_params
from dlrig.stage import run_stage
from dlrig.studies.distillation import run


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--train", default="data/processed/train.npz")
    ap.add_argument("--meta", default="data/raw/meta.json")
    ap.add_argument("--out", default="reports/studies/distillation.json")
    args = ap.parse_args(argv)

    params = load_params(args.params)
    study = run(params, Dataset.load(args.train, args.meta))  # k folds of the training split; no test rows
    save_json(args.out, study)
    print(study["verdict"])


if __name__ == "__main__":
    run_stage(main)
