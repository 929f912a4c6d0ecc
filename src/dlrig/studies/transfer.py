"""The transfer study: does a body pretrained on some classes help learn the others from a few labels?

Source task: the digits of ``studies.transfer.source_classes`` in the training split; :func:`pretrain`
trains the source model (the ``pretrain`` stage saves it as a checkpoint). Target task: the other classes.
For each number of labelled target samples per class and each seed, one stratified subsample of the
target's training rows is drawn, and every method learns from exactly those rows:

- the transfer modes of :mod:`dlrig.train.transfer` (scratch, linear probe, fine-tuning, fine-tuning the
  top blocks, gradual unfreezing), paired: the same rows and fit seed for every mode;
- fixed features + logistic regression (:mod:`dlrig.evaluate.features`): the pretrained body's penultimate
  features (automatic), PCA and HOG-like histograms (explicit).

Scores are accuracies on the test split's target classes. Differences to scratch are paired by seed
(mean, t interval over seeds, min-max); :func:`verdict` says where transfer stops paying. No download: the
only "pretrained" weights are the ones the pretrain stage trained here.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dlrig.data.dataset import Dataset
from dlrig.errors import UserError
from dlrig.params import FitConfig, Params, TransferStudyParams
from dlrig.seeds import derive_seed
from dlrig.select.cluster import map_jobs
from dlrig.train import FitResult, fit, predict_proba

EXTRACTORS = {"pretrained": "pretrained_logreg", "pca": "pca_logreg", "hog": "hog_logreg"}
USES_CHECKPOINT = {"linear_probe", "finetune", "finetune_top", "gradual", "pretrained + logreg"}


def method_name(extractor: str) -> str:
    return f"{extractor} + logreg"


# ------------------------------------------------------------------------------------------ pretraining
def source_config(params: Params) -> FitConfig:
    """The pipeline's training config with ``studies.transfer.source_overrides`` (the source model)."""
    return params.fit_config().with_overrides(params.studies.transfer.source_overrides)


def split_classes(data: Dataset, source: list[int]) -> list[int]:
    """The target classes (the others); refuses source classes the data does not have."""
    missing = [c for c in source if not 0 <= c < data.n_classes]
    if missing:
        raise UserError(f"studies.transfer.source_classes: {missing} not among this data set's classes "
                        f"(0..{data.n_classes - 1})")
    target = [c for c in range(data.n_classes) if c not in source]
    if len(target) < 2:
        raise UserError(f"studies.transfer.source_classes: leaves {len(target)} target class(es); the target "
                        f"task needs >= 2 of the {data.n_classes}")
    return target


