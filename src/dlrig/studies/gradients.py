"""The gradients study: vanishing and exploding gradients in deep narrow MLPs, and what remedies them.

Why: backpropagation multiplies one Jacobian per layer. A sigmoid's slope is at most sigma'(0) = 0.25, so
with weights that do not make up for it the gradient reaching the first layer shrinks geometrically with
depth (L sigmoid units in a chain at z = 0 with unit weights pass back exactly 0.25^L); N(0, 1) weights
make it grow instead. Xavier/Kaiming scale the weights so one layer's Jacobian keeps the norm (for
tanh/relu respectively); normalisation layers, residual connections and (against explosion) gradient
clipping are the other remedies.

Measured, not derived: every setting (depth x activation x init, on the digits training split) is trained
with :func:`dlrig.train.fit` for ``steps`` steps; a :class:`dlrig.train.callbacks.GradientNorms` callback
records each Linear weight's gradient norm at step 1 (initialisation) and at the last step. The headline
number is the ratio of the first layer's gradient norm to the last (output) layer's, per seed.
``verdict`` turns the ratios into the sentence; it is pure, so a test can feed it numbers.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from dlrig.data.dataset import Dataset
from dlrig.params import FitConfig, GradientsStudyParams, Params
from dlrig.seeds import derive_seed
from dlrig.train.callbacks import GradientNorms

VANISHED = 1e-6  # sigmoid, depth 30, default init: the first layer gets less than this share of the last's
STABLE = (1e-2, 1e2)  # kaiming + relu: within two orders of magnitude at every depth
LIFTS = 100.0  # a remedy "lifts" the ratio when its median is at least this many times the baseline's

REMEDIES: dict[str, str] = {
    "batch_norm": "batch norm",
    "layer_norm": "layer norm",
    "residual": "residual connections",
    "grad_clip": "gradient clipping",
}


def _config(cfg: GradientsStudyParams, depth: int, activation: str, init: str, remedy: str | None,
            epochs: int) -> FitConfig:
    """The fit of one setting: a plain narrow MLP (no dropout, no norm), Adam at a constant lr."""
    overrides: dict[str, Any] = {
        "model.hidden": cfg.width, "model.depth": depth, "model.activation": activation, "model.init": init,
        "model.dropout": 0.0, "model.norm": "none", "model.residual": False,
        "optim.name": "adam", "optim.lr": cfg.lr, "optim.weight_decay": 0.0,
        "schedule.name": "constant", "train.epochs": epochs, "train.batch_size": cfg.batch_size,
        "train.early_stopping": None, "train.grad_clip": None,
    }
    if remedy == "batch_norm":
        overrides["model.norm"] = "batch"
    elif remedy == "layer_norm":
        overrides["model.norm"] = "layer"
    elif remedy == "residual":
        overrides["model.residual"] = True
    elif remedy == "grad_clip":
        overrides["train.grad_clip"] = cfg.grad_clip
    return FitConfig().with_overrides(overrides)


def _clean(v: float) -> float | None:
    return float(f"{v:.6g}") if math.isfinite(v) else None


def ratio(norms: list[float] | None) -> float | None:
    """First layer's gradient norm over the last's; None when either is missing or not finite, or 0/0."""
    if not norms:
        return None
    first, last = norms[0], norms[-1]
    if not (math.isfinite(first) and math.isfinite(last)) or last == 0:
        return None
    return first / last


def band(values: list[float | None]) -> dict[str, float | None]:
    """Median and min-max over seeds (None when a seed gave no finite ratio: it is counted in ``missing``)."""
    ok = [v for v in values if v is not None]
    if not ok:
        return {"median": None, "min": None, "max": None, "missing": len(values)}
    return {"median": _clean(float(np.median(ok))), "min": _clean(min(ok)), "max": _clean(max(ok)),
            "missing": len(values) - len(ok)}


def measure(train: Dataset, test: Dataset, config: FitConfig, steps: int, seed: int) -> dict[str, Any]:
    """One fit: gradient norms per layer at step 1 and at step ``steps``, and the test accuracy after."""
    from dlrig.train import fit

    probe = GradientNorms(at_steps=[1, steps], stop_after=steps)
    result = fit(train.X, train.y, train.n_classes, config, seed, callbacks=[probe])
    with torch.no_grad():
        pred = result.model(torch.as_tensor(test.X)).argmax(1).numpy()
    return {
        "init": [_clean(v) for v in probe.norms.get(1, [])],
        "trained": [_clean(v) for v in probe.norms.get(steps, [])],
        "test_accuracy": round(float((pred == test.y).mean()), 6),
        "stop_reason": result.info.get("stop_reason"),
    }


def _setting(train: Dataset, test: Dataset, cfg: GradientsStudyParams, seed: int, depth: int,
             activation: str, init: str, remedy: str | None, epochs: int) -> dict[str, Any]:
    config = _config(cfg, depth, activation, init, remedy, epochs)
    # the same seeds for a remedy as for its baseline: the same initial Linear weights and batch order
    seeds = [derive_seed(seed, "gradients", depth, activation, init, k) for k in range(cfg.seeds)]
    runs = [measure(train, test, config, cfg.steps, s) for s in seeds]
    median_norms = {
        when: [_clean(float(np.median([r[when][i] if r[when][i] is not None else math.nan for r in runs])))
               for i in range(len(runs[0][when]))] if all(len(r[when]) == len(runs[0][when]) for r in runs)
        else []
        for when in ("init", "trained")
    }
    ratios = {when: [ratio([math.nan if v is None else v for v in r[when]]) for r in runs]
              for when in ("init", "trained")}
    return {
        "depth": depth, "activation": activation, "init": init, "remedy": remedy,
        "norms": median_norms,  # median over seeds, per Linear layer, input layer first
        "ratio_seeds": {k: [None if v is None else _clean(v) for v in vs] for k, vs in ratios.items()},
        "ratio": {k: band(vs) for k, vs in ratios.items()},
        "test_accuracy": band([r["test_accuracy"] for r in runs]),
        "stopped": sorted({r["stop_reason"] for r in runs if r["stop_reason"]
                           and not r["stop_reason"].startswith("step budget")}),
    }


def run(params: Params, train: Dataset, test: Dataset) -> dict[str, Any]:
    """The study as ``params.studies.gradients`` sets it up (its own fit settings: the model/optim/train
    sections of params.yaml are not used, so the comparison is the same whatever they say)."""
    return run_study(params.studies.gradients, train, test, seed=params.seed)


def run_study(cfg: GradientsStudyParams, train: Dataset, test: Dataset, *, seed: int) -> dict[str, Any]:
    steps_per_epoch = math.ceil(len(train.y) / min(cfg.batch_size, len(train.y)))
    epochs = math.ceil(cfg.steps / max(1, steps_per_epoch - 1)) + 1  # enough; GradientNorms stops at steps
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # same bytes whatever the machine: one thread, one summation order
    try:
        grid = [_setting(train, test, cfg, seed, d, a, i, None, epochs)
                for a in cfg.activations for i in cfg.inits for d in cfg.depths]
        base = next((g for g in grid if (g["depth"], g["activation"], g["init"])
                     == (cfg.remedy_depth, cfg.remedy_activation, "default")), None)
        if base is None and cfg.remedies:
            base = _setting(train, test, cfg, seed, cfg.remedy_depth, cfg.remedy_activation, "default", None,
                            epochs)
        remedies = [_setting(train, test, cfg, seed, cfg.remedy_depth, cfg.remedy_activation, "default", r,
                             epochs) for r in cfg.remedies]
    finally:
        torch.set_num_threads(threads)

    def seeds_of(depth: int, activation: str, init: str) -> list[float | None] | None:
        found = [g for g in grid if (g["depth"], g["activation"], g["init"]) == (depth, activation, init)]
        return found[0]["ratio_seeds"]["init"] if found else None

    kaiming_relu = {d: seeds_of(d, "relu", "kaiming_normal") for d in cfg.depths}
    return {
        "setup": {
            "data": f"{train.source}: {len(train.y)} training rows, {len(test.y)} test rows",
            "width": cfg.width, "steps": cfg.steps, "batch_size": cfg.batch_size,
            "optimizer": f"adam, lr {cfg.lr:g}, constant", "seeds": cfg.seeds,
            "ratio": "first Linear's weight-gradient norm / last (output) Linear's; raw, before clipping",
            "remedy_setting": {"depth": cfg.remedy_depth, "activation": cfg.remedy_activation,
                               "init": "default"},
            "grad_clip": cfg.grad_clip,
        },
        "grid": grid,
        "baseline": base,
        "remedies": remedies,
        "verdict": verdict(
            seeds_of(30, "sigmoid", "default"),
            {d: v for d, v in kaiming_relu.items() if v is not None},
            None if base is None else base["ratio_seeds"]["init"],
            {r["remedy"]: r["ratio_seeds"]["init"] for r in remedies},
        ),
    }


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1e}"


def verdict(sigmoid30: list[float | None] | None, kaiming_relu: dict[int, list[float | None]],
            baseline: list[float | None] | None, remedies: dict[str, list[float | None]]) -> str:
    """The sentence from first/last gradient-norm ratios at initialisation, one per seed.

    ``sigmoid30``: sigmoid, depth 30, default init (None: not in the grid); ``kaiming_relu``: kaiming
    normal + relu per depth; ``baseline``/``remedies``: the remedy setting without and with each remedy.
    Reproduced when every sigmoid-30 seed is below ``VANISHED`` and every kaiming + relu seed at every
    depth lies within ``STABLE``.
    """
    parts, ok = [], True
    if sigmoid30 is None:
        ok = False
        parts.append("sigmoid at depth 30 with default init is not in the grid")
    else:
        b = band(sigmoid30)
        vanished = b["missing"] == 0 and b["max"] is not None and b["max"] < VANISHED
        ok &= vanished
        parts.append(f"sigmoid at depth 30 with default init has a first/last gradient-norm ratio of "
                     f"{_fmt(b['median'])} (seeds {_fmt(b['min'])}..{_fmt(b['max'])}), "
                     + ("" if vanished else "not ") + f"below {VANISHED:g} for every seed")
    if not kaiming_relu:
        ok = False
        parts.append("kaiming + relu is not in the grid")
    else:
        values = [v for vs in kaiming_relu.values() for v in vs]
        finite = [v for v in values if v is not None]
        lo, hi = STABLE
        stable = len(finite) == len(values) and all(lo <= v <= hi for v in finite)
        ok &= stable
        span = f"{_fmt(min(finite))}..{_fmt(max(finite))}" if finite else "n/a"
        depths = ", ".join(str(d) for d in sorted(kaiming_relu))
        parts.append(f"kaiming + relu {'stays' if stable else 'does not stay'} within [{lo:g}, {hi:g}] at "
                     f"depths {depths} (ratios {span})")
    head = "Vanishing gradients reproduced" if ok else "Not reproduced at these settings"
    sentence = f"{head}: " + "; ".join(parts) + "."
    if remedies and baseline is not None:
        base = band(baseline)["median"]
        said = []
        for name, values in remedies.items():
            med = band(values)["median"]
            label = REMEDIES.get(name, name)
            if med is None or base is None:
                said.append(f"{label}: n/a")
            elif base > 0 and med >= LIFTS * base:
                lo, hi = STABLE
                where = (f", within [{lo:g}, {hi:g}]" if lo <= med <= hi
                         else f", still below {VANISHED:g}" if med < VANISHED else "")
                said.append(f"{label} lifts it to {_fmt(med)} ({med / base:.0e}x{where})")
            else:
                factor = f"{med / base:.2g}x" if base > 0 else "n/a"
                said.append(f"{label} does not lift it ({_fmt(med)}, {factor})")
        sentence += f" Remedies at the same setting (median at initialisation, baseline {_fmt(base)}): " + \
            "; ".join(said) + "."
    return sentence
