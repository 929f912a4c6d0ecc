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


def _lr_range(args: argparse.Namespace) -> None:
    """One learning-rate range test on the training rows; prints the suggestions and a search range."""
    import math

    from dlrig.params import load_params

    params = load_params(args.params)
    cfg = params.studies.lr_range
    start = cfg.start_lr if args.start is None else args.start
    end = cfg.end_lr if args.end is None else args.end
    steps = cfg.steps if args.steps is None else args.steps
    if not (math.isfinite(start) and start > 0):
        raise UserError(f"--start must be a learning rate > 0 (got {start:g})")
    if not (math.isfinite(end) and end > start):
        raise UserError(f"--end must be > --start (got {end:g}, start {start:g})")
    if steps < 20:
        raise UserError(f"--steps must be >= 20 (got {steps}): the suggestions skip the first 10% and last 5")
    import torch

    from dlrig.data.dataset import Dataset
    from dlrig.train.lr_range import lr_range_test, space_yaml

    torch.set_num_threads(params.compute.torch_threads)
    train = Dataset.load(args.train, args.meta)
    seed = params.seed if args.seed is None else args.seed
    result = lr_range_test(train.X, train.y, train.n_classes, params.fit_config(), seed, start_lr=start,
                           end_lr=end, steps=steps, beta=cfg.beta, diverge=cfg.diverge,
                           device=params.compute.device)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    fit_cfg = params.fit_config()
    print(f"lr-range: {len(result.lrs)} steps on {len(train.y)} training rows ({fit_cfg.model.name}, "
          f"{fit_cfg.optim.name}, seed {seed}), lr {result.lrs[0]:.3g} -> {result.lrs[-1]:.3g}; "
          f"{result.stop_reason or 'ran every step'}")
    if args.out:
        from dlrig.io import save_json

        save_json(args.out, result.to_json())
    if args.plot:
        from dlrig.report.study_lr_range import lr_range_figure

        band = [{"lr": lr, "min": v, "median": v, "max": v}
                for lr, v in zip(result.lrs, result.smoothed, strict=True) if math.isfinite(v)]
        marks = [("valley", result.suggestions["valley"], "tab:green", "-"),
                 ("steepest", result.suggestions["steepest"], "tab:orange", "--")]
        lr_range_figure(band, marks, result.space, args.plot, params.report.dpi)
    found = result.suggestions
    if result.space is None:
        print("lr-range: no suggestion: the smoothed loss had no descending stretch (widen --start/--end "
              "or add --steps)")
        sys.exit(1)
    print(f"suggested lr: {found['valley']:.2g} (valley), {found['steepest']:.2g} (steepest); lowest "
          f"smoothed loss at {found['minimum']:.2g}")
    print("# a search range to paste into params.yaml (nothing was changed):")
    print(space_yaml(result.space))


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

    lrr = sub.add_parser("lr-range", help="learning-rate range test: suggest an lr and a search.space range")
    lrr.add_argument("--params", default="params.yaml", help="the model, optimizer and training settings")
    lrr.add_argument("--train", default="data/processed/train.npz",
                     help="training rows only (the train stage reads data/processed/train_labels.npz)")
    lrr.add_argument("--meta", default="data/raw/meta.json")
    lrr.add_argument("--start", type=float, default=None, help="first lr (default studies.lr_range.start_lr)")
    lrr.add_argument("--end", type=float, default=None, help="last lr (default: studies.lr_range.end_lr)")
    lrr.add_argument("--steps", type=int, default=None, help="sweep steps (default: studies.lr_range.steps)")
    lrr.add_argument("--seed", type=int, default=None, help="default: the params seed")
    lrr.add_argument("--out", default=None, help="also write every step's lr and loss as JSON here")
    lrr.add_argument("--plot", default=None, help="also draw the smoothed loss against lr as a PNG here")
    lrr.set_defaults(func=_lr_range)

    plots = sub.add_parser("plots", help="the dvc.yaml plots as images in one self-contained page (offline)")
    plots.add_argument("revs", nargs="*", help="revisions to compare, as `dvc plots diff` takes them; "
                       "none: the workspace")
    plots.add_argument("-o", "--out", default="dvc_plots/offline.html")
    plots.set_defaults(func=_plots)

    args = parser.parse_args(argv)
    run_stage(lambda _argv: args.func(args))


if __name__ == "__main__":  # pragma: no cover
    main()
