"""The input files of the report, built with the library functions that write them, and helpers to build
and read the page.

reports/cv comes from the library's own record builders (Trial, SearchResult, NestedCV._fold_record,
summarise, optimism_summary, analyze_search); metrics.json's ci95 and calibration, the reliability plot
data, compare.json, labels.json and detect.json from holdout_metrics, calibration, compare_fold_scores,
mcnemar, 5x2cv, corrupt_training_labels, find_label_issues and detection_scores -- so the shapes the
report reads cannot drift from what the stages write. Only the label study's results (for the studies page)
are assembled by hand (they need dozens of fits); tests/studies/test_labels.py checks that
``dlrig.studies.labels`` returns this shape and that its ``markdown`` reads the same dict.
"""

from __future__ import annotations

import itertools
import re
import struct
from types import SimpleNamespace

import numpy as np

from dlrig.data.dataset import Dataset
from dlrig.evaluate.compare import compare_fold_scores, compare_predictions, five_by_two_test
from dlrig.evaluate.holdout import calibration, holdout_metrics, precision_recall
from dlrig.io import load_json, save_json, save_text
from dlrig.labels.corrupt import corrupt_training_labels
from dlrig.labels.detect import detection_scores, find_label_issues
from dlrig.params import LabelsParams, ReportParams
from dlrig.report.html import build_report
from dlrig.select.analysis import analyze_search, optimism_summary
from dlrig.select.nested import NestedCV, Selection, summarise
from dlrig.select.search import SearchResult, Trial
from dlrig.select.space import Dimension, describe_space

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CFG = ReportParams(title="Tiny <run> & co", dpi=50)  # low dpi keeps the tests fast

TEST_METRICS = {
    "accuracy": 0.666667,
    "balanced_accuracy": 0.722222,
    "macro_f1": 0.655556,
    "log_loss": 0.709075,
    "n": 6,
    "classes": ["cat", "dog", "emu"],
    "per_class_recall": {"cat": 0.666667, "dog": 0.5, "emu": 1.0},
    "confusion_matrix": [[2, 1, 0], [0, 1, 1], [0, 0, 1]],
}
HISTORY = {
    "history": [
        {
            "epoch": e,
            "lr": 0.01 / e,
            "train_loss": 1.0 / e,
            "train_accuracy": 0.5 + 0.1 * e,
            "val_loss": 1.2 / e + 0.05 * e,
            "val_accuracy": 0.45 + 0.1 * e,
        }
        for e in range(1, 5)
    ],
    "best_epoch": 3,
    "stopped_early": True,
    "n_parameters": 12345,
    "n_fit": 20,
    "n_val": 4,
}
# The shape dlrig.data.validate writes, plus keys the report does not know ("summary", "extra").
VALIDATION = {
    "success": False,
    "n_expectations": 2,
    "n_failed": 1,
    "expectations": [
        {
            "name": "no_nan",
            "description": "no missing values",
            "success": True,
            "offending": 0,
            "unit": "samples",
            "examples": [],
        },
        {
            "name": "min_per_class",
            "description": "at least 10 per class <b>",
            "success": False,
            "offending": 2,
            "unit": "classes",
            "examples": [{"label": "emu", "count": 3}],
            "extra": 1,
        },
    ],
    "dataset": {"n_samples": 30, "class_counts": {"cat": 15, "dog": 10, "emu": 5}},
    "settings": {"on_failure": "warn", "min_per_class": 10},
    "summary": {"anything": [1, 2]},
}
SPLIT = {
    "n_train": 24,
    "n_test": 6,
    "test_size": 0.2,
    "duplicates": {"policy": "remove", "within_train": 1, "within_test": 0, "across": 2, "removed": 3},
    "class_counts": {"train": {"cat": 12, "dog": 8, "emu": 4}, "test": {"cat": 3, "dog": 2, "emu": 1}},
}
FILES = {  # every required input -> the stage that writes it
    "validation.json": "validate",
    "split.json": "split",
    "train/history.json": "train",
    "metrics.json": "evaluate",
    "cv/summary.json": "train",
    "cv/folds.json": "train",
    "plots/reliability_before.json": "evaluate",
    "plots/precision_recall.json": "evaluate",
    "compare.json": "compare",
    "labels.json": "labels",
    "detect.json": "detect",
}

