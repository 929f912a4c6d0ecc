"""The human report: one self-contained HTML page built from the files earlier stages saved.

It tells the story in order: the headline (the nested-CV estimate beside the held-out test scores, each
with its interval; when the labels stage corrupted the training labels, the clean test score leads and the
CV score says which labels it was measured against), how the hyperparameters were selected and how far to
trust that choice, how the tuned model compares with the baselines, how the final training went, how well
calibrated its probabilities are, the per-class results, what was done to the labels and what label checks
found, and the data checks. It reads no study result: the studies (``studies/dvc.yaml``) have their own
page, reports/studies/report.html (:mod:`dlrig.report.studies`), which the Labels section links to.
Each long section lives in its own module (selection, baselines, calibration, labels); this one reads and
checks the inputs, computes each section's numbers and sentences and assembles the page. The markup is in
the Jinja2 templates ``templates/<section>.html.j2`` (the page: ``report.html.j2``, extending
``page.html.j2``). Nothing is re-trained or re-scored here.

The page (:func:`dlrig.report.markup.page`) embeds its figures as base64 PNGs and its CSS inline, loads
nothing from anywhere and needs no JavaScript, so it can be mailed, archived or opened offline.
It carries no timestamp and no absolute path: the same inputs give a byte-identical page, so git and
``dvc`` see a change only when a result changed.
"""

from __future__ import annotations

import copy
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from markupsafe import Markup

import dlrig
from dlrig.errors import UserError
from dlrig.io import load_json, resolve, save_text
from dlrig.params import ReportParams, read_yaml
from dlrig.report.baselines import baselines_section, check_compare
from dlrig.report.calibration import calibration_section, missing_calibration_keys
from dlrig.report.cost import cost_section
from dlrig.report.cv_figures import outer_fold_scores, score_vs_hyperparameters, trial_history
from dlrig.report.figures import (
    confusion_matrix_figure,
    fold_learning_curves,
    learning_curves,
    per_class_recall_figure,
    precision_recall_figure,
    reliability_figure,
)
from dlrig.report.labels import check_labels, labels_section, training_label_caveat
from dlrig.report.markup import finite, num, page, pct, plain, render
from dlrig.report.search_figures import importance_figure, top_two_figure
from dlrig.report.selection import selection_section

# input file (relative to reports_dir) -> the stage that writes it
INPUTS = {
    "validation": ("validation.json", "validate"),
    "split": ("split.json", "split"),
    "history": ("train/history.json", "train"),
    "metrics": ("metrics.json", "evaluate"),
    "cv": ("cv/summary.json", "train"),
    "folds": ("cv/folds.json", "train"),
    "reliability_before": ("plots/reliability_before.json", "evaluate"),
    "precision_recall": ("plots/precision_recall.json", "evaluate"),
    "compare": ("compare.json", "compare"),
    "labels": ("labels.json", "labels"),
    "detect": ("detect.json", "detect"),
}
# The evaluate stage writes this exactly when it fitted a temperature, and the report then requires it.
# No study result is read here: studies/dvc.yaml has its own report stage (dlrig.report.studies).
OPTIONAL_INPUTS = {"reliability_after": ("plots/reliability_after.json", "evaluate")}
LIST_INPUTS = {"folds", "reliability_before", "reliability_after", "precision_recall"}  # JSON arrays
FIGURES = {
    "curves": "learning_curves.png",
    "recall": "per_class_recall.png",
    "confusion": "confusion_matrix.png",
    "cv_params": "cv_scores_vs_hyperparameters.png",
    "cv_folds": "cv_outer_folds.png",
    "cv_history": "cv_trial_history.png",
    "reliability": "reliability.png",
    "pr": "precision_recall.png",
}
# Drawn only when there is something to draw: an importance to rank, two searched hyperparameters, the outer
# refits' per-epoch histories in reports/cv/folds.json.
OPTIONAL_FIGURES = {
    "cv_importance": "cv_importance.png",
    "cv_top_two": "cv_top_two.png",
    "fold_curves": "cv_refit_curves.png",
}
CV_KEYS = ("metric", "depth", "mean", "std", "ci95", "final", "space", "analysis")
FOLD_KEYS = ("fold", "best_config", "best_inner_score", "outer_score")
HEADLINE_KEYS = ("accuracy", "balanced_accuracy", "macro_f1", "log_loss", "macro_average_precision", "n")
CI_KEYS = ("accuracy", "balanced_accuracy", "macro_f1")  # test.ci95: evaluate's bootstrap intervals


