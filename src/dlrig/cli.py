"""Command-line doors: the ``dlrig`` console script and the error handling every stage shares.

Each command runs through :func:`dlrig.stage.run_stage`, as the stages do: a user error is one line and
exit status 2, Ctrl-C one line and 130.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from dlrig.errors import UserError
from dlrig.stage import run_stage


def _check_params(args: argparse.Namespace) -> None:
    from dlrig.params import load_params

    load_params(args.params)
    print(f"{args.params}: ok")


def _check_regression(args: argparse.Namespace) -> None:
    from dlrig.evaluate.regression import (
        baseline_from_git,
        check_regression,
        load_thresholds,
        read_metrics_files,
    )

    thresholds = load_thresholds(args.thresholds)
    current = read_metrics_files(thresholds.files)
    baseline = baseline_from_git(thresholds.files, rev=args.rev, missing_ok=True)
    result = check_regression(current, baseline, thresholds)
    print(result.markdown())
    if args.out:
        from dlrig.io import save_text

        save_text(args.out, result.markdown())
    if not result.ok:
        sys.exit(1)


def _read_rev(path: str, rev: str) -> object:
    """A results file as committed at a git revision or DVC experiment name ('workspace' = on disk)."""
    import json

    from dlrig.io import load_json

    if rev == "workspace":
        return load_json(path)
    try:
        import dvc.api

        return json.loads(dvc.api.read(path, rev=rev))
    except Exception as exc:  # dvc raises many types for an unknown revision or path
        raise UserError(f"{path} at {rev!r}: cannot be read ({type(exc).__name__}: {exc}); "
                        "name a git revision, a DVC experiment (dvc exp show) or 'workspace'") from None


def _fold_records(path: str, rev: str, data: object) -> list[dict]:
    """The outer-fold records of a run, or one line saying the file is not such a record."""
    needed = {"train_index", "test_index", "outer_metrics", "best_config"}
    ok = isinstance(data, list) and data and all(isinstance(f, dict) and needed <= f.keys() for f in data)
    if not ok:
        raise UserError(f"{path} at {rev!r}: not a folds record (a list of outer folds with "
                        f"{', '.join(sorted(needed))}); pass the train stage's reports/cv/folds.json")
    return data


def _compare(args: argparse.Namespace) -> None:
    import numpy as np

    from dlrig.evaluate.compare import compare_fold_scores

    folds_a, folds_b = (_fold_records(args.folds, r, _read_rev(args.folds, r)) for r in (args.a, args.b))
    same = [f["test_index"] for f in folds_a] == [f["test_index"] for f in folds_b]
    if not same:
        raise UserError(f"{args.a} and {args.b} were cross-validated on different outer folds (other seed, "
                        "data or cv params): a paired comparison needs the same folds")
    metric = args.metric
    try:
        a = [f["outer_metrics"][metric] for f in folds_a]
        b = [f["outer_metrics"][metric] for f in folds_b]
    except KeyError:
        raise UserError(f"--metric {metric}: not in the fold records (have "
                        f"{sorted(folds_a[0]['outer_metrics'])})") from None
    if folds_a == folds_b:
        # `dvc exp run -n lr01` leaves lr01's results in the workspace: `compare workspace lr01` is then a
        # run compared with itself, and p = 1 says nothing.
        print(f"warning: {args.a} and {args.b} have identical fold records (same configs, same scores): "
              "this compares a run with itself. After `dvc exp run`, the workspace holds that experiment; "
              "compare it with the baseline (e.g. HEAD) instead.", file=sys.stderr)
    n_train = float(np.mean([len(f["train_index"]) for f in folds_a]))
    n_test = float(np.mean([len(f["test_index"]) for f in folds_a]))
    result = compare_fold_scores(a, b, n_train, n_test, labels=(args.a, args.b), rope=args.rope)
    print(f"{metric} on {len(a)} shared outer folds: {args.a} {np.mean(a):.4f}, {args.b} {np.mean(b):.4f}")
    for key, title in (("corrected_t", "corrected resampled t-test"), ("bayes", "Bayesian correlated t-test"),
                       ("naive_t", "naive paired t-test (anti-conservative; for contrast)")):
        print(f"- {title}: {result[key]['verdict']}")


def _predict(args: argparse.Namespace) -> None:
    import torch

    from dlrig.evaluate.predict import predict_file

    if args.threads < 1:
        raise UserError(f"--threads must be >= 1 (got {args.threads})")
    torch.set_num_threads(args.threads)
    result = predict_file(args.model, args.data, label_column=args.label_column, delimiter=args.delimiter)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    table = result.to_csv()
    if args.out == "-":
        try:
            sys.stdout.write(table)
            sys.stdout.flush()
        except BrokenPipeError:  # `dlrig predict ... | head`: the reader has gone, which is no error
            import os

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    else:
        from dlrig.io import save_text

        save_text(args.out, table)
    where = "stdout" if args.out == "-" else args.out
    accuracy = result.accuracy()
    scored = ""
    if accuracy is not None:
        correct, n = accuracy
        scored = f"; accuracy {correct / n:.6f} ({correct} of {n} labelled rows)"
    print(f"predict: {len(result.proba)} rows, {len(result.classes)} classes -> {where}{scored}",
          file=sys.stderr)


def _plots(args: argparse.Namespace) -> None:
    from dlrig.report.dvcplots import main as plots_main

    plots_main([*args.revs, "--out", args.out])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="dlrig", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check-params", help="validate params.yaml and exit")
    check.add_argument("params", nargs="?", default="params.yaml")
    check.set_defaults(func=_check_params)

    reg = sub.add_parser("check-regression",
                         help="compare metrics with the committed ones; exit 1 on a regression")
    reg.add_argument("--thresholds", default="thresholds.yaml")
    reg.add_argument("--rev", default="HEAD", help="the git revision holding the baseline metrics")
    reg.add_argument("--out", default=None, help="also write the Markdown table here")
    reg.set_defaults(func=_check_regression)

    cmp_ = sub.add_parser("compare", help="is experiment A better than B? paired tests on their outer folds")
    cmp_.add_argument("a", help="git revision, DVC experiment name, or 'workspace'")
    cmp_.add_argument("b")
    cmp_.add_argument("--metric", default="accuracy")
    cmp_.add_argument("--rope", type=float, default=0.01)
    cmp_.add_argument("--folds", default="reports/cv/folds.json")
    cmp_.set_defaults(func=_compare)

    pred = sub.add_parser("predict", help="class probabilities of a saved model on new data, as CSV")
    pred.add_argument("model", help="a checkpoint written by train, e.g. models/model.pt")
    pred.add_argument("data", help="an .npz/.npy file, a CSV table, an image folder, or an IDX images file")
    pred.add_argument("--out", default="-", help="the predictions CSV (default: stdout)")
    pred.add_argument("--label-column", default="label",
                      help="CSV: the column holding labels, if any (not a feature); its rows get scored")
    pred.add_argument("--delimiter", default=",", help="CSV: the field delimiter")
    pred.add_argument("--threads", type=int, default=1,
                      help="torch threads (1, as evaluate runs: the same probabilities to the last bit)")
    pred.set_defaults(func=_predict)

    plots = sub.add_parser("plots", help="the dvc.yaml plots as images in one self-contained page (offline)")
    plots.add_argument("revs", nargs="*", help="revisions to compare, as `dvc plots diff` takes them; "
                       "none: the workspace")
    plots.add_argument("-o", "--out", default="dvc_plots/offline.html")
    plots.set_defaults(func=_plots)

    args = parser.parse_args(argv)
    run_stage(lambda _argv: args.func(args))


if __name__ == "__main__":  # pragma: no cover
    main()
