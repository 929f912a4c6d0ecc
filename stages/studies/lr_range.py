"""studies/lr_range: the learning-rate range test (Smith 2017; fastai lr_find) beside nested CV's lr.

Writes reports/studies/lr_range.json: per seed the smoothed loss of one exponential lr sweep on the
training split and its suggestions (valley, steepest), the band over seeds, a search range for optim.lr,
and the lr the default pipeline's nested CV chose (reports/cv/summary.json, when it exists). Run with
`dvc repro studies/dvc.yaml:lr_range`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch

from dlrig.data.dataset import Dataset
from dlrig.io import load_json, save_json
from dlrig.params import load_params
from dlrig.stage import run_stage
from dlrig.studies.lr_range import run


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--train", default="data/processed/train.npz")
    ap.add_argument("--meta", default="data/raw/meta.json")
    ap.add_argument("--cv-summary", default="reports/cv/summary.json",
                    help="the train stage's summary (its final.config holds the chosen optim.lr)")
    ap.add_argument("--out", default="reports/studies/lr_range.json")
    args = ap.parse_args(argv)

    params = load_params(args.params)
    torch.set_num_threads(params.compute.torch_threads)
    train = Dataset.load(args.train, args.meta)
    summary = load_json(args.cv_summary) if Path(args.cv_summary).exists() else None
    study = run(params, train, summary, args.cv_summary)
    save_json(args.out, study)
    print(study["verdict"])
    if study["space_yaml"]:
        print(study["space_yaml"])


if __name__ == "__main__":
    run_stage(main)
