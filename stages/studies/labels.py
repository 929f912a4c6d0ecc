"""studies/labels: label noise and class imbalance measured against the clean test split.

Writes reports/studies/labels.json and labels.md: test accuracy vs noise rate (plain CE vs robust options),
balanced accuracy vs imbalance ratio (no handling vs weighting vs resampling vs logit adjustment),
detection F1, and oversampling before vs inside the folds. Run with `dvc repro studies/dvc.yaml:labels`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from dlrig.data.dataset import Dataset
from dlrig.io import save_json, save_text
from dlrig.params import load_params
from dlrig.stage import run_stage
from dlrig.studies.labels import markdown, run


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--train", default="data/processed/train.npz")
    ap.add_argument("--test", default="data/processed/test.npz")
    ap.add_argument("--meta", default="data/raw/meta.json")
    ap.add_argument("--out", default="reports/studies/labels.json")
    ap.add_argument("--table", default="reports/studies/labels.md")
    args = ap.parse_args(argv)

    params = load_params(args.params)
    train, test = Dataset.load(args.train, args.meta), Dataset.load(args.test, args.meta)
    study = run(params, train, test)
    save_json(args.out, study)
    text = markdown(study)
    save_text(args.table, text)
    print(text)


if __name__ == "__main__":
    run_stage(main)
