"""studies/transfer: transfer learning, fine-tuning and feature extraction, with nothing downloaded.

Reads the pretrain stage's checkpoint; writes reports/studies/transfer.json and transfer.md: target test
accuracy vs labelled samples per class for each transfer mode and feature extractor, the differences to
scratch (paired by seed, t intervals) and a computed verdict. Run with `dvc repro studies/dvc.yaml:transfer`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from dlrig.data.dataset import Dataset
from dlrig.io import save_json, save_text
from dlrig.params import load_params
from dlrig.stage import run_stage
from dlrig.studies.transfer import markdown, run


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--train", default="data/processed/train.npz")
    ap.add_argument("--test", default="data/processed/test.npz")
    ap.add_argument("--meta", default="data/raw/meta.json")
    ap.add_argument("--checkpoint", default="models/pretrained/source.pt")
    ap.add_argument("--out", default="reports/studies/transfer.json")
    ap.add_argument("--table", default="reports/studies/transfer.md")
    args = ap.parse_args(argv)

    params = load_params(args.params)
    train, test = Dataset.load(args.train, args.meta), Dataset.load(args.test, args.meta)
    study = run(params, train, test, args.checkpoint)
    save_json(args.out, study)
    text = markdown(study)
    save_text(args.table, text)
    print(text)


if __name__ == "__main__":
    run_stage(main)
