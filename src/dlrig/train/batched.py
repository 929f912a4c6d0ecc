"""Many small fits at once: the models of one shape trained as ONE stacked model (``torch.baddbmm``).

Nested cross-validation trains folds x configs small models; :func:`dlrig.train.fit` trains one at a time
and spends most of each step in Python and dispatch overhead, not arithmetic. :func:`fit_many` stacks the
weights of every model that shares an architecture (``weights[M, in, out]``), runs each step for all of
them in one batched forward/backward, and updates them with a hand-written optimizer that is vectorised
over models (each with its own lr, weight decay, betas, clipping, schedule, epochs and early stopping).

``fit()`` stays the reference; each model here follows it step for step:

- the same rows: early-stopping split by ``fit.early_stopping_split`` and scaler by ``fit_standardizer``
  on the job's own fit rows only (no model sees another model's rows, or its own validation rows);
- the same initial weights (``build_model`` under ``torch.manual_seed(seed)``, then stacked), the same
  batch order (a ``torch.Generator`` per model seeded like fit's), the same last-batch rule, the same
  per-batch schedule (``lr_factor`` / torch's OneCycleLR formula), the same SGD/Adam/AdamW arithmetic as
  torch's single-tensor (CPU) optimizers, the same clipping, L1, label smoothing, early stopping with
  best-state restore, divergence and pruning rules (``on_epoch`` returning False);
- a model with no batch at a step (fewer fit rows -> fewer steps per epoch) is not updated; models of a
  group with different row counts get padded batches whose padding is masked out of the loss.

With dropout 0 the histories and predictions agree with ``fit()`` to float32 rounding (tests/train/
test_batched.py). Dropout masks come from one generator per group, not fit's global RNG: statistically
the same training, not the same numbers.

Jobs whose config cannot be batched (:func:`batch_key` is None: CNNs, optimizers other than sgd/adam/adamw,
any training key this module does not know) are trained by ``fit()`` one by one, with the same result type.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np
import torch
from torch import nn

from dlrig.models import Standardize, build_model
from dlrig.params import FitConfig
from dlrig.train.fit import FitResult, early_stopping_split, fit, fit_standardizer, resolve_device
from dlrig.train.optim import lr_factor

# Called after every epoch of every model with (position of its job in ``jobs``, the epoch record);
# returning False stops that model (as fit's on_epoch does).
ManyEpochCallback = Callable[[int, dict[str, float]], bool | None]


@dataclass
class FitJob:
    """One model to train: its rows of X, its config and its seed.

    ``train_index`` are rows of the X given to :func:`fit_many`; the result is the one of
    ``fit(X[train_index], y[train_index], n_classes, config, seed)``, except that the result's
    ``train_index``/``val_index`` are mapped back to rows of X (fit returns positions inside the X it got).
    """

    train_index: np.ndarray  # rows of X this model trains on; early stopping is carved from these
    config: FitConfig
    seed: int


# What models of one stack must share (the stacked shapes and the code path) and what may differ
# (per-model tensors). Keys in neither list must keep their default, else the job falls back to fit().
_SHARED = {
    "model": ("name", "hidden", "depth", "activation", "norm"),
    "optim": ("name", "nesterov"),
    "schedule": ("name",),
    "train": ("batch_size", "standardize"),
}
_PER_MODEL = {
    "model": ("dropout", "init"),  # init only sets the starting weights, built per model
    "optim": ("lr", "weight_decay", "l1", "momentum", "beta1", "beta2", "eps"),
    "schedule": ("warmup_epochs", "step_size", "gamma", "min_lr_ratio"),
    "train": ("epochs", "grad_clip", "label_smoothing", "early_stopping"),
}
_NO_EFFECT = {"model": ("channels", "kernel_size"), "optim": ("alpha", "rho")}  # unused by mlp + sgd/adam(w)
_OPTIMIZERS = ("sgd", "adam", "adamw")
_FUSED_ADAM = hasattr(torch, "_fused_adam_")  # else the vectorised update below (same math)
_ACTIVATIONS = (nn.ReLU, nn.GELU, nn.Tanh, nn.LeakyReLU, nn.ELU, nn.SiLU, nn.Sigmoid)  # elementwise, no state


@cache
def _defaults() -> dict[str, Any]:
    return FitConfig().model_dump()


def batch_key(config: FitConfig) -> tuple | None:
    """What jobs must share to train as one stack (as ``(key, value)`` pairs); None: train with fit().

    Shared: the architecture (model name, hidden, depth, activation, norm), optimizer (name, nesterov for
    sgd), schedule name, batch size and standardize mode. Everything else listed in ``_PER_MODEL`` may
    differ between the models of a stack.
    """
    if config.model.name != "mlp" or config.optim.name not in _OPTIMIZERS:
        return None
    defaults = _defaults()
    for section, values in config.model_dump().items():
        if not isinstance(values, dict):
            if values != defaults.get(section):
                return None
            continue
        known = {*_SHARED.get(section, ()), *_PER_MODEL.get(section, ()), *_NO_EFFECT.get(section, ())}
        for key, value in values.items():
            if key not in known and value != defaults.get(section, {}).get(key, object()):
                return None  # a setting this module does not implement: fit() will
    key = []
    for section, names in _SHARED.items():
        for name in names:
            value = getattr(getattr(config, section), name)
            if (section, name) == ("optim", "nesterov"):
                value = bool(value) and config.optim.name == "sgd"  # adam(w) ignore it
            key.append((f"{section}.{name}", value))
    return tuple(key)


def fit_many(
    X: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    jobs: Sequence[FitJob],
    *,
    device: str = "cpu",
    on_epoch: ManyEpochCallback | None = None,
    max_models: int | None = None,
) -> list[FitResult]:
    """Train every job; results in job order, each as ``fit(X[job.train_index], ...)`` would return it.

    Jobs with the same :func:`batch_key` train together as one stacked model (at most ``max_models`` per
    stack: groups are split into near-equal chunks); the others go through ``fit()`` one by one. Each
    result's ``model`` is the ordinary ``nn.Sequential`` of ``build_model`` with the trained weights, and
    ``train_index``/``val_index`` are rows of X: ``job.train_index[local]`` where fit() would return the
    local positions. ``info["batched"]`` says which path trained it; a stacked model's ``seconds`` is its
    share of the stack's wall time (``info["group_seconds"]`` the whole).
    """
    if max_models is not None and max_models < 1:
        raise ValueError(f"max_models must be >= 1 (got {max_models})")
    X = np.asarray(X)
    y = np.asarray(y)
    results: list[FitResult | None] = [None] * len(jobs)
    groups: dict[tuple, list[int]] = {}
    for i, job in enumerate(jobs):
        key = batch_key(job.config)
        if key is None:
            results[i] = _fit_one(X, y, n_classes, i, job, device, on_epoch)
        else:
            groups.setdefault(key, []).append(i)
    for members in groups.values():
        n_chunks = math.ceil(len(members) / (max_models or len(members)))
        for chunk in np.array_split(np.asarray(members), n_chunks):
            chunk = chunk.tolist()
            stacked = _Stack.create(X, y, n_classes, [(i, jobs[i]) for i in chunk], device, on_epoch)
            if stacked is None:  # build_model made a layer this module does not know
                for i in chunk:
                    results[i] = _fit_one(X, y, n_classes, i, jobs[i], device, on_epoch)
                continue
            for i, result in zip(chunk, stacked.run(), strict=True):
                results[i] = result
    return results  # type: ignore[return-value]


def _fit_one(X, y, n_classes, i, job, device, on_epoch) -> FitResult:
    rows = np.asarray(job.train_index)
    callback = None if on_epoch is None else (lambda record: on_epoch(i, record))
    result = fit(X[rows], y[rows], n_classes, job.config, job.seed, device=device, on_epoch=callback)
    result.train_index, result.val_index = rows[result.train_index], rows[result.val_index]
    result.info["batched"] = False
    return result


# ------------------------------------------------------------------------------------------ schedules
def _onecycle(k: int, total: int, pct_start: float, max_lr: float) -> tuple[float, float]:
    """torch.optim.lr_scheduler.OneCycleLR (cos, two phases, defaults) at step ``k``: (lr, momentum)."""
    initial = max_lr / 25.0
    phases = [
        (float(pct_start * total) - 1, initial, max_lr, 0.95, 0.85),
        (total - 1, max_lr, initial / 1e4, 0.85, 0.95),
    ]
    start = 0.0
    for i, (end, lr0, lr1, m0, m1) in enumerate(phases):
        if k <= end or i == len(phases) - 1:
            pct = (k - start) / (end - start)
            cos_out = math.cos(math.pi * pct) + 1
            return lr1 + (lr0 - lr1) / 2.0 * cos_out, m1 + (m0 - m1) / 2.0 * cos_out
        start = end
    raise AssertionError("unreachable")  # pragma: no cover


def _lr_momentum(config: FitConfig, k: int, steps_per_epoch: int) -> tuple[float, float | None]:
    """Learning rate at optimizer step ``k`` (0-based) as build_scheduler sets it, and the beta1/momentum
    OneCycleLR cycles (None: the config's own)."""
    sched, epochs, lr = config.schedule, config.train.epochs, config.optim.lr
    if sched.name != "onecycle":
        return lr * lr_factor(sched, k, epochs, steps_per_epoch), None
    total = epochs * steps_per_epoch
    pct = min(max(sched.warmup_epochs / epochs, 1 / total), 0.5) if sched.warmup_epochs else 0.3
    return _onecycle(k, total, pct, lr)


# ---------------------------------------------------------------------------------------- the stack
@dataclass
class _Model:
    """Host-side state of one model of the stack (what fit() keeps in local variables)."""

    index: int  # position in jobs
    job: FitJob
    model: nn.Sequential  # built by build_model; receives the trained weights at the end
    fit_rows: np.ndarray  # rows of X for gradient steps
    val_rows: np.ndarray  # rows of X for early stopping
    gen: torch.Generator  # batch order, seeded like fit()'s
    batch_size: int
    steps: int  # steps per epoch
    best_value: float
    best_epoch: int
    history: list = field(default_factory=list)
    bad_epochs: int = 0
    stopped: bool = False
    pruned: bool = False
    diverged: bool = False
    best_updates: int | None = None  # optimizer steps taken at the best epoch (batch-norm counter)

    @property
    def cfg(self) -> FitConfig:
        return self.job.config


class _Stack:
    """The models of one group as stacked tensors: row ``r`` of every tensor is ``self.models[r]``.

    All parameters of a model are one row of ``theta[M, P]`` (each layer's tensors in nn.Module layout);
    the layers read views of it, and their hand-written backward passes write the gradients straight
    into the same places of ``grad[M, P]``. The optimizer then updates every model with a few whole-tensor
    operations, and a finished model is dropped from the stack (``_keep``) so later steps cost nothing
    for it.
    """

    @classmethod
    def create(cls, X, y, n_classes, items, device, on_epoch) -> _Stack | None:
        models: list[_Model] = []
        mean, scale = [], []
        for index, job in items:
            cfg, rows = job.config, np.asarray(job.train_index)
            torch.manual_seed(job.seed)  # as fit(): build_model draws the initial weights from it
            fit_local, val_local = early_stopping_split(y[rows], cfg.train, job.seed)
            mu, sd = fit_standardizer(X[rows][fit_local], cfg.train.standardize)
            net = build_model(cfg.model, X.shape[1:], n_classes)
            net[0].mean.copy_(torch.from_numpy(mu))
            net[0].scale.copy_(torch.from_numpy(sd))
            n = len(fit_local)
            bs = min(cfg.train.batch_size, n)
            es = cfg.train.early_stopping
            models.append(_Model(
                index=index, job=job, model=net, fit_rows=rows[fit_local], val_rows=rows[val_local],
                gen=torch.Generator().manual_seed(job.seed), batch_size=bs,
                steps=max(1, n // bs if n % bs == 1 else math.ceil(n / bs)),  # fit()'s last-batch rule
                best_value=-math.inf if es is not None and es.monitor == "val_accuracy" else math.inf,
                best_epoch=cfg.train.epochs,
            ))
            mean.append(torch.from_numpy(mu).reshape(-1))
            scale.append(torch.from_numpy(sd).reshape(-1))
        parsed = _parse(models[0].model)
        if parsed is None:
            return None
        self = cls()
        self.start = time.perf_counter()
        self.dev = dev = resolve_device(device)
        self.n_classes, self.on_epoch, self.models, self.finished = n_classes, on_epoch, models, []
        self.ops, self.size = parsed
        self.group_size = len(models)
        self.optim = models[0].cfg.optim.name
        self.nesterov = self.optim == "sgd" and models[0].cfg.optim.nesterov
        self.X = torch.as_tensor(X.reshape(len(X), -1), dtype=torch.float32).to(dev)
        self.y = torch.as_tensor(y, dtype=torch.int64).to(dev)
        self.mean = torch.stack(mean).unsqueeze(1).to(dev)  # [M, 1, F]: each model's own scaler
        self.scale = torch.stack(scale).unsqueeze(1).to(dev)
        # Padded batch width: the largest batch of any model (a merged last batch can be batch_size + 1).
        self.width = max(max(m.batch_size, len(m.fit_rows) - (m.steps - 1) * m.batch_size) for m in models)
        seeds = np.random.SeedSequence([m.job.seed for m in models]).generate_state(1)
        self.dropout_gen = torch.Generator(device=dev).manual_seed(int(seeds[0]))
        self._init_state()
        return self

    # ------------------------------------------------------------------------------------- set-up
    def _init_state(self) -> None:
        M, dev = len(self.models), self.dev
        theta = torch.empty(M, self.size)
        for r, m in enumerate(self.models):
            for op in self.ops:
                for name, (lo, hi) in op.get("params", {}).items():
                    theta[r, lo:hi] = getattr(m.model[op["index"]], name).detach().reshape(-1)
        self.theta = theta.to(dev)
        self.moments = [torch.zeros_like(self.theta) for _ in range(1 if self.optim == "sgd" else 2)]
        self.steps = torch.zeros(M, device=dev)  # Adam's step count per model
        self.running = [  # per batch-norm layer: running mean and var, [M, H]
            [torch.stack([getattr(m.model[op["index"]], name) for m in self.models]).to(dev)
             for name in ("running_mean", "running_var")] for op in self.ops if op["kind"] == "bn"
        ]
        self.has_es = any(m.cfg.train.early_stopping is not None for m in self.models)
        if self.has_es:
            self.best_theta = self.theta.clone()
            self.best_running = [[t.clone() for t in pair] for pair in self.running]
        self._derive()

    def _derive(self) -> None:
        """Views and per-model constants, rebuilt whenever the set of models changes."""
        M, dev = len(self.models), self.dev
        self.grad = torch.empty_like(self.theta)
        self.views, self.segments = [], []  # segments: (lo, hi, decayed) covering a row of theta
        decay = torch.zeros(self.size)
        for op in self.ops:
            if "params" not in op:
                self.views.append(None)
                continue
            (lo_w, hi_w), (lo_b, hi_b) = op["params"]["weight"], op["params"]["bias"]
            shape = op["weight_shape"]
            self.views.append((
                self.theta[:, lo_w:hi_w].view(M, *shape).requires_grad_(),
                self.theta[:, lo_b:hi_b].requires_grad_(),
                self.grad[:, lo_w:hi_w].view(M, *shape),
                self.grad[:, lo_b:hi_b],
            ))
            matrix = len(shape) > 1  # L2/L1 on weight matrices only, as optim._param_groups and l1_penalty
            decay[lo_w:hi_w] = float(matrix)
            self.segments += [(lo_w, hi_w, matrix), (lo_b, hi_b, False)]
        self.row_views: dict[tuple, tuple] = {}
        cfgs = [m.cfg for m in self.models]

        def col(values, shape=(M, 1)):
            return torch.tensor(values, dtype=torch.float32).reshape(shape).to(dev)

        decay = decay.to(dev)
        l1 = [c.optim.l1 for c in cfgs]
        self.l1 = col(l1) * decay if any(l1) else None
        wd = [c.optim.weight_decay for c in cfgs]
        self.l2 = col(wd) * decay if any(wd) else None  # for sgd and the unfused adam update
        clip = [c.train.grad_clip if c.train.grad_clip is not None else math.inf for c in cfgs]
        self.clip = col(clip) if any(c.train.grad_clip is not None for c in cfgs) else None
        smooth = [c.train.label_smoothing for c in cfgs]
        self.smooth = (col([1 - e for e in smooth], (M,)), col([e / self.n_classes for e in smooth], (M,))) \
            if any(smooth) else None
        keep = [1 - c.model.dropout for c in cfgs]
        self.keep = col(keep, (M, 1, 1)) if any(k < 1 for k in keep) else None
        n_val = [len(m.val_rows) for m in self.models]
        self.val = None
        if max(n_val):
            rows = np.zeros((M, max(n_val)), np.int64)
            mask = np.zeros((M, max(n_val)), np.float32)
            for r, m in enumerate(self.models):
                rows[r, : n_val[r]], mask[r, : n_val[r]] = m.val_rows, 1.0
            self.val = (torch.from_numpy(rows).reshape(-1).to(dev), torch.from_numpy(mask).to(dev),
                        col([max(n, 1) for n in n_val], (M,)))

    def _keep(self, rows: list[int]) -> None:
        """Keep only the models at ``rows`` (the others have finished)."""
        self.models = [self.models[r] for r in rows]
        if not rows:
            return
        idx = torch.tensor(rows, dtype=torch.long, device=self.dev)
        self.theta = self.theta.detach().index_select(0, idx)
        self.moments = [t.index_select(0, idx) for t in self.moments]
        self.steps = self.steps.index_select(0, idx)
        self.mean, self.scale = self.mean.index_select(0, idx), self.scale.index_select(0, idx)
        self.running = [[t.index_select(0, idx) for t in pair] for pair in self.running]
        if self.has_es:
            self.best_theta = self.best_theta.index_select(0, idx)
            self.best_running = [[t.index_select(0, idx) for t in pair] for pair in self.best_running]
        self._derive()

    # ------------------------------------------------------------------------------------- forward
    def _forward(self, h: torch.Tensor, batch: tuple | None = None) -> torch.Tensor:
        """Logits ``[M, R, C]`` of standardised inputs ``h [M, R, F]``. ``batch = (mask [M, R], count [M],
        active [M, 1])`` means training mode: dropout on, batch-norm statistics over each model's real
        rows, running statistics updated for models that have a batch."""
        bn = 0
        for op, views in zip(self.ops, self.views, strict=True):
            kind = op["kind"]
            if kind == "linear":
                h = _StackedLinear.apply(h, *views)
            elif kind == "act":
                h = op["module"](h)
            elif kind == "dropout":
                if batch is not None and self.keep is not None:
                    keep = torch.rand(h.shape, generator=self.dropout_gen, device=h.device) < self.keep
                    h = h * keep / self.keep
            elif kind == "ln":
                h = _StackedAffine.apply(nn.functional.layer_norm(h, h.shape[-1:], eps=op["eps"]), *views)
            elif kind == "bn":
                eps, momentum = op["eps"], op["momentum"]
                run_mean, run_var = self.running[bn]
                bn += 1
                if batch is None:
                    h = (h - run_mean.unsqueeze(1)) * torch.rsqrt(run_var.unsqueeze(1) + eps)
                else:
                    mask, count, active = batch
                    m, n = mask.unsqueeze(-1), count.view(-1, 1, 1)
                    mu = (h * m).sum(1, keepdim=True) / n
                    d = h - mu
                    sq = (d * d * m).sum(1, keepdim=True)
                    h = d * torch.rsqrt(sq / n + eps)
                    with torch.no_grad():  # as torch: running = momentum * batch + (1 - momentum) * running
                        unbiased = (sq / (n - 1).clamp(min=1)).squeeze(1)
                        run_mean.copy_(torch.where(
                            active, momentum * mu.squeeze(1) + (1 - momentum) * run_mean, run_mean))
                        run_var.copy_(torch.where(
                            active, momentum * unbiased + (1 - momentum) * run_var, run_var))
                h = _StackedAffine.apply(h, *views)
        return h

    def _loss(self, logits, target, mask, count) -> torch.Tensor:
        """Per-model mean cross-entropy over the real rows, with each model's label smoothing
        (torch's formula: ``(1 - e) * nll + e / C * mean(-sum_c log p_c)``)."""
        logp = torch.log_softmax(logits, -1)
        nll = (-logp.gather(-1, target.unsqueeze(-1)).squeeze(-1) * mask).sum(1) / count
        if self.smooth is None:
            return nll
        smooth = (-logp.sum(-1) * mask).sum(1) / count
        return self.smooth[0] * nll + smooth * self.smooth[1]

    # ------------------------------------------------------------------------------------- updates
    def _tables(self, epoch: int, n_steps: int) -> tuple[torch.Tensor, list[list]]:
        """Per-step optimizer scalars of every model, computed in double on the host exactly as torch's
        optimizers and schedulers do: a tensor ``[S, K, M, 1]`` (rounded to float32 as torch's kernels
        round them) for the vectorised updates, and for the fused Adam kernel, per step, the models
        grouped by equal scalars ``[((lr, beta1, beta2, eps, weight_decay), rows)]``. A model with no
        batch at a step gets values that leave its weights and optimizer state unchanged."""
        M = len(self.models)
        adam = self.optim != "sgd"
        table = np.empty((n_steps, 7 if adam else 3, M), np.float64)
        table[:] = np.array([0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0] if adam else [0.0, 1.0, 0.0])[:, None]
        calls: list[dict] = [{} for _ in range(n_steps)]
        for r, m in enumerate(self.models):
            o = m.cfg.optim
            for s in range(m.steps):
                k = (epoch - 1) * m.steps + s
                lr, cycled = _lr_momentum(m.cfg, k, m.steps)
                if adam:
                    beta1 = o.beta1 if cycled is None else cycled
                    calls[s].setdefault((lr, beta1, o.beta2, o.eps, o.weight_decay), []).append(r)
                    step = float(k + 1)
                    bias1, bias2 = 1 - beta1**step, 1 - o.beta2**step
                    table[s, :, r] = (1 - beta1, o.beta2, 1 - o.beta2, -(lr / bias1), bias2**0.5, o.eps,
                                      1 - lr * o.weight_decay)
                else:
                    table[s, :, r] = (1.0, o.momentum if cycled is None else cycled, -lr)
        tensor = torch.from_numpy(table).to(torch.float32).unsqueeze(-1).to(self.dev)
        return tensor, [[(hyper, tuple(rows)) for hyper, rows in step.items()] for step in calls]

    @torch.no_grad()
    def _update(self, t: torch.Tensor, calls: list, all_active: bool) -> None:
        """One optimizer step of every model, in the order of fit(): L1 gradient, clipping, the step."""
        theta, g = self.theta, self.grad
        if self.l1 is not None:  # d/dW of l1 * |W| (weight matrices), as fit's objective adds it
            g.addcmul_(self.l1, theta.sign())
        if self.clip is not None:  # clip_grad_norm_ per model: g * min(clip / (||g|| + 1e-6), 1)
            norm = torch.linalg.vector_norm(g, dim=1, keepdim=True)
            g.mul_((self.clip / (norm + 1e-6)).clamp_(max=1.0))
        if self.optim == "sgd":  # torch.optim.SGD, single-tensor path
            active, momentum, neg_lr = t
            if self.l2 is not None:
                g.addcmul_(self.l2, theta)  # grad + wd * param
            if not all_active:
                g.mul_(active)
            buf = self.moments[0]
            buf.mul_(momentum).add_(g)  # a zero buffer makes the first step buf = grad, as torch's clone
            theta.add_((g.add(buf * momentum) if self.nesterov else buf) * neg_lr)
        elif _FUSED_ADAM:
            self._fused_adam(calls)
        else:
            self._adam(t)

    def _fused_adam(self, calls: list) -> None:
        """torch's fused Adam/AdamW kernel: one pass over memory instead of nine, once per set of models
        with equal scalars (weight decay in-kernel, on weight matrices only). Same formulas as
        torch.optim.Adam's default path; the last bit of rounding may differ."""
        kernel = torch._fused_adamw_ if self.optim == "adamw" else torch._fused_adam_
        for (lr, beta1, beta2, eps, weight_decay), rows in calls:
            steps = self._rows(rows, None)
            torch._foreach_add_(steps, 1)
            for decayed in (True, False):
                params, grads, avgs, sqs, counts = self._rows(rows, decayed)
                kernel(params, grads, avgs, sqs, [], counts, lr=lr, beta1=beta1, beta2=beta2,
                       weight_decay=weight_decay if decayed else 0.0, eps=eps, amsgrad=False, maximize=False)

    def _rows(self, rows: tuple[int, ...], decayed: bool | None):
        """Cached per-model views for the fused kernel: params, grads, moments, step counts of the
        (non-)decayed segments; ``decayed=None``: each model's step count once."""
        key = (rows, decayed)
        if key not in self.row_views:
            if decayed is None:
                self.row_views[key] = [self.steps[r] for r in rows]
            else:
                parts = [(r, lo, hi) for r in rows for lo, hi, d in self.segments if d == decayed]
                self.row_views[key] = tuple(
                    [t[r, lo:hi] for r, lo, hi in parts] for t in (self.theta, self.grad, *self.moments)
                ) + ([self.steps[r] for r, _, _ in parts],)
        return self.row_views[key]

    def _adam(self, t: torch.Tensor) -> None:
        """torch.optim.Adam/AdamW single-tensor path, vectorised over models (when no fused kernel)."""
        theta, g = self.theta, self.grad
        w1, beta2, one_minus_beta2, neg_step, bias2_sqrt, eps, decay = t
        if self.l2 is not None and self.optim == "adamw":  # param * (1 - lr * wd), weight matrices
            for lo, hi, decayed in self.segments:
                if decayed:
                    theta[:, lo:hi].mul_(decay)
        elif self.l2 is not None:
            g.addcmul_(self.l2, theta)  # grad + wd * param
        exp_avg, exp_avg_sq = self.moments
        exp_avg.lerp_(g, w1)
        exp_avg_sq.mul_(beta2).addcmul_(g * one_minus_beta2, g)
        denom = (exp_avg_sq.sqrt() / bias2_sqrt).add_(eps)
        theta.addcdiv_(exp_avg * neg_step, denom)

    # ------------------------------------------------------------------------------------ the loop
    def run(self) -> list[FitResult]:
        for epoch in range(1, max(m.cfg.train.epochs for m in self.models) + 1):
            self._epoch(epoch)
            if not self.models:
                break
        seconds = time.perf_counter() - self.start
        results = [result for _, result in sorted(self.finished, key=lambda pair: pair[0])]
        for result in results:
            result.seconds, result.info["group_seconds"] = seconds / self.group_size, seconds
        return results

    def _plan(self) -> tuple[torch.Tensor, torch.Tensor, list[list[int]]]:
        """This epoch's batches, fit()'s order per model: row ids ``[S, M*W]``, row mask ``[S, M, W]``,
        and the number of real rows per step and model (0: no batch)."""
        M, W = len(self.models), self.width
        S = max(m.steps for m in self.models)
        rows = np.zeros((S, M, W), np.int64)
        mask = np.zeros((S, M, W), np.float32)
        counts = [[0] * M for _ in range(S)]
        for r, m in enumerate(self.models):
            perm = m.fit_rows[torch.randperm(len(m.fit_rows), generator=m.gen).numpy()]
            for s in range(m.steps):
                lo = s * m.batch_size
                hi = len(perm) if s == m.steps - 1 else lo + m.batch_size
                rows[s, r, : hi - lo], mask[s, r, : hi - lo] = perm[lo:hi], 1.0
                counts[s][r] = hi - lo
        return (torch.from_numpy(rows.reshape(S, M * W)).to(self.dev), torch.from_numpy(mask).to(self.dev),
                counts)

    def _epoch(self, epoch: int) -> None:
        M, W, F = len(self.models), self.width, self.X.shape[1]
        rows, mask, counts = self._plan()
        tables, calls = self._tables(epoch, len(counts))
        count = mask.sum(-1).clamp(min=1)  # [S, M]; a model without a batch divides 0 by 1
        active = mask[:, :, :1] > 0  # [S, M, 1]
        losses = torch.zeros(len(counts), M, device=self.dev)
        correct = torch.zeros(len(counts), M, device=self.dev)
        for s in range(len(counts)):
            xb = (self.X.index_select(0, rows[s]).view(M, W, F) - self.mean) / self.scale
            yb = self.y.index_select(0, rows[s]).view(M, W)
            logits = self._forward(xb, (mask[s], count[s], active[s]))
            loss = self._loss(logits, yb, mask[s], count[s])
            loss.sum().backward()  # the layers write every model's gradients into self.grad
            self._update(tables[s], calls[s], min(counts[s]) > 0)
            with torch.no_grad():
                losses[s] = loss
                correct[s] = ((logits.argmax(-1) == yb) * mask[s]).sum(1)
        self._bookkeep(epoch, losses.tolist(), correct.tolist(), counts, self._validate())

    @torch.no_grad()
    def _validate(self) -> tuple[list[float], list[float]] | None:
        """Every model on its own early-stopping rows, in eval mode: fit()'s ``_evaluate``."""
        if self.val is None:
            return None
        rows, mask, count = self.val
        M, F = len(self.models), self.X.shape[1]
        xb = (self.X.index_select(0, rows).view(M, -1, F) - self.mean) / self.scale
        yb = self.y.index_select(0, rows).view(M, -1)
        logits = self._forward(xb)
        logp = torch.log_softmax(logits, -1)
        loss = (-logp.gather(-1, yb.unsqueeze(-1)).squeeze(-1) * mask).sum(1) / count
        acc = ((logits.argmax(-1) == yb) * mask).sum(1) / count  # float32, as fit's .float().mean()
        return loss.tolist(), acc.tolist()

    def _bookkeep(self, epoch, losses, correct, counts, val) -> None:
        """fit()'s end-of-epoch logic for every model: record, divergence, on_epoch, early stopping."""
        improved, leaving = [], []
        for r, m in enumerate(self.models):
            total_loss, total_correct, seen = 0.0, 0, 0
            for s in range(m.steps):  # the same float64 sum, in the same order, as fit()
                total_loss += losses[s][r] * counts[s][r]
                total_correct += int(correct[s][r])
                seen += counts[s][r]
            done = epoch == m.cfg.train.epochs
            es = m.cfg.train.early_stopping
            if not math.isfinite(total_loss):
                m.history.append({"epoch": epoch, "train_loss": float("nan")})
                m.stopped = m.diverged = True
                leaving.append(r)
                continue
            record = {"epoch": epoch, "lr": _lr_momentum(m.cfg, epoch * m.steps, m.steps)[0],
                      "train_loss": total_loss / seen, "train_accuracy": total_correct / seen}
            if len(m.val_rows):
                record["val_loss"], record["val_accuracy"] = val[0][r], val[1][r]
            m.history.append(record)
            if self.on_epoch is not None and self.on_epoch(m.index, record) is False:
                m.stopped = m.pruned = done = True
            elif es is not None:
                value = record[es.monitor]
                if (value > m.best_value + es.min_delta if es.monitor == "val_accuracy"
                        else value < m.best_value - es.min_delta):
                    m.best_value, m.best_epoch, m.bad_epochs = value, epoch, 0
                    m.best_updates = epoch * m.steps
                    improved.append(r)
                else:
                    m.bad_epochs += 1
                    if m.bad_epochs > es.patience:
                        m.stopped = done = True
            if done:
                leaving.append(r)
        if improved:  # best-state snapshot, as fit's deepcopy(state_dict())
            idx = torch.tensor(improved, device=self.dev)
            self.best_theta.index_copy_(0, idx, self.theta.detach().index_select(0, idx))
            for best, now in zip(self.best_running, self.running, strict=True):
                for b, t in zip(best, now, strict=True):
                    b.index_copy_(0, idx, t.index_select(0, idx))
        if leaving:
            for r in leaving:
                self._finish(r, epoch)
            self._keep([r for r in range(len(self.models)) if r not in leaving])

    def _finish(self, r: int, epoch: int) -> None:
        """Unstack model ``r`` into its nn.Sequential (the best state if early stopping kept one)."""
        m = self.models[r]
        best = m.best_updates is not None
        theta = (self.best_theta if best else self.theta).detach()[r].cpu()
        running = iter(self.best_running if best else self.running)
        with torch.no_grad():
            for op in self.ops:
                mod = m.model[op["index"]]
                for name, (lo, hi) in op.get("params", {}).items():
                    getattr(mod, name).copy_(theta[lo:hi].view_as(getattr(mod, name)))
                if op["kind"] == "bn":
                    run_mean, run_var = next(running)
                    mod.running_mean.copy_(run_mean[r].cpu())
                    mod.running_var.copy_(run_var[r].cpu())
                    mod.num_batches_tracked.fill_(m.best_updates if best else epoch * m.steps)
        es = m.cfg.train.early_stopping
        self.finished.append((m.index, FitResult(
            model=m.model.eval(),
            history=m.history,
            best_epoch=m.best_epoch if es else len(m.history),
            stopped_early=m.stopped,
            train_index=m.fit_rows,
            val_index=m.val_rows,
            seconds=0.0,
            info={"steps_per_epoch": m.steps, "diverged": m.diverged, "pruned": m.pruned, "batched": True,
                  "group_size": self.group_size},
        )))


class _StackedLinear(torch.autograd.Function):
    """``h @ w^T + b`` for ``h [M, R, in]``, ``w [M, out, in]``: one nn.Linear per model.

    The backward writes the weight and bias gradients into the stack's flat gradient buffer (``gw``,
    ``gb``: views of it) and returns only the input gradient. Every product is arranged to have a wide
    result: MKL's small batched GEMMs are up to 5x slower when the result has few columns (the
    classifier's ``out`` = n_classes), so a narrowing layer computes ``(w @ h^T)^T`` and the weight
    gradient is always ``g^T @ h``.
    """

    @staticmethod
    def forward(ctx, h, w, b, gw, gb):
        ctx.save_for_backward(h, w)
        ctx.targets = (gw, gb)
        n_out, n_in = w.shape[1:]
        if n_out < n_in or n_out < 32:
            return torch.baddbmm(b.unsqueeze(2), w, h.transpose(1, 2)).transpose(1, 2).contiguous()
        return torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))

    @staticmethod
    def backward(ctx, g):
        h, w = ctx.saved_tensors
        gw, gb = ctx.targets
        torch.bmm(g.transpose(1, 2), h, out=gw)
        torch.sum(g, 1, out=gb)
        return (torch.bmm(g, w) if ctx.needs_input_grad[0] else None), None, None, None, None