# ------------------------------------------------------------------------------------------ inputs
def _load_input(reports_dir: Path, name: str) -> Any:
    rel, stage = INPUTS.get(name) or OPTIONAL_INPUTS[name]
    path = reports_dir / rel
    if not path.is_file():
        raise UserError(
            f"{path}: file not found; it is written by the {stage} stage (run `dvc repro {stage}` first)"
        )
    data = load_json(path)
    kind = list if name in LIST_INPUTS else dict
    if not isinstance(data, kind):
        raise UserError(
            f"{path}: expected a JSON {'array' if kind is list else 'object'} (written by "
            f"the {stage} stage), got {type(data).__name__}"
        )
    return data


def _check_metrics(path: Path, metrics: Mapping[str, Any], classes: list[str]) -> None:
    test = metrics["test"]
    ci = test.get("ci95") if isinstance(test.get("ci95"), dict) else {}
    bad = [k for k in CI_KEYS if not (isinstance(ci.get(k), dict) and {"low", "high"} <= ci[k].keys())]
    if bad:
        raise UserError(f"{path}: test.ci95 lacks the interval of {bad} (re-run the evaluate stage)")
    missing = missing_calibration_keys(metrics.get("calibration"))
    if missing:
        raise UserError(f"{path}: calibration lacks {missing} (re-run the evaluate stage)")
    cm = test["confusion_matrix"]
    if not (
        isinstance(cm, list)
        and len(cm) == len(classes)
        and all(isinstance(row, list) and len(row) == len(classes) for row in cm)
    ):
        raise UserError(
            f"{path}: test.confusion_matrix must be {len(classes)}x{len(classes)} "
            f"for classes {classes} (re-run the evaluate stage)"
        )


def _check_cv(reports_dir: Path, summary: Mapping[str, Any], folds: list[Any]) -> None:
    path = reports_dir / INPUTS["cv"][0]
    missing = [k for k in CV_KEYS if k not in summary]
    if missing:
        raise UserError(f"{path}: lacks {missing} (re-run the train stage)")
    if not isinstance(summary["final"], dict) or not isinstance(summary["final"].get("config"), dict):
        raise UserError(f"{path}: 'final' must hold the chosen 'config' (re-run the train stage)")
    for i, record in enumerate(folds):
        if not isinstance(record, dict) or any(k not in record for k in FOLD_KEYS):
            raise UserError(
                f"{reports_dir / INPUTS['folds'][0]}: record {i} must hold {list(FOLD_KEYS)} "
                "(re-run the train stage)"
            )


def load_inputs(reports_dir: str | Path, params_path: str | Path) -> dict[str, Any]:
    """Read and check every file the report needs; a missing one names the stage that writes it."""
    reports_dir = Path(reports_dir)
    inputs = {name: _load_input(reports_dir, name) for name in INPUTS}
    metrics_path = reports_dir / INPUTS["metrics"][0]
    test = inputs["metrics"].get("test")
    if not isinstance(test, dict):
        raise UserError(f"{metrics_path}: missing the 'test' section (written by the evaluate stage)")
    missing = [k for k in (*HEADLINE_KEYS, "per_class_recall", "confusion_matrix") if k not in test]
    if missing:
        raise UserError(f"{metrics_path}: test section lacks {missing} (re-run the evaluate stage)")
    _check_cv(reports_dir, inputs["cv"], inputs["folds"])
    history = inputs["history"].get("history")
    if not isinstance(history, list):
        raise UserError(f"{reports_dir / INPUTS['history'][0]}: missing the 'history' list (re-run train)")
    _check_metrics(metrics_path, inputs["metrics"], _classes(test))
    check_compare(reports_dir / INPUTS["compare"][0], inputs["compare"])
    labels_path, detect_path = reports_dir / INPUTS["labels"][0], reports_dir / INPUTS["detect"][0]
    check_labels(labels_path, inputs["labels"], detect_path, inputs["detect"])
    # After temperature scaling: required exactly when a temperature was fitted.
    scaled = bool(inputs["metrics"]["calibration"]["temperature_fitted"])
    inputs["reliability_after"] = _load_input(reports_dir, "reliability_after") if scaled else None
    raw_params = read_yaml(params_path)
    if raw_params is not None and not isinstance(raw_params, dict):
        raise UserError(f"{params_path}: must be a mapping of sections")
    inputs["params"] = raw_params or {}
    return inputs


