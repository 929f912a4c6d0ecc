"""The grokking study: modular arithmetic generalises long after it is memorised (Power et al. 2022).

A small network (an embedding per operand, the two concatenated, one ReLU hidden layer) is trained full
batch with AdamW on a ``train_fraction`` of the table ``a op b mod p``
(:func:`dlrig.data.sources.make_modular`).
Training accuracy reaches 100% within a few hundred steps; with weight decay the test accuracy stays near
chance for a while and then climbs to ~100%, while the total weight norm shrinks (Nanda et al. 2023: the
decay slowly trades the memorising solution for a smaller, general one). The control is the same run,
same split and same initial weights, without the decay: it memorises and stays there.

Every run is evaluated at log-spaced steps; per seed the study reports the first step at which training
accuracy reaches ``train_threshold`` and test accuracy ``test_threshold``. ``verdict`` turns those steps into
the sentence; it is a pure function, so a test can feed it numbers.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from dlrig.data.sources import make_modular
from dlrig.params import GrokkingStudyParams, Params
from dlrig.seeds import derive_seed
from dlrig.train import work

MIN_DELAY = 2.0  # test must cross at least this many times later than train to call it grokking


class EmbedMLP(nn.Module):
    """Embed a and b (one table), concatenate, one ReLU hidden layer, p logits."""

    def __init__(self, p: int, embed_dim: int, hidden: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(p, embed_dim)
        self.hidden = nn.Linear(2 * embed_dim, hidden)
        self.out = nn.Linear(hidden, p)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hidden(self.embed(tokens).flatten(1))))


def eval_steps(steps: int, evals: int) -> list[int]:
    """About ``evals`` log-spaced steps from 1 to ``steps`` (both included), without repeats."""
    return sorted({int(round(v)) for v in np.geomspace(1, steps, evals)} | {steps})


def first_crossing(steps: list[int], values: list[float], threshold: float) -> int | None:
    """The first evaluated step whose value is >= threshold (None: never)."""
    return next((s for s, v in zip(steps, values, strict=True) if v >= threshold), None)


def train_run(tokens: torch.Tensor, y: torch.Tensor, train_rows: np.ndarray, test_rows: np.ndarray,
              cfg: GrokkingStudyParams, weight_decay: float, seed: int) -> dict[str, list[float]]:
    """One full-batch AdamW run; train/test accuracy and the total weight norm at :func:`eval_steps`."""
    torch.manual_seed(seed)
    model = EmbedMLP(cfg.modular.p, cfg.embed_dim, cfg.hidden)
    # betas (0.9, 0.98) as in Power et al.; the decay is decoupled (AdamW), the knob this study turns
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=weight_decay, betas=(0.9, 0.98))
    tr, te = torch.as_tensor(train_rows), torch.as_tensor(test_rows)
    x_tr, y_tr = tokens[tr], y[tr]
    at = set(eval_steps(cfg.steps, cfg.evals))
    curve: dict[str, list[float]] = {"train": [], "test": [], "norm": []}
    for step in range(1, cfg.steps + 1):
        loss = nn.functional.cross_entropy(model(x_tr), y_tr)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step in at:
            with torch.no_grad():
                right = (model(tokens).argmax(1) == y).double()
                norm = math.sqrt(sum(float((p.double() ** 2).sum()) for p in model.parameters()))
            curve["train"].append(round(float(right[tr].mean()), 6))
            curve["test"].append(round(float(right[te].mean()), 6))
            curve["norm"].append(round(norm, 4))
    # the cost record: full batch, so one epoch per step (the periodic evaluations are not counted)
    work.add_fit(model, (2,), len(train_rows), cfg.steps, dtype=torch.long)
    return curve


def run(params: Params) -> dict[str, Any]:
    """The study as ``params.studies.grokking`` sets it up (its own data: nothing is read)."""
    return run_study(params.studies.grokking, seed=params.seed)


def run_study(cfg: GrokkingStudyParams, *, seed: int) -> dict[str, Any]:
    data = make_modular(cfg.modular)
    tokens = torch.as_tensor(data.X).long()  # the codes are exact integers in float32
    y = torch.as_tensor(data.y)
    n = len(y)
    n_train = max(1, min(n - 1, int(round(cfg.train_fraction * n))))
    steps = eval_steps(cfg.steps, cfg.evals)
    settings = {"decay": cfg.weight_decay, "control": cfg.control_weight_decay}
    curves: dict[str, dict[str, list[list[float]]]] = {k: {"train": [], "test": [], "norm": []}
                                                       for k in settings}
    runs: list[dict[str, Any]] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # same bytes whatever the machine: one thread, one summation order
    try:
        for k in range(cfg.seeds):
            s = derive_seed(seed, "grokking", k)
            perm = np.random.default_rng(s).permutation(n)
            train_rows, test_rows = np.sort(perm[:n_train]), np.sort(perm[n_train:])
            for name, wd in settings.items():
                # paired: the decay run and its control share the split and the initial weights
                curve = train_run(tokens, y, train_rows, test_rows, cfg, wd, s)
                for key in curve:
                    curves[name][key].append(curve[key])
                runs.append({
                    "setting": name, "seed": k, "weight_decay": wd,
                    "train_step": first_crossing(steps, curve["train"], cfg.train_threshold),
                    "test_step": first_crossing(steps, curve["test"], cfg.test_threshold),
                    "final_train": curve["train"][-1], "final_test": curve["test"][-1],
                    "final_norm": curve["norm"][-1],
                })
    finally:
        torch.set_num_threads(threads)

    decay = [(r["train_step"], r["test_step"]) for r in runs if r["setting"] == "decay"]
    control = [(r["train_step"], r["test_step"]) for r in runs if r["setting"] == "control"]
    return {
        "setup": {
            "p": cfg.modular.p, "op": cfg.modular.op, "rows": n, "train_rows": n_train,
            "train_fraction": cfg.train_fraction,
            "model": f"embed {cfg.embed_dim} x 2 -> {cfg.hidden} ReLU -> p",
            "optimizer": "AdamW, full batch", "lr": cfg.lr, "weight_decay": cfg.weight_decay,
            "control_weight_decay": cfg.control_weight_decay, "steps": cfg.steps, "seeds": cfg.seeds,
            "train_threshold": cfg.train_threshold, "test_threshold": cfg.test_threshold,
            "chance": round(1.0 / cfg.modular.p, 6),
        },
        "steps": steps,
        "curves": curves,
        "runs": runs,
        "summary": summarise(decay, control),
        "verdict": verdict(decay, control, cfg.steps, cfg.train_threshold, cfg.test_threshold),
    }


def _delays(pairs: list[tuple[int | None, int | None]]) -> list[float | None]:
    return [None if a is None or b is None else b / a for a, b in pairs]


def summarise(decay: list[tuple[int | None, int | None]],
              control: list[tuple[int | None, int | None]]) -> dict[str, Any]:
    """Per setting: how many seeds crossed each threshold, and the test/train step ratio's median."""
    out = {}
    for name, pairs in (("decay", decay), ("control", control)):
        delays = [d for d in _delays(pairs) if d is not None]
        out[name] = {
            "seeds": len(pairs),
            "train_crossed": sum(a is not None for a, _ in pairs),
            "test_crossed": sum(b is not None for _, b in pairs),
            "median_delay": round(float(np.median(delays)), 4) if delays else None,
        }
    return out


