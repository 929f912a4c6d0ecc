"""The learning-rate range test (Smith 2017; fastai ``lr_find``) beside the nested CV's chosen lr.

One exponential lr sweep per seed on the training split, with the default config of params.yaml (its
model, optimizer, loss and standardisation: :mod:`dlrig.train.lr_range`); the smoothed loss curves give
a band over seeds and each seed its ``valley`` and ``steepest`` suggestions. The verdict puts the median
valley and the search range around it beside the lr that nested CV chose (``reports/cv/summary.json`` of
the default pipeline, when it exists): does a one-minute heuristic land where the expensive search did?

``run(params, train, cv_summary)`` is the study; :func:`verdict` turns its numbers into the sentence.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dlrig.data.dataset import Dataset
from dlrig.params import Params
from dlrig.seeds import derive_seed
from dlrig.train.lr_range import RangeTest, lr_range_test, search_range, space_yaml

CV_COMMAND = "dvc repro train"


def _sig(x: float | None, digits: int = 6) -> float | None:
    return None if x is None else float(f"{x:.{digits - 1}e}")


def _spread(values: list[float | None]) -> dict[str, Any]:
    """Median (the lower middle value, so it is one seed's suggestion) and min-max of the seeds' values."""
    got = sorted(v for v in values if v is not None)
    if not got:
        return {"median": None, "low": None, "high": None, "n": 0}
    return {"median": got[(len(got) - 1) // 2], "low": got[0], "high": got[-1], "n": len(got)}


def band(runs: list[RangeTest], lrs: list[float]) -> list[dict[str, float]]:
    """Per step: min, median and max of the seeds' smoothed losses (over the seeds that reached it)."""
    rows = []
    for k, lr in enumerate(lrs):
        values = [r.smoothed[k] for r in runs if k < len(r.smoothed) and np.isfinite(r.smoothed[k])]
        if values:
            rows.append({"lr": _sig(lr), "min": _sig(min(values)), "median": _sig(float(np.median(values))),
                         "max": _sig(max(values)), "seeds": len(values)})
    return rows


def cv_choice(summary: dict[str, Any] | None, source: str, fixed_lr: float) -> dict[str, Any]:
    """What the main pipeline's nested CV chose for ``optim.lr`` (its final selection on all training
    rows), or why it cannot be said."""
    if summary is None:
        return {"source": source, "lr": None, "absent": f"{source} not found (run `{CV_COMMAND}`)"}
    final = summary.get("final") if isinstance(summary, dict) else None
    config = final.get("config") if isinstance(final, dict) else None
    if not isinstance(config, dict):
        return {"source": source, "lr": None, "absent": f"{source} has no final.config"}
    searched = (summary.get("space") or {}).get("optim.lr")
    lr = config.get("optim.lr")
    return {
        "source": source,
        "lr": float(lr) if lr is not None else float(fixed_lr),
        "searched": searched is not None,  # False: the CV held optim.lr at its params value
        "grid": (searched or {}).get("values"),
        "inner_score": final.get("inner_score"),
        "metric": summary.get("metric"),
        "other_keys": {k: v for k, v in config.items() if k != "optim.lr"},
    }


def verdict(valley: dict[str, Any], space: dict[str, Any] | None, cv: dict[str, Any]) -> str:
    """The sentence: the suggested lr (median valley, seeds' range) and where the CV's lr lies from it."""
    if valley.get("median") is None or space is None:
        return ("The range test is inconclusive at these settings: no seed's smoothed loss had a descending "
                "stretch to suggest an lr from (widen studies.lr_range.start_lr..end_lr or add steps).")
    said = (f"The range test suggests lr ≈ {valley['median']:.2g} (valley, median of {valley['n']} seeds; "
            f"seeds {valley['low']:.2g}–{valley['high']:.2g}; search range "
            f"{space['low']:g}–{space['high']:g})")
    lr = cv.get("lr")
    if lr is None:
        return f"{said}; the nested CV's choice is absent: {cv.get('absent', 'not given')}."
    how = "chose" if cv.get("searched", True) else "did not search optim.lr; it held"
    ratio = lr / valley["median"]
    where = ("inside the suggested range" if space["low"] <= lr <= space["high"]
             else f"{'above' if lr > space['high'] else 'below'} the suggested range")
    return f"{said}; nested CV {how} {lr:g} ({ratio:.2g}× the valley), {where}."


def run(params: Params, train: Dataset, cv_summary: dict[str, Any] | None = None,
        cv_source: str = "reports/cv/summary.json") -> dict[str, Any]:
    """The study as ``params.studies.lr_range`` sets it up, on the training split only."""
    cfg = params.studies.lr_range
    config = params.fit_config()
    runs = [
        lr_range_test(train.X, train.y, train.n_classes, config, derive_seed(params.seed, "lr_range", i),
                      start_lr=cfg.start_lr, end_lr=cfg.end_lr, steps=cfg.steps, beta=cfg.beta,
                      diverge=cfg.diverge, device=params.compute.device)
        for i in range(cfg.seeds)
    ]
    factor = (cfg.end_lr / cfg.start_lr) ** (1 / (cfg.steps - 1))
    lrs = [cfg.start_lr * factor**k for k in range(max(len(r.lrs) for r in runs))]
    valley = _spread([r.suggestions["valley"] for r in runs])
    steepest = _spread([r.suggestions["steepest"] for r in runs])
    minimum = _spread([r.suggestions["minimum"] for r in runs])
    space = search_range(valley["median"], minimum["median"])
    cv = cv_choice(cv_summary, cv_source, config.optim.lr)
    return {
        "settings": {**cfg.model_dump(), "factor": _sig(factor), "rows": int(len(train.y)),
                     "model": config.model.name, "optimizer": config.optim.name,
                     "batch_size": config.train.batch_size, "notes": runs[0].notes},
        "runs": [{"seed": r.seed, "steps": len(r.lrs), "stop_reason": r.stop_reason,
                  "suggestions": {k: _sig(v) for k, v in r.suggestions.items()},
                  "smoothed": [_sig(v) for v in r.smoothed]} for r in runs],
        "band": band(runs, lrs),
        "valley": valley,
        "steepest": steepest,
        "minimum": minimum,
        "space": space,
        "space_yaml": space_yaml(space) if space else None,
        "cv": cv,
        "verdict": verdict(valley, space, cv),
    }


__all__ = ["band", "cv_choice", "run", "verdict"]