def _classes(test: Mapping[str, Any]) -> list[str]:
    classes = test.get("classes")
    return [str(c) for c in classes] if classes else [str(c) for c in test["per_class_recall"]]


# ----------------------------------------------------------------------------------------- sections
def _test_score(test: Mapping[str, Any], metric: str) -> float | None:
    """The test set's value of the selection metric (neg_log_loss is minus the saved log loss)."""
    value = test.get("log_loss" if metric == "neg_log_loss" else metric)
    if not finite(value):
        return None
    return -float(value) if metric == "neg_log_loss" else float(value)


def _cv_line(cv: Mapping[str, Any]) -> str:
    """CV accuracy 0.970 ± 0.007 (95% CI 0.961–0.979, 5 outer folds)."""
    k = len(cv.get("scores") or [])
    folds = f"{k} {'folds' if int(cv['depth']) == 1 else 'outer folds'}"
    lo, hi = (list(cv.get("ci95") or []) + [None, None])[:2]
    ci = f"95% CI {lo:.3f}{' to ' if lo < 0 else '–'}{hi:.3f}, " if finite(lo) and finite(hi) else ""
    return f"CV {cv['metric']} {float(cv['mean']):.3f} ± {float(cv['std']):.3f} ({ci}{folds})"


def _cv_estimate(
    cv: Mapping[str, Any], test: Mapping[str, Any], caveat: tuple[str, str] | None = None
) -> dict[str, Any]:
    """The CV box; ``caveat`` (see ``training_label_caveat``) names the corrupted labels it was scored on."""
    metric = cv["metric"]
    optimistic = bool(cv.get("optimistic")) or int(cv["depth"]) == 1
    where = f"{caveat[0]} training labels" if caveat else "training split"
    label = f"Plain CV (optimistic), {where}" if optimistic else f"Nested-CV estimate, {where}"
    value = _cv_line(cv) + (f", measured against the {where}" if caveat else "")
    hint = f"± is the standard deviation over folds. Test accuracy {float(test['accuracy']):.3f}"
    score = _test_score(test, metric)
    if metric != "accuracy" and score is not None:
        hint += f", test {metric} {score:.3f}"
    test_ci = test.get("ci95") if isinstance(test.get("ci95"), dict) else {}  # evaluate's bootstrap
    test_ci = test_ci.get("accuracy") if isinstance(test_ci.get("accuracy"), dict) else {}
    if finite(test_ci.get("low")) and finite(test_ci.get("high")):
        hint += f" (95% CI {test_ci['low']:.3f}–{test_ci['high']:.3f})"
    hint += f" on {num(int(test['n']))} held-out samples"
    lo, hi = (list(cv.get("ci95") or []) + [None, None])[:2]
    if score is not None and finite(lo) and finite(hi):
        hint += f": {'inside' if lo <= score <= hi else 'above' if score > hi else 'below'} the CV interval"
        if caveat:
            hint += f", though the two were scored against different labels (true vs {caveat[0]})"
    hint += "."
    if optimistic:
        hint += (
            " cv.depth 1 scores the chosen config on the folds that chose it, so this overstates; "
            "cv.depth 2 (nested) gives an honest estimate."
        )
    return {"optimistic": optimistic, "label": label, "value": value, "hint": hint}


def _interval(test: Mapping[str, Any], metric: str) -> str:
    """95% CI 95.83%–98.89%: the evaluate stage's bootstrap interval, in the card's own format."""
    low, high = (float(test["ci95"][metric][k]) for k in ("low", "high"))
    if metric in ("accuracy", "balanced_accuracy"):
        return f"95% CI {100 * low:.1f}–{100 * high:.1f}%"
    return f"95% CI {low:.3f}–{high:.3f}"