# reports/cv as the train stage writes it, built with the library's own record builders (Trial,
# SearchResult, NestedCV._fold_record, summarise, optimism_summary, analyze_search), so the shapes the
# report reads cannot drift from what train writes. The scores are made up: lr matters, dropout does not.
DIMS = [
    Dimension("model.dropout", "float", (0.0, 0.2)),
    Dimension("optim.lr", "float", (0.001, 0.003, 0.01), low=0.001, high=0.01, log=True),
]
LR_EFFECT = {0.001: 0.70, 0.003: 0.85, 0.01: 0.78}


def fake_search(shift: float, dims=DIMS) -> SearchResult:
    names = [d.name for d in dims]
    trials = []
    for i, values in enumerate(itertools.product(*(d.values for d in dims))):
        config = dict(zip(names, values, strict=True))
        score = LR_EFFECT[config.get("optim.lr", 0.003)] - 0.005 * config.get("model.dropout", 0) + shift
        trials.append(Trial(i, config, [score - 0.01, score, score + 0.01], [50, 50, 50]))
    best = max(trials, key=lambda t: (t.score, -t.number))
    return SearchResult(trials, best, False)


def cv_files(depth: int = 2, dims=DIMS) -> tuple[dict, list]:
    """(summary.json, folds.json) for three outer folds, assembled as stages/train.py does."""
    driver = NestedCV(SimpleNamespace(metric="accuracy"), None, None, dims, None, None, 0, {})
    records = []
    for k, outer in enumerate((0.80, 0.84, 0.79)):
        search = fake_search(0.0 if depth == 1 else 0.01 * k, dims)
        if depth == 1:  # one search on the outer folds themselves; each fold scores the same winner
            outer = search.best.scores[k]
        chosen = Selection(search.best.config, search.best.score, search)
        if depth == 3:
            chosen.candidates, chosen.candidate = {"cnn": 0.83 + 0.01 * k, "mlp": 0.8}, "cnn"
        scores = {"accuracy": outer, "macro_f1": outer - 0.02}
        record = driver._fold_record(k, np.arange(k, 30, 3), np.arange(3), chosen, scores)
        if depth == 1:
            record["search"] = None
        records.append(record)
    search = fake_search(0.0 if depth == 1 else 0.005, dims)  # depth 1: the final pick is that one search
    final = Selection(search.best.config, search.best.score, search)
    if depth == 3:
        final.candidates, final.candidate = {"cnn": 0.84, "mlp": 0.81}, "cnn"
    space = describe_space(dims)
    trials = final.search.to_json()["trials"]
    summary = {
        **summarise(records, "accuracy", depth),
        "optimism_summary": optimism_summary(records, metric="accuracy") if depth > 1 else None,
        "final": {
            "config": final.config,
            "inner_score": round(final.inner_score, 6),
            "candidate": final.candidate,
            "candidates": final.candidates,
            "search": final.search.to_json(),
        },
        "space": space,
        "analysis": analyze_search(trials, space, "accuracy"),
    }
    return summary, records


def write_cv(reports, depth: int = 2, dims=DIMS) -> dict:
    summary, folds = cv_files(depth, dims)
    save_json(reports / "cv/summary.json", summary)
    save_json(reports / "cv/folds.json", folds)
    return load_json(reports / "cv/summary.json")




# ---------------------------------------------------------------------------- other result files
CLASSES = ["cat", "dog", "emu"]
# Test labels and predictions that give the confusion matrix [[2, 1, 0], [0, 1, 1], [0, 0, 1]].
Y_TEST = np.array([0, 0, 0, 1, 1, 2])
PRED_TEST = np.array([0, 0, 1, 1, 2, 2])


def _proba(pred: np.ndarray, confidence: np.ndarray | float, k: int = 3) -> np.ndarray:
    conf = np.broadcast_to(np.asarray(confidence, float), pred.shape)
    proba = np.tile(((1 - conf) / (k - 1))[:, None], (1, k))
    proba[np.arange(len(pred)), pred] = conf
    return proba


