"""studies/grokking: modular arithmetic generalises long after it is memorised, with weight decay only.

Writes reports/studies/grokking.json: train/test accuracy and the weight norm at log-spaced steps for every
seed, with and without weight decay, the steps at which each crosses its threshold, and the verdict. The
data is generated (data.sources.make_modular), so nothing is read but params.yaml.
Run with `dvc repro studies/dvc.yaml:grokking`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from dlrig.io import save_json
from dlrig.params import load_params
from dlrig.stage import run_stage
from dlrig.studies.grokking import run


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default="reports/studies/grokking.json")
    args = ap.parse_args(argv)

    study = run(load_params(args.params))
    save_json(args.out, study)
    for r in study["runs"]:
        print(f"{r['setting']:8s} seed {r['seed']}: train >= threshold at step {r['train_step']}, "
              f"test at step {r['test_step']} (final test {r['final_test']:.3f})")
    print(study["verdict"])


if __name__ == "__main__":
    run_stage(main)
