"""validate: check the raw data against a Great Expectations suite built from ``params.validate``.

Writes reports/validation.json and reports/validation.md whatever the outcome, so a failure can be read;
with ``validate.on_failure: error`` a failed expectation then stops the pipeline.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from dlrig.data.dataset import Dataset
from dlrig.data.validate import check_outcome, validate_dataset
from dlrig.errors import UserError
from dlrig.io import immediate, save_json, save_text
from dlrig.params import load_params
from dlrig.stage import run_stage


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", default="data/raw/dataset.npz")
    ap.add_argument("--meta", default="data/raw/meta.json")
    ap.add_argument("--out", default="reports/validation.json")
    ap.add_argument("--summary", default="reports/validation.md")
    args = ap.parse_args(argv)

    params = load_params(args.params)
    ds = Dataset.load(args.data, args.meta, allow_nonfinite=True)  # reporting them is our job
    outcome = validate_dataset(ds, params.validate_)
    # The report is the point of this stage, and most of all when it refuses the data: written at once,
    # not held back with the stage's output set (dlrig.stage.run_stage) until a success that never comes.
    with immediate():
        save_json(args.out, outcome.to_json())
        save_text(args.summary, outcome.summary_markdown())
    if not outcome.success and params.validate_.on_failure == "warn":
        print(f"warning: {args.data}: {outcome.failure_message()}", file=sys.stderr)
    try:
        check_outcome(outcome, params.validate_.on_failure)
    except UserError as exc:
        raise UserError(f"{args.data}: {exc} (details: {args.summary})") from None
    print(f"validate: {'passed' if outcome.success else 'FAILED (warn only)'} -> {args.out}")


if __name__ == "__main__":
    run_stage(main)
