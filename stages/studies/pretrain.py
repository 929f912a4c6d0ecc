"""studies/pretrain: the transfer study's source model, trained on studies.transfer.source_classes.

Writes a dlrig checkpoint (config + state dict; loads with torch.load(weights_only=True)) that
`stages/studies/transfer.py` and `train.transfer.pretrained` start from. Run with
`dvc repro studies/dvc.yaml:pretrain`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from dlrig.data.dataset import Dataset
from dlrig.params import load_params
from dlrig.stage import run_stage
from dlrig.studies.transfer import pretrain, subset
from dlrig.train.checkpoint import save_model


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--train", default="data/processed/train.npz")
    ap.add_argument("--meta", default="data/raw/meta.json")
    ap.add_argument("--out", default="models/pretrained/source.pt")
    args = ap.parse_args(argv)

    params = load_params(args.params)
    train = Dataset.load(args.train, args.meta)
    result, config, classes = pretrain(params, train)
    cfg = params.studies.transfer
    save_model(args.out, result.model, config, sample_shape=train.sample_shape, classes=classes,
               seed=params.seed, rows=subset(train, cfg.source_classes)[0],  # what it saw: check_unseen
               extra={"source_classes": list(cfg.source_classes), "epochs": len(result.history),
                      "data": args.train})
    print(f"pretrained {config.model.name} on classes {classes}: {len(result.history)} epochs -> {args.out}")


if __name__ == "__main__":
    run_stage(main)