def subset(data: Dataset, classes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``classes``, relabelled 0..len(classes)-1 in the given order."""
    rows = np.flatnonzero(np.isin(data.y, classes))
    remap = np.full(data.n_classes, -1)
    remap[classes] = np.arange(len(classes))
    return data.X[rows], remap[data.y[rows]]


def pretrain(params: Params, train: Dataset) -> tuple[FitResult, FitConfig, list[str]]:
    """Train the source model on the source classes of ``train`` (the pretrain stage saves it)."""
    cfg = params.studies.transfer
    split_classes(train, cfg.source_classes)
    config = source_config(params)
    X, y = subset(train, cfg.source_classes)
    result = fit(X, y, len(cfg.source_classes), config, derive_seed(params.seed, "transfer", "pretrain"),
                 device=params.compute.device)
    return result, config, [train.classes[c] for c in cfg.source_classes]


# ------------------------------------------------------------------------------------------------ study
def sample_rows(y: np.ndarray, n_classes: int, per_class: int | str, seed: int) -> np.ndarray:
    """``per_class`` rows of each class (``all``: every row), drawn without replacement, sorted."""
    rng = np.random.default_rng(seed)
    if per_class == "all":
        return np.arange(len(y))
    counts = np.bincount(y, minlength=n_classes)
    if counts.min() < per_class:
        raise UserError(f"studies.transfer.samples_per_class: {per_class} asked but a target class has only "
                        f"{int(counts.min())} training rows (use <= {int(counts.min())} or 'all')")
    return np.sort(np.concatenate([rng.choice(np.flatnonzero(y == k), per_class, replace=False)
                                   for k in range(n_classes)]))


def _mode_job(X, y, rows, X_test, y_test, n_classes, config, seed) -> float:
    import torch

    torch.set_num_threads(1)
    model = fit(X[rows], y[rows], n_classes, config, seed).model
    return float((predict_proba(model, X_test).argmax(1) == y_test).mean())


def _feature_job(X, y, rows, X_test, y_test, name, kwargs) -> float:
    import torch

    from dlrig.evaluate.features import make_feature_baseline

    torch.set_num_threads(1)
    model = make_feature_baseline(name, kwargs, 0).fit(X[rows], y[rows])
    return float((model.predict(X_test) == y_test).mean())


def _job(kind: str, *args: Any) -> float:
    return _mode_job(*args) if kind == "mode" else _feature_job(*args)


def _epochs(config: FitConfig, n_rows: int, min_steps: int) -> int:
    """Epochs so that the fit takes >= ``min_steps`` optimizer steps (fit's steps per epoch)."""
    batch = min(config.train.batch_size, n_rows)
    steps = max(1, n_rows // batch if n_rows % batch == 1 else math.ceil(n_rows / batch))
    return max(config.train.epochs, math.ceil(min_steps / steps))


def run(params: Params, train: Dataset, test: Dataset, checkpoint: str) -> dict[str, Any]:
    """The study as ``params.studies.transfer`` sets it up, from the pretrain stage's ``checkpoint``."""
    from dlrig.train.transfer import load_source, weights_sha256

    cfg: TransferStudyParams = params.studies.transfer
    target = split_classes(train, cfg.source_classes)
    source_model, ckpt = load_source(checkpoint)
    trained_on = (ckpt.get("extra") or {}).get("source_classes")
    if trained_on != list(cfg.source_classes):
        raise UserError(f"{checkpoint}: pretrained on classes {trained_on}, but studies.transfer."
                        f"source_classes is {list(cfg.source_classes)}; rerun "
                        "`dvc repro studies/dvc.yaml:pretrain`")
    base = source_config(params).with_overrides(
        {**cfg.target_overrides, "train.transfer.pretrained": str(checkpoint)})
    _check_fits(base, train.sample_shape, len(target))

    X, y = subset(train, target)
    X_test, y_test = subset(test, target)
    Xs_test, ys_test = subset(test, cfg.source_classes)
    source_acc = float((predict_proba(source_model, Xs_test).argmax(1) == ys_test).mean())
    K = len(target)
    methods = [*cfg.modes, *(method_name(e) for e in cfg.extractors)]
    feature_kwargs = {"pretrained": {"checkpoint": str(checkpoint)},
                      "pca": {"n_components": cfg.pca_components},
                      "hog": {"cell": cfg.hog_cell, "bins": cfg.hog_bins}}
    jobs, keys = [], []
    for size in cfg.samples_per_class:
        for s in range(cfg.seeds):
            rows = sample_rows(y, K, size, derive_seed(params.seed, "transfer", "rows", size, s))
            fit_seed = derive_seed(params.seed, "transfer", "fit", size, s)  # paired: one per (size, seed)
            epochs = _epochs(base, len(rows), cfg.min_steps)
            for mode in cfg.modes:
                config = base.with_overrides({"train.transfer.mode": mode, "train.epochs": epochs})
                keys.append((mode, size, s))
                jobs.append(("mode", X, y, rows, X_test, y_test, K, config, fit_seed))
            for e in cfg.extractors:
                keys.append((method_name(e), size, s))
                jobs.append(("features", X, y, rows, X_test, y_test, EXTRACTORS[e], feature_kwargs[e]))
    scores = dict(zip(keys, map_jobs(params.compute, _job, jobs), strict=True))

    counts = np.bincount(y, minlength=K)
    sizes = list(cfg.samples_per_class)
    per_class = [int(size) if size != "all" else int(counts.min()) for size in cfg.samples_per_class]
    curves = {m: [_band([scores[(m, size, s)] for s in range(cfg.seeds)]) for size in sizes] for m in methods}
    vs_scratch = {m: [_paired([scores[(m, size, s)] for s in range(cfg.seeds)],
                              [scores[("scratch", size, s)] for s in range(cfg.seeds)]) for size in sizes]
                  for m in methods if m != "scratch"}
    results: dict[str, Any] = {
        "source": {"classes": [train.classes[c] for c in cfg.source_classes], "checkpoint": str(checkpoint),
                   "sha256": weights_sha256(checkpoint), "test_accuracy": round(source_acc, 6),
                   "model": ckpt["config"]["model"]["name"]},
        "target": {"classes": [train.classes[c] for c in target], "n_train": int(len(y)),
                   "n_test": int(len(y_test))},
        "metric": "test accuracy (target classes)",
        "sizes": [str(s) for s in sizes],
        "per_class": per_class,
        "seeds": cfg.seeds,
        "methods": methods,
        "uses_checkpoint": [m for m in methods if m in USES_CHECKPOINT],
        "curves": curves,
        "vs_scratch": vs_scratch,
        "transfer": {k: v for k, v in base.train.transfer.model_dump().items() if k != "mode"},
        "margin": cfg.margin,
    }
    results["verdict"] = verdict(results)
    return results


def _check_fits(config: FitConfig, sample_shape: list[int], n_classes: int) -> None:
    """A checkpoint of another architecture or input: one line now, not one per job later."""
    import torch

    from dlrig.models import build_model
    from dlrig.train.transfer import apply_transfer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model(config.model, sample_shape, n_classes)
        apply_transfer(model, config.with_overrides({"train.transfer.mode": "finetune"}), n_classes)


def _r(v: float) -> float:
    return round(float(v), 6)


def _band(values: list[float]) -> dict[str, Any]:
    a = np.asarray(values, float)
    return {"mean": _r(a.mean()), "min": _r(a.min()), "max": _r(a.max()), "scores": [_r(v) for v in a]}


def _paired(a: list[float], b: list[float]) -> dict[str, Any]:
    """Mean of the per-seed differences a - b, a 95% t interval over seeds and their min-max."""
    from scipy import stats

    d = np.asarray(a, float) - np.asarray(b, float)
    mean = float(d.mean())
    if len(d) > 1 and d.std(ddof=1) > 0:
        half = float(stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d)))
    else:
        half = 0.0
    return {"diff": _r(mean), "ci_low": _r(mean - half), "ci_high": _r(mean + half),
            "min": _r(d.min()), "max": _r(d.max())}


def verdict(results: dict[str, Any]) -> str:
    """Where transfer stops paying, computed from the curves: the best method that uses the checkpoint
    against scratch at each size; scratch has caught up once it is within ``margin`` of it."""
    sizes, per_class, margin = results["sizes"], results["per_class"], float(results["margin"])
    users = [m for m in results["uses_checkpoint"] if m in results["vs_scratch"]]
    if not users:
        return "No method that uses the pretrained checkpoint was run: nothing to compare with scratch."

    def best(i: int) -> tuple[str, dict[str, Any]]:
        m = max(users, key=lambda u: results["vs_scratch"][u][i]["diff"])
        return m, results["vs_scratch"][m][i]

    def label(i: int) -> str:
        return f"{per_class[i]} per class" + (" (all)" if sizes[i] == "all" else "")

    def pts(d: dict[str, Any]) -> str:
        return (f"{100 * d['diff']:+.1f} points, 95% CI [{100 * d['ci_low']:+.1f}, {100 * d['ci_high']:+.1f}]"
                f" over {results['seeds']} seeds")

    m0, d0 = best(0)
    if d0["diff"] <= margin:
        return (f"Transfer did not pay at these settings: at {label(0)} the best method using the pretrained "
                f"body ({m0}) is {pts(d0)} against training from scratch (no gain beyond the "
                f"{100 * margin:g}-point margin).")
    caught = next((i for i in range(len(sizes)) if best(i)[1]["diff"] <= margin), None)
    head = f"Transfer pays with few labels: at {label(0)}, {m0} beats scratch by {pts(d0)}"
    if caught is None:
        mi, di = best(len(sizes) - 1)
        return (f"{head}; scratch does not catch up within the sizes tried (at {label(len(sizes) - 1)}, {mi} "
                f"still {pts(di)}).")
    mc, dc = best(caught)
    return (f"{head}; scratch catches up at {label(caught)} (the best transfer method, {mc}, is then "
            f"{pts(dc)}, within the {100 * margin:g}-point margin).")


def markdown(results: dict[str, Any]) -> str:
    sizes = results["per_class"]
    lines = ["# Transfer: pretrained on digits " + ", ".join(results["source"]["classes"])
             + ", learning " + ", ".join(results["target"]["classes"]), "",
             f"{results['metric']}, mean [min-max] over {results['seeds']} seeds", "",
             "| method | " + " | ".join(f"{n}/class" for n in sizes) + " |",
             "|---|" + "---|" * len(sizes)]
    for m in results["methods"]:
        cells = [f"{c['mean']:.3f} [{c['min']:.3f}-{c['max']:.3f}]" for c in results["curves"][m]]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + f"\n\n{results['verdict']}\n"