def _corrupted_lead(test: Mapping[str, Any], cv: Mapping[str, Any], caveat: tuple[str, str]) -> str:
    """Why the test score leads when the labels stage corrupted the training labels: the CV score was
    measured against those labels, the test score against true ones.

    "... CV accuracy 0.502, measured against the noisy training labels (575 of 1,437 flipped by the labels
    stage), is not an estimate of the test score: it scores predictions against flipped labels."
    """
    words, evidence = caveat
    metric = cv["metric"]
    score = f"test accuracy {pct(test['accuracy'])} ({_interval(test, 'accuracy')})"
    other = _test_score(test, metric)
    if metric != "accuracy" and other is not None:
        score += f" and test {metric} {other:.3f}"
    why = (["scores predictions against flipped labels"] if "noisy" in words else []) + (
        ["reflects a class mix the test split does not have"] if "imbalanced" in words else []
    )
    return (
        f"The test split kept its true labels, so its scores lead: {score} on {num(int(test['n']))} "
        f"held-out samples. CV {metric} {float(cv['mean']):.3f}, measured against the {words} training "
        f"labels ({evidence}), is not an estimate of the test score: it {' and '.join(why)}."
    )


def _headline(
    test: Mapping[str, Any], classes: list[str], cv: Mapping[str, Any], labels: Mapping[str, Any]
) -> Markup:
    """The test cards and the CV estimate. With corrupted training labels the clean test score leads and
    the CV score says what it was measured against; otherwise the CV estimate comes first."""
    cards = [
        (
            "Accuracy",
            pct(test["accuracy"]),
            _interval(test, "accuracy"),
            "share of test samples classified correctly",
        ),
        (
            "Balanced accuracy",
            pct(test["balanced_accuracy"]),
            _interval(test, "balanced_accuracy"),
            "mean recall over classes",
        ),
        ("Macro-F1", num(test["macro_f1"]), _interval(test, "macro_f1"), "unweighted mean F1 over classes"),
        ("Log loss", num(test["log_loss"]), "", "mean negative log-probability of the true class"),
        (
            "Average precision",
            num(test["macro_average_precision"]),
            "",
            "area under each class's precision-recall curve (one vs rest), macro mean",
        ),
        ("Test samples", num(int(test["n"])), "", f"{len(classes)} classes"),
    ]
    caveat = training_label_caveat(labels)
    return render(
        "headline.html.j2",
        cards=cards,
        caveat=caveat[0] if caveat else None,
        lead=_corrupted_lead(test, cv, caveat) if caveat else None,
        cv_box=_cv_estimate(cv, test, caveat),
    )


def _training(
    history: Mapping[str, Any], curves_png: bytes, show_fold_curves: bool, fold_curves_png: bytes | None
) -> Markup:
    """The final refit's facts and curves; at nested depths each outer fold's refit too (or why not)."""
    rows = history.get("history") or []
    best = history.get("best_epoch")
    best_row = next((r for r in rows if r.get("epoch") == best), None)
    has_val = any(r.get("val_loss") is not None for r in rows)
    facts = [
        ("Epochs run", num(len(rows))),
        ("Best epoch", best if best is not None else "n/a"),
        ("Stopped early", num(history.get("stopped_early"))),
        ("Parameters", num(history.get("n_parameters"))),
        ("Samples for gradient steps", num(history.get("n_fit"))),
        ("Samples for early stopping", num(history.get("n_val")) if has_val else "none (early stopping off)"),
    ]
    if best_row is not None:
        for key, label in (
            ("train_loss", "Train loss at best epoch"),
            ("val_loss", "Validation loss at best epoch"),
            ("train_accuracy", "Train accuracy at best epoch"),
            ("val_accuracy", "Validation accuracy at best epoch"),
        ):
            if best_row.get(key) is not None:
                value = pct(best_row[key]) if "accuracy" in key else num(best_row[key])
                facts.append((label, value))
    return render(
        "training.html.j2",
        facts=facts,
        curves_png=curves_png,
        has_val=has_val,
        show_fold_curves=show_fold_curves,
        fold_curves_png=fold_curves_png,
    )


def _per_class(
    test: Mapping[str, Any], classes: list[str], recall_png: bytes, confusion_png: bytes, pr_png: bytes
) -> Markup:
    recall = test["per_class_recall"]
    ap = test.get("average_precision") or {}
    cm = test["confusion_matrix"]
    rows = []
    for i, name in enumerate(classes):
        support = sum(cm[i]) if i < len(cm) else None
        predicted = sum(row[i] for row in cm if i < len(row)) if cm else None
        value = recall.get(name)
        rows.append((name, num(support), num(predicted), pct(value), num(ap.get(name))))
    return render(
        "per_class.html.j2",
        rows=rows,
        recall_png=recall_png,
        confusion_png=confusion_png,
        pr_png=pr_png,
        macro_ap=num(test["macro_average_precision"]),
    )