def ci95_of_test() -> dict:
    """``metrics.json`` test.ci95, as the evaluate stage computes it."""
    return holdout_metrics(Y_TEST, _proba(PRED_TEST, 0.7), CLASSES, seed=0, n_boot=200)["ci95"]


CALIBRATION_MODES = ("lowered", "raised", "few", "none")


def calibration_files(mode: str = "lowered") -> tuple[dict, dict]:
    """(metrics.json calibration, {"before": rows, "after": rows}) from calibration() itself.

    lowered: an over-confident model, T fitted on 80 clean rows (it lowers the test ECE);
    raised: a calibrated model, T fitted on 80 rows with half their labels flipped (it raises the ECE);
    few: only 21 fitting rows (no T); none: no fitting rows at all (early stopping off).
    """
    assert mode in CALIBRATION_MODES, mode
    rng = np.random.default_rng(0)
    n = 200
    y = rng.integers(0, 3, n)
    confidence = rng.uniform(0.5, 1.0, n)
    # Over-confident: right less often than it claims; calibrated: right as often as it claims.
    right = rng.uniform(size=n) < confidence - (0.0 if mode == "raised" else 0.2)
    proba = _proba(np.where(right, y, (y + 1) % 3), confidence)
    n_fit = {"lowered": 80, "raised": 80, "few": 21, "none": 0}[mode]
    y_fit, flipped = y[:n_fit].copy(), np.zeros(n_fit, dtype=bool)
    if mode == "raised":
        flipped = np.arange(n_fit) % 2 == 0
        y_fit[flipped] = (y_fit[flipped] + 1) % 3
    calib, curves = calibration(y[100:], proba[100:], y_fit if n_fit else None,
                                proba[:n_fit] if n_fit else None, n_bins=5, flipped_fit=flipped)
    return calib, {name: [r for r in rows if r["count"]] for name, rows in curves.items()}


def compare_file() -> dict:
    """``compare.json`` as compare_with_baselines returns it: one sklearn baseline with 5x2cv, one without."""
    ours = [0.80, 0.82, 0.79, 0.81, 0.80]
    close = [0.77, 0.81, 0.77, 0.805, 0.785]  # a small gap: the naive t-test calls it, the corrected not
    far = [0.60, 0.62, 0.58, 0.61, 0.63]
    pred_ours = PRED_TEST
    pred_base = np.array([0, 1, 1, 0, 2, 2])
    rng = np.random.default_rng(1)
    diffs = rng.normal(0.01, 0.01, (5, 2))
    results = {}
    for name, scores, estimator in (("logistic_regression", close, "logistic_regression"),
                                    ("small_mlp", far, "dlrig")):
        labels = ("tuned", name)
        entry = {
            "estimator": estimator,
            "folds": compare_fold_scores(ours, scores, 80.0, 20.0, labels=labels, alpha=0.05, rope=0.01),
            "test": compare_predictions(Y_TEST, pred_ours, pred_base, labels=labels, alpha=0.05),
            "test_accuracy": {"tuned": float((pred_ours == Y_TEST).mean()),
                              name: float((pred_base == Y_TEST).mean())},
        }
        if estimator != "dlrig":
            entry["five_by_two"] = five_by_two_test(diffs, np.zeros((5, 2)), labels=labels, alpha=0.05)
        results[name] = entry
    return {"metric": "accuracy", "reference": "tuned", "n_train": 80.0, "n_test": 20.0, "baselines": results}


def label_files(noise: float = 0.2, ratio: float = 2.0, detect: bool = True) -> tuple[dict, dict]:
    """(labels.json, detect.json) as the labels and detect stages write them."""
    rng = np.random.default_rng(2)
    y = np.repeat(np.arange(3), 40)
    train = Dataset(rng.normal(size=(len(y), 4)), y, CLASSES, "test")
    cfg = LabelsParams(
        noise={"kind": "symmetric" if noise else "none", "rate": noise},
        imbalance={"profile": "step" if ratio > 1 else "none", "ratio": ratio},
    )
    out, report, truth = corrupt_training_labels(train, cfg, seed=0)
    if not detect:
        return report, {"enabled": False}
    # Out-of-fold probabilities from a model that learned the clean labels, unsure about every 7th row.
    confidence = np.where(np.arange(len(out.y)) % 7 == 0, 0.4, 0.9)
    issues = find_label_issues(out.y, _proba(truth["y_clean"], confidence), 3, ambiguity_threshold=0.5)
    found = {"enabled": True, "n": len(out.y), "n_splits": 3, **issues["summary"]}
    if truth["flipped"].any():
        found["against_injected"] = detection_scores(issues["issue_mask"], truth["flipped"])
        found["true_noise_rate"] = round(float(truth["flipped"].mean()), 6)
    return report, found


