"""Model-wise double descent (Belkin et al. 2019; Nakkiran et al. 2019) on a noisy digits subset.

A one-hidden-layer MLP of every width in ``widths`` is trained on a stratified subset of the training
split whose labels carry symmetric noise, to (near) zero training error: no early stopping, no dropout, no
weight decay, a constant learning rate, every model the same number of epochs. Test error is measured on
the clean test split. The classical picture (error falls, then rises as the model starts to fit the noise)
meets the modern one (past the width that just interpolates, error falls again); the peak sits where the
model is *just* able to memorise every noisy label. The same widths trained on the clean labels are the
control: without noise there is little to memorise and the peak should shrink or vanish.

Each seed draws its own subset, its own flips and its own initial weights (all derived from the params
seed); noisy and control runs of one seed share subset and initial weights, so they differ only in the
labels. All models of one width train as one stack (:func:`dlrig.train.batched.fit_many`, whose
``batch_key`` routes anything it does not implement to ``fit()``).

Optionally (``epoch_width``) the same runs at one width are traced epoch by epoch with ``fit()`` and a
callback that scores the model every ``eval_every`` epochs: epoch-wise double descent (Nakkiran et al.)
would show as test error rising while the noisy labels are memorised and falling again later.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split

from dlrig.data.dataset import Dataset
from dlrig.errors import UserError
from dlrig.labels.noise import inject_noise
from dlrig.models import build_model, count_parameters
from dlrig.params import DoubleDescentStudyParams, FitConfig, Params
from dlrig.seeds import derive_seed
from dlrig.train.batched import FitJob, fit_many
from dlrig.train.callbacks import Callback, FitState
from dlrig.train.fit import fit
from dlrig.train.predict import predict_proba

CURVES = ("noisy", "control")
NEAR = 1.0  # |log2(peak width / threshold width)| within this: the peak is "next to" the threshold


def config(cfg: DoubleDescentStudyParams, width: int, n_rows: int) -> FitConfig:
    """The training config of one width: everything that would regularise or stop early is off."""
    return FitConfig().with_overrides({
        "model.name": "mlp", "model.depth": 1, "model.hidden": width, "model.dropout": 0.0,
        "optim.name": cfg.optimizer, "optim.lr": cfg.lr, "optim.weight_decay": 0.0,
        "schedule.name": "constant", "train.early_stopping": None, "train.epochs": cfg.epochs,
        "train.batch_size": cfg.batch_size or n_rows,
    })


def check(cfg: DoubleDescentStudyParams, train: Dataset) -> None:
    """Refuse what the data cannot give, in one line, before any training."""
    K, n = train.n_classes, len(train.y)
    if not K <= cfg.subset <= n - K:
        raise UserError(f"studies.double_descent.subset: {cfg.subset} rows asked of a training split of {n} "
                        f"(allowed: {K}..{n - K}, so every class is drawn and some rows are left out)")


def run(params: Params, train: Dataset, test: Dataset) -> dict[str, Any]:
    """The study as ``params.studies.double_descent`` sets it up; scored on the clean ``test``."""
    return run_study(params.studies.double_descent, train, test, seed=params.seed)


def run_study(cfg: DoubleDescentStudyParams, train: Dataset, test: Dataset, *, seed: int) -> dict[str, Any]:
    check(cfg, train)
    K, n = train.n_classes, cfg.subset
    # One block of rows per (seed, curve): the stack trains every model of a width at once, each on its
    # own rows and labels.
    blocks_X, blocks_y, init_seeds, flipped = [], [], [], []
    for s in range(cfg.seeds):
        rows, _ = train_test_split(np.arange(len(train.y)), train_size=n, stratify=train.y,
                                   random_state=derive_seed(seed, "double_descent", "subset", s))
        y_clean = train.y[rows]
        y_noisy, flips = (inject_noise(y_clean, K, "symmetric", cfg.noise,
                                       derive_seed(seed, "double_descent", "noise", s))
                          if cfg.noise > 0 else (y_clean, np.zeros(n, bool)))
        flipped.append(float(flips.mean()))
        for labels in (y_noisy, y_clean):
            blocks_X.append(train.X[rows])
            blocks_y.append(labels)
            init_seeds.append(derive_seed(seed, "double_descent", "init", s))
    X, y = np.concatenate(blocks_X), np.concatenate(blocks_y)
    block_rows = [np.arange(b * n, (b + 1) * n) for b in range(len(blocks_X))]

    curves: dict[str, dict[str, list[list[float]]]] = {
        c: {"train_error": [], "test_error": []} for c in CURVES}
    n_params = []
    for width in cfg.widths:
        fit_cfg = config(cfg, width, n)
        n_params.append(count_parameters(build_model(fit_cfg.model, train.sample_shape, K)))
        jobs = [FitJob(rows, fit_cfg, s) for rows, s in zip(block_rows, init_seeds, strict=True)]
        results = fit_many(X, y, K, jobs)
        for b, result in enumerate(results):
            curve = curves[CURVES[b % 2]]
            rows = block_rows[b]
            train_err = float((predict_proba(result.model, X[rows]).argmax(1) != y[rows]).mean())
            test_err = float((predict_proba(result.model, test.X).argmax(1) != test.y).mean())
            if b < 2:
                curve["train_error"].append([])
                curve["test_error"].append([])
            curve["train_error"][-1].append(train_err)
            curve["test_error"][-1].append(test_err)

    epochwise = None
    if cfg.epoch_width is not None:
        fit_cfg = config(cfg, cfg.epoch_width, n)
        traces = [trace(X[rows], y[rows], K, fit_cfg, s, test, cfg.eval_every)
                  for rows, s in zip(block_rows, init_seeds, strict=True)]
        epochwise = {"width": cfg.epoch_width, "epochs": traces[0]["epoch"],
                     **{c: {k: band([list(v) for v in zip(*(t[k] for t in traces[i::2]), strict=True)])
                            for k in ("train_error", "test_error")} for i, c in enumerate(CURVES)}}

    summary = {c: {k: band(v) for k, v in curves[c].items()} for c in CURVES}
    threshold = {c: interpolation_width(cfg.widths, summary[c]["train_error"]["mean"],
                                        cfg.interpolation_error) for c in CURVES}
    # A one-hidden-layer MLP has (d + 1) h + (h + 1) K parameters: n K of them at h = (n K - K) / (d + 1 + K).
    d = int(np.prod(train.sample_shape))
    nk_width = (n * K - K) / (d + 1 + K)
    bumps = {c: find_peak(cfg.widths, summary[c]["test_error"]) for c in CURVES}
    return {
        "settings": {"subset": n, "noise": cfg.noise, "realised_noise": [round(f, 6) for f in flipped],
                     "epochs": cfg.epochs, "lr": cfg.lr, "optimizer": cfg.optimizer,
                     "batch_size": cfg.batch_size or n, "seeds": cfg.seeds, "n_classes": K,
                     "n_test": int(len(test.y)), "interpolation_error": cfg.interpolation_error},
        "widths": list(cfg.widths),
        "params": n_params,
        "curves": summary,
        "interpolation_width": threshold,
        "nk_params": n * K,
        "nk_width": round(nk_width, 3),
        "peaks": bumps,
        "epochwise": epochwise,
        "verdict": verdict(cfg.widths, summary["noisy"]["test_error"], summary["control"]["test_error"],
                           threshold["noisy"], nk_width, cfg.noise, epochwise),
    }


class _Trace(Callback):
    """Every ``every`` epochs (and at the first and last), the model's error on its own training rows and
    on the clean test split."""

    def __init__(self, X, y, test: Dataset, every: int, last: int):
        self.X, self.y, self.test, self.every, self.last = X, y, test, every, last
        self.rows: dict[str, list[float]] = {"epoch": [], "train_error": [], "test_error": []}

    def on_epoch_end(self, state: FitState, record: dict[str, float]) -> None:
        if state.epoch % self.every and state.epoch not in (1, self.last):
            return
        model = state.model.eval()
        self.rows["epoch"].append(state.epoch)
        self.rows["train_error"].append(float((predict_proba(model, self.X).argmax(1) != self.y).mean()))
        self.rows["test_error"].append(
            float((predict_proba(model, self.test.X).argmax(1) != self.test.y).mean()))
        model.train()


def trace(X: np.ndarray, y: np.ndarray, K: int, config: FitConfig, seed: int, test: Dataset,
          every: int) -> dict[str, list[float]]:
    """One run of ``fit()`` with its errors traced per epoch (see :class:`_Trace`)."""
    tracer = _Trace(X, y, test, every, config.train.epochs)
    fit(X, y, K, config, seed, callbacks=[tracer])
    return tracer.rows


def band(per_width: list[list[float]]) -> dict[str, list[float]]:
    """Mean and min-max over seeds, per width (rounded: the JSON is compared byte for byte)."""
    a = np.asarray(per_width, dtype=float)
    return {"mean": [round(float(v), 6) for v in a.mean(1)], "min": [round(float(v), 6) for v in a.min(1)],
            "max": [round(float(v), 6) for v in a.max(1)]}


def interpolation_width(widths: list[int], train_error: list[float], below: float) -> int | None:
    """The smallest width whose mean training error is <= ``below`` (None: no width got there)."""
    return next((w for w, e in zip(widths, train_error, strict=True) if e <= below), None)


def find_peak(widths: list[int], test: dict[str, list[float]]) -> dict[str, Any] | None:
    """The strongest interior bump of the mean test error: the width maximising min(rise from the best
    smaller width, fall to the best larger width). ``clear`` when the peak's seed band lies above the
    bands of both of those dips (min over seeds at the peak > max over seeds at each dip)."""
    mean, lo, hi = test["mean"], test["min"], test["max"]
    best = None
    for i in range(1, len(widths) - 1):
        before = int(np.argmin(mean[:i]))
        after = i + 1 + int(np.argmin(mean[i + 1:]))
        height = min(mean[i] - mean[before], mean[i] - mean[after])
        if height > 0 and (best is None or height > best["height"]):
            best = {"width": widths[i], "error": mean[i], "height": round(height, 6),
                    "before_width": widths[before], "before_error": mean[before],
                    "after_width": widths[after], "after_error": mean[after],
                    "clear": bool(lo[i] > hi[before] and lo[i] > hi[after])}
    return best


def epoch_sentence(epochwise: dict[str, Any]) -> str:
    """What the per-epoch trace of the noisy runs shows: a clear second descent, or where the test error
    was lowest and where it ended."""
    epochs, test = epochwise["epochs"], epochwise["noisy"]["test_error"]
    width = epochwise["width"]
    peak = find_peak(epochs, test)
    if peak is not None and peak["clear"]:
        return (f" Epoch-wise at width {width}: test error falls to {peak['before_error']:.1%} (epoch "
                f"{peak['before_width']}), peaks at {peak['error']:.1%} (epoch {peak['width']}) and falls "
                f"again to {peak['after_error']:.1%} (epoch {peak['after_width']}): epoch-wise double "
                "descent too.")
    best = int(np.argmin(test["mean"]))
    if test["min"][-1] > test["max"][best]:
        return (f" Epoch-wise at width {width}: test error is lowest at epoch {epochs[best]} "
                f"({test['mean'][best]:.1%}) and rises to {test['mean'][-1]:.1%} by epoch {epochs[-1]} as "
                "the noisy labels are memorised, with no second descent within these epochs.")
    return (f" Epoch-wise at width {width}: no clear rise or second descent (test error "
            f"{test['mean'][best]:.1%} at best, {test['mean'][-1]:.1%} at epoch {epochs[-1]}).")


def verdict(widths: list[int], noisy: dict[str, list[float]], control: dict[str, list[float]],
            threshold: int | None, nk_width: float, noise: float,
            epochwise: dict[str, Any] | None = None) -> str:
    """The sentence the numbers support (test error curves as :func:`band` gives them)."""
    peak = find_peak(widths, noisy)
    last = f"{noisy['mean'][-1]:.1%} at width {widths[-1]}"
    where = "no width reached the interpolation threshold (train longer)" if threshold is None else (
        f"the interpolation threshold is width {threshold}")
    if peak is not None and peak["clear"]:
        near = threshold is not None and abs(math.log2(peak["width"] / threshold)) <= NEAR
        relation = (f"next to the interpolation threshold (width {threshold})" if near else
                    f"not next to the interpolation threshold ({where})")
        also = "" if peak["after_width"] == widths[-1] else f" ({last})"
        head = (f"Double descent reproduced: with {noise:.0%} label noise, test error falls to "
                f"{peak['before_error']:.1%} at width {peak['before_width']}, peaks at {peak['error']:.1%} "
                f"at width {peak['width']}, {relation}, and falls again to {peak['after_error']:.1%} at "
                f"width {peak['after_width']}{also}; the seeds' min-max band at the peak clears both dips'. "
                f"Parameters = n x K is at width {nk_width:.0f}.")
    else:
        what = ("test error never rises between two lower points" if peak is None else
                f"its largest bump ({peak['error']:.1%} at width {peak['width']}, vs "
                f"{peak['before_error']:.1%} at width {peak['before_width']} and {peak['after_error']:.1%} "
                f"at width {peak['after_width']}) lies within the seeds' min-max bands")
        head = (f"Double descent not reproduced at these settings: with {noise:.0%} label noise {what}; "
                f"{where}; {last}.")
    cpeak = find_peak(widths, control)
    if cpeak is not None and cpeak["clear"]:
        tail = (f" The noise-free control peaks too ({cpeak['error']:.1%} at width {cpeak['width']} vs "
                f"{cpeak['before_error']:.1%} at width {cpeak['before_width']}).")
    else:
        tail = (f" The noise-free control shows no clear peak (test error {control['mean'][0]:.1%} at "
                f"width {widths[0]}, {min(control['mean']):.1%} at best, {control['mean'][-1]:.1%} at width "
                f"{widths[-1]}).")
    return head + tail + (epoch_sentence(epochwise) if epochwise else "")