def verdict(decay: list[tuple[int | None, int | None]], control: list[tuple[int | None, int | None]],
            steps: int, train_threshold: float = 0.99, test_threshold: float = 0.95) -> str:
    """The sentence from (train step, test step) per seed for the decay runs and the controls.

    Reproduced when every decay seed crosses both thresholds, test at least ``MIN_DELAY`` times later than
    train, and no control seed reaches the test threshold within ``steps``.
    """
    tr, te = f"{train_threshold:.0%}", f"{test_threshold:.0%}"
    delays = _delays(decay)
    problems = []
    if not decay:
        return "not reproduced: no runs"
    missing_train = sum(a is None for a, _ in decay)
    missing_test = sum(b is None for _, b in decay)
    if missing_train:
        problems.append(f"with weight decay, training accuracy did not reach {tr} for {missing_train} of "
                        f"{len(decay)} seeds within {steps} steps")
    if missing_test:
        problems.append(f"with weight decay, test accuracy did not reach {te} for {missing_test} of "
                        f"{len(decay)} seeds within {steps} steps")
    known = [d for d in delays if d is not None]
    if known and min(known) < MIN_DELAY:
        problems.append(f"test accuracy crossed {te} only {min(known):.1f}x later than training accuracy "
                        f"crossed {tr} for some seed (grokking needs >= {MIN_DELAY:g}x)")
    control_test = [b for _, b in control if b is not None]
    if control_test:
        problems.append(f"without weight decay test accuracy also reached {te} for {len(control_test)} of "
                        f"{len(control)} seeds (first at step {min(control_test)})")
    if problems:
        return "not reproduced at these settings: " + "; ".join(problems) + "."
    median = float(np.median(known))
    return (f"with weight decay, test accuracy crossed {te} a median {median:.1f}x later than training "
            f"accuracy crossed {tr}, for every one of {len(decay)} seeds; without it, not within {steps} "
            "steps: grokking reproduced.")