def _validation(validation: Mapping[str, Any]) -> Markup:
    """Outcome, one row per expectation (failures highlighted), then every other key the file holds.

    The validate stage writes ``unit`` (what ``offending`` counts) and ``examples`` (a few offenders) per
    expectation and ``dataset``/``settings`` at the top; any other key is shown as it is, not refused.
    """
    expectations = [e for e in validation.get("expectations") or [] if isinstance(e, dict)]
    success = validation.get("success")
    n_ok = sum(1 for e in expectations if e.get("success") is True)
    known = {"name", "description", "success", "offending", "unit"}
    rows = []
    for exp in expectations:
        ok = exp.get("success")
        extra = "; ".join(f"{k}: {plain(v)}" for k, v in exp.items() if k not in known and v not in ([], {}))
        offending, unit = exp.get("offending"), exp.get("unit")
        if offending is None:
            shown = ""
        elif isinstance(offending, int | float) and not isinstance(offending, bool):
            shown = num(offending) + (f" {unit}" if unit else "")
        else:
            shown = plain(offending)
        rows.append(
            {
                "ok": ok if isinstance(ok, bool) else None,
                "name": exp.get("name", "?"),
                "description": exp.get("description", ""),
                "offending": shown,
                "details": extra,
            }
        )
    others = []  # every other top-level key; one level of a mapping is spread into rows
    for key, value in validation.items():
        if key in {"success", "expectations"}:
            continue
        if isinstance(value, dict) and value:
            others += [(f"{key}.{sub}", plain(v)) for sub, v in value.items()]
        else:
            others.append((str(key), plain(value)))
    return render(
        "validation.html.j2",
        success=success if isinstance(success, bool) else None,
        n_ok=n_ok,
        n_expectations=len(expectations),
        rows=rows,
        others=others,
    )


def _split(split: Mapping[str, Any], classes: list[str]) -> Markup:
    dup = split.get("duplicates") or {}
    test_size = split.get("test_size")
    facts = [
        ("Train samples", num(split.get("n_train"))),
        ("Test samples", num(split.get("n_test"))),
        ("Test fraction (requested)", "n/a" if test_size is None else f"{float(test_size):g}"),
        ("Duplicate policy", Markup("<code>{}</code>").format(dup.get("policy", "n/a"))),
        ("Duplicates within train", num(dup.get("within_train"))),
        ("Duplicates within test", num(dup.get("within_test"))),
        ("Duplicates across train and test", num(dup.get("across"))),
        ("Samples removed as duplicates", num(dup.get("removed"))),
    ]
    counts = split.get("class_counts") or {}
    train, test = counts.get("train") or {}, counts.get("test") or {}
    names = [c for c in classes if c in train or c in test]
    names += [c for c in (*train, *test) if c not in names]
    names = list(dict.fromkeys(names))
    n_train, n_test = sum(train.values()) or 1, sum(test.values()) or 1
    rows = [
        (
            c,
            num(train.get(c, 0)),
            f"{train.get(c, 0) / n_train:.1%}",
            num(test.get(c, 0)),
            f"{test.get(c, 0) / n_test:.1%}",
        )
        for c in names
    ]
    return render("split.html.j2", facts=facts, rows=rows)


def _flow(value: Any) -> str:
    """One value in YAML flow style, quoted where YAML needs it: 0.2, cnn, [16, 32], {low: 0.1}, null."""
    text = yaml.safe_dump([value], default_flow_style=True, allow_unicode=True, width=10**6).strip()
    return text[1:-1]


_MISSING = object()


