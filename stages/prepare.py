"""prepare: materialise the data set named by ``params.data`` as data/raw/dataset.npz + meta.json."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from dlrig.data.sources import load_source
from dlrig.params import load_params
from dlrig.stage import run_stage


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default="data/raw/dataset.npz")
    ap.add_argument("--meta", default="data/raw/meta.json")
    args = ap.parse_args(argv)

    params = load_params(args.params)
    ds = load_source(params.data, params.seed, group_column=params.split.group_column)
    ds.save(args.out, args.meta)
    print(f"prepare: {len(ds.y)} samples of shape {ds.sample_shape}, {ds.n_classes} classes -> {args.out}")


if __name__ == "__main__":
    run_stage(main)