def study_file() -> dict:
    """``reports/studies/labels.json`` in the shape ``dlrig.studies.labels.run`` returns."""
    return {
        "noise": {
            "kind": "symmetric",
            "metric": "test accuracy",
            "table": [
                {"rate": 0.0, "ce": 0.97, "gce": 0.96, "sce": 0.965, "ce + filter": 0.95},
                {"rate": 0.4, "ce": 0.81, "gce": 0.88, "sce": 0.86, "ce + filter": 0.84},
            ],
        },
        "imbalance": {
            "profile": "step",
            "metric": "test balanced accuracy",
            "table": [
                {"ratio": 1.0, "none": 0.97, "class weights": 0.97, "oversample": 0.968, "logit adjusted": 0.97},
                {"ratio": 10.0, "none": 0.81, "class weights": 0.9, "oversample": 0.91, "logit adjusted": 0.905},
            ],
        },
        "detection": {"rate": 0.2, "realised_rate": 0.201, "estimated_rate": 0.216, "precision": 0.914,
                      "recall": 0.917, "f1": 0.915, "n_flagged": 290, "n_true": 289},
        "wrong_vs_right": {
            "ratio": 10.0, "folds": 5, "metric": "balanced_accuracy",
            "wrong": {"cv": 0.9952, "test": 0.9052, "optimism": 0.09},
            "right": {"cv": 0.9032, "test": 0.9023, "optimism": 0.0009},
        },
    }


def write_result_files(reports, metrics_test: dict, calibration_mode: str = "lowered") -> None:
    """metrics.json (with ci95 and calibration), the reliability plot data, compare, labels, detect."""
    calib, curves = calibration_files(calibration_mode)
    ap, pr_curve = precision_recall(Y_TEST, _proba(PRED_TEST, 0.7), CLASSES)
    save_json(reports / "metrics.json",
              {"test": {**ap, **metrics_test, "ci95": ci95_of_test()}, "calibration": calib})
    save_json(reports / "plots/precision_recall.json", pr_curve)
    for name, rows in curves.items():
        save_json(reports / f"plots/reliability_{name}.json", rows)
    save_json(reports / "compare.json", compare_file())
    labels, detect = label_files()
    save_json(reports / "labels.json", labels)
    save_json(reports / "detect.json", detect)


def write_inputs(root, calibration_mode: str = "lowered"):
    """Every file the report reads, under ``root/reports``, and ``root/params.yaml``."""
    reports = root / "reports"
    save_json(reports / "validation.json", VALIDATION)
    save_json(reports / "split.json", SPLIT)
    save_json(reports / "train/history.json", HISTORY)
    write_result_files(reports, TEST_METRICS, calibration_mode)
    write_cv(reports)
    save_text(
        root / "params.yaml",
        "seed: 7  # why\noptim:\n  lr: 1e-3\nlabels:\n  noise: {kind: symmetric, rate: 0.2}\n"
        "  imbalance: {profile: step, ratio: 2.0}\nreport:\n  dpi: 50\n",
    )
    return root


# ------------------------------------------------------------------------------------ page helpers
def build_page(root, out):
    build_report(
        root / "reports", root / "params.yaml", root / out / "report.html", root / out / "figures", CFG
    )
    return (root / out / "report.html").read_text(encoding="utf-8")


def without_images(page: str) -> str:
    return re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "data:image/png;base64,", page)


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width > 0 and height > 0
    return width, height


def section_of(page: str, anchor: str) -> str:
    start = page.index(f'<section id="{anchor}">')
    return page[start : page.index("</section>", start)]
