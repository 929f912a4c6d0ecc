"""report: matplotlib figures and a self-contained reports/report.html, from saved results only."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from dlrig.params import load_params
from dlrig.report.cost import write_cost_page
from dlrig.report.html import build_report, run_identity
from dlrig.stage import run_stage


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--reports", default="reports")
    ap.add_argument("--figures", default="reports/figures")
    ap.add_argument("--out", default="reports/report.html")
    args = ap.parse_args(argv)

    params = load_params(args.params)
    # The experiment's name and git commit go in the title block: the same in two runs of one git state.
    build_report(Path(args.reports), Path(args.params), Path(args.out), Path(args.figures), params.report,
                 identity=run_identity())
    # The measured costs (they vary run to run) on a page of their own, beside their records; not an output.
    cost = write_cost_page(Path(args.reports))
    print(f"report: open {args.out} (costs of this run: {cost})")


if __name__ == "__main__":
    run_stage(main)