class _StackedAffine(torch.autograd.Function):
    """``h * w + b`` per model (the affine part of LayerNorm/BatchNorm1d), ``w, b [M, H]``; gradients of
    ``w`` and ``b`` go to the flat buffer like :class:`_StackedLinear`'s."""

    @staticmethod
    def forward(ctx, h, w, b, gw, gb):
        ctx.save_for_backward(h, w)
        ctx.targets = (gw, gb)
        return torch.addcmul(b.unsqueeze(1), h, w.unsqueeze(1))

    @staticmethod
    def backward(ctx, g):
        h, w = ctx.saved_tensors
        gw, gb = ctx.targets
        torch.sum(g * h, 1, out=gw)
        torch.sum(g, 1, out=gb)
        return g * w.unsqueeze(1), None, None, None, None


def _parse(model: nn.Sequential) -> tuple[list[dict], int] | None:
    """The stacked program of ``build_model``'s MLP: one op per layer, parameters as ``(lo, hi)`` ranges of
    a row of theta. None when the model has a layer this module cannot stack (its jobs go to fit())."""
    ops: list[dict] = []
    offset = 0

    def params(mod: nn.Module) -> dict:
        nonlocal offset
        spans = {}
        for name in ("weight", "bias"):
            size = getattr(mod, name).numel()
            spans[name] = (offset, offset + size)
            offset += size
        return {"params": spans, "weight_shape": tuple(mod.weight.shape)}

    for i, mod in enumerate(model):
        if isinstance(mod, Standardize | nn.Flatten | nn.Identity):
            continue  # inputs are flattened and standardised per model before the first layer
        if type(mod) is nn.Linear and mod.bias is not None:
            ops.append({"kind": "linear", "index": i, **params(mod)})
        elif type(mod) is nn.LayerNorm and len(mod.normalized_shape) == 1 and mod.weight is not None \
                and mod.bias is not None:
            ops.append({"kind": "ln", "index": i, "eps": mod.eps, **params(mod)})
        elif type(mod) is nn.BatchNorm1d and mod.affine and mod.track_running_stats \
                and mod.momentum is not None:
            ops.append({"kind": "bn", "index": i, "eps": mod.eps, "momentum": mod.momentum, **params(mod)})
        elif type(mod) is nn.Dropout:
            ops.append({"kind": "dropout", "index": i})
        elif type(mod) in _ACTIVATIONS:
            ops.append({"kind": "act", "index": i, "module": mod})
        else:
            return None
    return ops, offset


__all__ = ["FitJob", "batch_key", "fit_many"]
