"""studies/double_descent: test and train error against the width of a one-hidden-layer MLP.

Trained to interpolation on a noisy stratified subset of the training split (and, as the control, on its
clean labels); scored on the clean test split. Writes reports/studies/double_descent.json. Run with
`dvc repro studies/dvc.yaml:double_descent`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch

from dlrig.data.dataset import Dataset
from dlrig.io import save_json
from dlrig.params import load_params
from dlrig.stage import run_stage
from dlrig.studies.double_descent import run


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--train", default="data/processed/train.npz")
    ap.add_argument("--test", default="data/processed/test.npz")
    ap.add_argument("--meta", default="data/raw/meta.json")
    ap.add_argument("--out", default="reports/studies/double_descent.json")
    args = ap.parse_args(argv)

    params = load_params(args.params)
    torch.set_num_threads(params.compute.torch_threads)
    train, test = Dataset.load(args.train, args.meta), Dataset.load(args.test, args.meta)
    study = run(params, train, test)
    save_json(args.out, study)
    print(study["verdict"])


if __name__ == "__main__":
    run_stage(main)