def _lookup(tree: Mapping[str, Any], dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _with_chosen(raw: Mapping[str, Any], chosen: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the params with each dotted key of ``chosen`` set to its value (created where absent)."""
    out: dict[str, Any] = copy.deepcopy(dict(raw))
    for dotted, value in chosen.items():
        node = out
        *parents, leaf = dotted.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[leaf] = value
    return out


def _yaml_lines(
    node: Mapping[str, Any], notes: Mapping[str, str], prefix: str = "", depth: int = 0
) -> list[tuple[str, str | None]]:
    """Block-style YAML, one ``(line, note)`` per key; the note (None for most) is that of the key's dotted
    path in ``notes``: the page highlights the line, with its note as a comment."""
    lines = []
    for key, value in node.items():
        path, pad = f"{prefix}{key}", "  " * depth
        if isinstance(value, Mapping) and value:
            lines.append((f"{pad}{_flow(key)}:", None))
            lines += _yaml_lines(value, notes, f"{path}.", depth + 1)
        else:
            lines.append((f"{pad}{_flow(key)}: {_flow(value)}", notes.get(path)))
    return lines


def _params(raw: Mapping[str, Any], chosen: Mapping[str, Any]) -> Markup:
    """params.yaml as the final model used it: the values the search chose replace their starting points."""
    notes = {}
    for dotted, value in chosen.items():
        start = _lookup(raw, dotted)
        was = "not set (its default)" if start is _MISSING else _flow(start)
        notes[dotted] = "chosen by the search" + (f"; params.yaml: {was}" if start != value else "")
    intro = (
        f"params.yaml with the {len(chosen)} value{'s' if len(chosen) != 1 else ''} the search chose in "
        "place of the starting values the file holds (highlighted, the file's value in the comment): the "
        "config the final model was trained with."
        if chosen
        else "params.yaml as it is: nothing was searched."
    )
    return render("params.html.j2", intro=intro, lines=_yaml_lines(_with_chosen(raw, chosen), notes))




def run_identity(cwd: str | Path | None = None) -> dict[str, str | None]:
    """Which run this is, for the title block: the DVC experiment's name and the git commit it started from.

    ``dvc exp run`` names the experiment in ``DVC_EXP_NAME`` and its baseline commit in
    ``DVC_EXP_BASELINE_REV`` in the environment of the stages it runs; otherwise (``dvc repro``) there is no
    name and the revision is HEAD's. Both are None when unknown (no git, no commit yet). Two runs of the
    same params in the same git state give the same values, so the page stays byte-identical.
    """
    revision = os.environ.get("DVC_EXP_BASELINE_REV") or None
    if revision is None:
        try:
            proc = subprocess.run(["git", "rev-parse", "--verify", "--quiet", "HEAD"], cwd=cwd,
                                  capture_output=True, text=True, check=False, timeout=30)
            revision = proc.stdout.strip() if proc.returncode == 0 else None
        except (OSError, subprocess.TimeoutExpired):
            revision = None
    return {"experiment": os.environ.get("DVC_EXP_NAME") or None,
            "revision": revision[:7] if revision else None}


def render_html(
    inputs: Mapping[str, Any],
    figures: Mapping[str, bytes],
    title: str,
    identity: Mapping[str, str | None] | None = None,
) -> str:
    """The page as a string, from loaded inputs (see :func:`load_inputs`), the figures' PNG bytes (the
    optional ones may be absent) and the run's identity (:func:`run_identity`; None leaves it out)."""
    test = inputs["metrics"]["test"]
    classes = _classes(test)
    validation_ok = inputs["validation"].get("success")
    subtitle = (
        f"{len(classes)} classes · {num(int(test['n']))} test samples · data validation "
        f"{'passed' if validation_ok is True else 'FAILED' if validation_ok is False else 'n/a'}"
    )
    nav = (
        ("headline", "Headline"),
        ("selection", "Model selection"),
        ("baselines", "Baselines"),
        ("training", "Training"),
        ("calibration", "Calibration"),
        ("per-class", "Per class"),
        ("labels", "Labels"),
        ("validation", "Validation"),
        ("split", "Split"),
        ("params", "Params"),
        ("cost", "Cost"),
    )
    sources = ", ".join(
        [rel for rel, _ in INPUTS.values()]
        + [rel for name, (rel, _) in OPTIONAL_INPUTS.items() if inputs.get(name) is not None]
    )
    body = "".join(
        [
            _headline(test, classes, inputs["cv"], inputs["labels"]),
            selection_section(inputs["cv"], inputs["folds"], inputs["params"], figures),
            baselines_section(inputs["compare"], inputs["cv"]["metric"]),
            _training(
                inputs["history"],
                figures["curves"],
                show_fold_curves=int(inputs["cv"]["depth"]) > 1,
                fold_curves_png=figures.get("fold_curves"),
            ),
            calibration_section(
                inputs["metrics"]["calibration"],
                int(test["n"]),
                inputs["history"].get("n_val"),
                figures["reliability"],
            ),
            _per_class(test, classes, figures["recall"], figures["confusion"], figures["pr"]),
            labels_section(inputs["labels"], inputs["detect"], classes, inputs["params"]),
            _validation(inputs["validation"]),
            _split(inputs["split"], classes),
            _params(inputs["params"], inputs["cv"]["final"]["config"]),
            cost_section(),  # embeds run/cost.html: the measured costs vary, so they live there
        ]
    )
    return page(
        title,
        body,
        subtitle=subtitle,
        nav=nav,
        template="report.html.j2",
        identity=identity,  # the title block's "experiment ... · git ..." line
        version=dlrig.__version__,
        sources=sources,
    )


def build_report(
    reports_dir: Path,
    params_path: Path,
    out_html: Path,
    figures_dir: Path,
    cfg: ReportParams,
    identity: Mapping[str, str | None] | None = None,
) -> None:
    """Write the figures into ``figures_dir`` and the self-contained page to ``out_html``; ``identity``
    (:func:`run_identity`) names the run in the title block."""
    reports_dir, figures_dir = Path(reports_dir), Path(figures_dir)
    inputs = load_inputs(reports_dir, params_path)
    test = inputs["metrics"]["test"]
    classes = _classes(test)
    cv, metric = inputs["cv"], inputs["cv"]["metric"]
    calib = inputs["metrics"]["calibration"]
    final_trials = (cv["final"].get("search") or {}).get("trials") or []
    paths = {
        "curves": learning_curves(inputs["history"], figures_dir / FIGURES["curves"], cfg.dpi),
        "recall": per_class_recall_figure(
            {c: test["per_class_recall"].get(c) for c in classes},
            figures_dir / FIGURES["recall"],
            cfg.dpi,
            balanced_accuracy=test["balanced_accuracy"],
        ),
        "confusion": confusion_matrix_figure(
            test["confusion_matrix"], classes, figures_dir / FIGURES["confusion"], cfg.dpi
        ),
        "cv_params": score_vs_hyperparameters(
            final_trials,
            cv["space"] or {},
            figures_dir / FIGURES["cv_params"],
            cfg.dpi,
            metric,
            analysis=cv["analysis"] or None,
        ),
        "cv_folds": outer_fold_scores(
            inputs["folds"],
            figures_dir / FIGURES["cv_folds"],
            cfg.dpi,
            metric,
            optimistic=int(cv["depth"]) == 1,
        ),
        "cv_history": trial_history(final_trials, figures_dir / FIGURES["cv_history"], cfg.dpi, metric),
        "reliability": reliability_figure(
            inputs["reliability_before"],
            figures_dir / FIGURES["reliability"],
            cfg.dpi,
            after=inputs["reliability_after"],
            ece_before=calib["ece"],
            ece_after=calib.get("ece_scaled"),
            temperature=calib["temperature"] if calib["temperature_fitted"] else None,
        ),
        "pr": precision_recall_figure(
            inputs["precision_recall"],
            figures_dir / FIGURES["pr"],
            cfg.dpi,
            macro_ap=test["macro_average_precision"],
            prevalence=1 / len(classes),
        ),
        "cv_importance": importance_figure(
            cv["analysis"] or {}, figures_dir / OPTIONAL_FIGURES["cv_importance"], cfg.dpi
        ),
        "cv_top_two": top_two_figure(
            final_trials,
            cv["space"] or {},
            cv["analysis"] or {},
            figures_dir / OPTIONAL_FIGURES["cv_top_two"],
            cfg.dpi,
            metric,
        ),
        "fold_curves": fold_learning_curves(inputs["folds"], figures_dir / OPTIONAL_FIGURES["fold_curves"],
                                            cfg.dpi),
    }
    # resolve: the figures were written in this stage's output set and are renamed into place at its end
    figures = {name: resolve(path).read_bytes() for name, path in paths.items() if path is not None}
    save_text(out_html, render_html(inputs, figures, cfg.title, identity))
