"""studies/report: reports/studies/report.html and its figures, from the studies' saved results only.

One section per results file given (each study's reports/studies/<name>.json, the stage's deps in
studies/dvc.yaml), in the style of reports/report.html. Run with `dvc repro studies/dvc.yaml`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from dlrig.params import load_params
from dlrig.report.studies import build_studies_report
from dlrig.stage import run_stage


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("results", nargs="+", help="each study's results, reports/studies/<name>.json")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--figures", default="reports/studies/figures")
    ap.add_argument("--out", default="reports/studies/report.html")
    args = ap.parse_args(argv)

    params = load_params(args.params)
    build_studies_report(args.results, Path(args.out), Path(args.figures), params.report)
    print(f"studies report: open {args.out}")


if __name__ == "__main__":
    run_stage(main)
