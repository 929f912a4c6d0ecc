"""split: stratified, seeded hold-out test split; exact duplicates across the split handled per params.

A data set with its own test split (MNIST's t10k files) keeps it as the test split while
``data.mnist.use_official_test`` is true (the default), so its scores compare with published ones.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from dlrig.data.dataset import Dataset
from dlrig.data.sources import official_test_rows
from dlrig.data.split import holdout_split
from dlrig.errors import UserError
from dlrig.io import load_json, save_json
from dlrig.params import load_params
from dlrig.stage import run_stage


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", default="data/raw/dataset.npz")
    ap.add_argument("--meta", default="data/raw/meta.json")
    ap.add_argument("--validation", default="reports/validation.json")
    ap.add_argument("--train", default="data/processed/train.npz")
    ap.add_argument("--test", default="data/processed/test.npz")
    ap.add_argument("--report", default="reports/split.json")
    args = ap.parse_args(argv)

    params = load_params(args.params)
    validation = load_json(args.validation)
    if not isinstance(validation, dict) or "success" not in validation:
        raise UserError(f"{args.validation}: not a validation report (no 'success'); rerun validate")
    if not validation["success"] and params.validate_.on_failure == "error":
        raise UserError(f"{args.validation}: the data failed validation; fix the data or the suite first")
    ds = Dataset.load(args.data, args.meta)
    test_rows = official_test_rows(ds) if params.data.mnist.use_official_test else None
    train, test, report = holdout_split(ds, params.split, params.seed, test_rows=test_rows)
    train.save(args.train)
    test.save(args.test)
    save_json(args.report, report)
    dup = report["duplicates"]
    how = " (t10k, the data set's own test split)" if report["official_test"] else ""
    print(
        f"split: {report['n_train']} train / {report['n_test']} test{how}; "
        f"{dup['across']} duplicate(s) across the split ({dup['policy']}: {dup['removed']} removed)"
    )


if __name__ == "__main__":
    run_stage(main)
