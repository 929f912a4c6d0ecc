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
from dataclasses import dataclass
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
    fit_local: np.ndarray
    val_local: np.ndarray
    gen: torch.Generator  # batch order, seeded like fit()'s
    batch_size: int
    steps: int  # steps per epoch
    history: list
    best_value: float
    best_epoch: int
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

    Parameters live in one flat tensor ``theta[M, P]`` (Linear weights stored as ``[in, out]`` so
    ``baddbmm(b, h, W)`` and its gradient need no transposes); ``self.leaves`` are views of it that autograd
    differentiates, so an in-place update of ``theta`` is an update of every model at once.
    """

    @classmethod
    def create(cls, X, y, n_classes, items, device, on_epoch) -> _Stack | None:
        dev = resolve_device(device)
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
            steps = max(1, n // bs if n % bs == 1 else math.ceil(n / bs))
            es = cfg.train.early_stopping
            models.append(_Model(
                index=index, job=job, model=net, fit_rows=rows[fit_local], val_rows=rows[val_local],
                fit_local=fit_local, val_local=val_local,
                gen=torch.Generator().manual_seed(job.seed), batch_size=bs, steps=steps, history=[],
                best_value=-math.inf if es is not None and es.monitor == "val_accuracy" else math.inf,
                best_epoch=cfg.train.epochs,
            ))
            mean.append(torch.from_numpy(mu).reshape(-1))
            scale.append(torch.from_numpy(sd).reshape(-1))
        parsed = _parse(models[0].model)
        if parsed is None:
            return None
        ops, size = parsed
        stack = cls()
        stack.start = time.perf_counter()
        stack.dev, stack.n_classes, stack.on_epoch, stack.ops = dev, n_classes, on_epoch, ops
        stack.models, stack.finished = models, []
        stack.optim = models[0].cfg.optim.name
        stack.nesterov = bool(models[0].cfg.optim.nesterov)
        stack.X = torch.as_tensor(X.reshape(len(X), -1), dtype=torch.float32).to(dev)
        stack.y = torch.as_tensor(y, dtype=torch.int64).to(dev)
        stack.mean = torch.stack(mean).unsqueeze(1).to(dev)  # [M, 1, F]
        stack.scale = torch.stack(scale).unsqueeze(1).to(dev)
        stack.width = max(
            max(m.batch_size, len(m.fit_rows) - (m.steps - 1) * m.batch_size) for m in models
        )  # padded batch width: the largest batch of any model (a merged last batch can be bs + 1)
        stack.size = size  # parameters per model
        stack._init_state()
        seq = np.random.SeedSequence([m.job.seed for m in models])
        stack.dropout_gen = torch.Generator(device=dev).manual_seed(int(seq.generate_state(1)[0]))
        stack.group_size = len(models)
        return stack

    # ------------------------------------------------------------------------------------- set-up
    def _init_state(self) -> None:
        M, dev = len(self.models), self.dev
        theta = torch.empty(M, self.size)
        for r, m in enumerate(self.models):
            for op in self.ops:
                mod = m.model[op[1]]
                if op[0] == "linear":
                    theta[r, op[2] : op[2] + op[3] * op[4]] = mod.weight.detach().T.reshape(-1)
                    theta[r, op[2] + op[3] * op[4] : op[2] + op[3] * op[4] + op[4]] = mod.bias.detach()
                elif op[0] in ("ln", "bn"):
                    theta[r, op[2] : op[2] + op[3]] = mod.weight.detach()
                    theta[r, op[2] + op[3] : op[2] + 2 * op[3]] = mod.bias.detach()
        self.theta = theta.to(dev)
        self.moments = [torch.zeros_like(self.theta) for _ in range(1 if self.optim == "sgd" else 2)]
        bns = [op for op in self.ops if op[0] == "bn"]
        self.running = [  # per batch-norm layer: running mean and var, [M, H]
            [torch.stack([m.model[op[1]].running_mean for m in self.models]).to(dev),
             torch.stack([m.model[op[1]].running_var for m in self.models]).to(dev)] for op in bns
        ]
        self.has_es = any(m.cfg.train.early_stopping is not None for m in self.models)
        if self.has_es:
            self.best_theta = self.theta.clone()
            self.best_running = [[t.clone() for t in pair] for pair in self.running]
        self._derive()

    def _derive(self) -> None:
        """Views and per-model constant tensors, rebuilt whenever the set of models changes."""
        M, dev, P = len(self.models), self.dev, self.size
        self.leaves, self.views, decay = [], [], torch.zeros(P)
        for op in self.ops:
            if op[0] == "linear":
                _, _, off, n_in, n_out = op
                w = self.theta[:, off : off + n_in * n_out].view(M, n_in, n_out).requires_grad_()
                b = self.theta[:, off + n_in * n_out : off + n_in * n_out + n_out].requires_grad_()
                decay[off : off + n_in * n_out] = 1.0  # weight matrices: L2/L1 like optim._param_groups
                self.leaves += [w, b]
                self.views.append((w, b))
            elif op[0] in ("ln", "bn"):
                _, _, off, width = op[:4]
                w = self.theta[:, off : off + width].requires_grad_()
                b = self.theta[:, off + width : off + 2 * width].requires_grad_()
                self.leaves += [w, b]
                self.views.append((w, b))
            else:
                self.views.append(None)
        self.decay_segments = [(op[2], op[2] + op[3] * op[4]) for op in self.ops if op[0] == "linear"]
        cfgs = [m.cfg for m in self.models]

        def col(values, shape=(M, 1)):
            return torch.tensor(values, dtype=torch.float32).reshape(shape).to(dev)

        decay = decay.to(dev)
        l1 = [c.optim.l1 for c in cfgs]
        self.l1 = col(l1) * decay if any(l1) else None
        wd = [c.optim.weight_decay for c in cfgs]
        self.l2 = col(wd) * decay if any(wd) and self.optim != "adamw" else None
        self.adamw_decay = self.optim == "adamw" and any(wd)
        clip = [c.train.grad_clip if c.train.grad_clip is not None else math.inf for c in cfgs]
        self.clip = col(clip) if any(c.train.grad_clip is not None for c in cfgs) else None
        smooth = [c.train.label_smoothing for c in cfgs]
        self.smooth = (col([1 - s for s in smooth], (M,)), col([s / self.n_classes for s in smooth], (M,))) \
            if any(smooth) else None
        keep = [1 - c.model.dropout for c in cfgs]
        self.keep = col(keep, (M, 1, 1)) if any(k < 1 for k in keep) else None
        vmax = max(len(m.val_rows) for m in self.models)
        self.val = None
        if vmax:
            rows = np.zeros((M, vmax), np.int64)
            mask = np.zeros((M, vmax), np.float32)
            for r, m in enumerate(self.models):
                rows[r, : len(m.val_rows)], mask[r, : len(m.val_rows)] = m.val_rows, 1.0
            count = mask.sum(1)
            self.val = (torch.from_numpy(rows).reshape(-1).to(dev), torch.from_numpy(mask).to(dev),
                        torch.from_numpy(np.maximum(count, 1)).to(dev), count)

    def _keep(self, rows: list[int]) -> None:
        """Drop the models not in ``rows`` (finished ones): later steps cost only what is still training."""
        self.models = [self.models[r] for r in rows]
        if not rows:
            return
        idx = torch.tensor(rows, dtype=torch.long, device=self.dev)
        self.theta = self.theta.detach().index_select(0, idx)
        self.moments = [t.index_select(0, idx) for t in self.moments]
        self.mean, self.scale = self.mean.index_select(0, idx), self.scale.index_select(0, idx)
        self.running = [[t.index_select(0, idx) for t in pair] for pair in self.running]
        if self.has_es:
            self.best_theta = self.best_theta.index_select(0, idx)
            self.best_running = [[t.index_select(0, idx) for t in pair] for pair in self.best_running]
        self._derive()

    # ------------------------------------------------------------------------------------- forward
    def _forward(self, h: torch.Tensor, mask: torch.Tensor | None = None, count=None, active=None):
        """Logits ``[M, R, C]`` of ``h [M, R, F]`` (already standardised); ``mask`` given: training mode
        (dropout on, batch-norm statistics over each model's real rows, running stats updated)."""
        bn = 0
        for op, views in zip(self.ops, self.views, strict=True):
            kind = op[0]
            if kind == "linear":
                w, b = views
                h = torch.baddbmm(b.unsqueeze(1), h, w)
            elif kind == "act":
                h = op[2](h)
            elif kind == "dropout":
                if mask is not None and self.keep is not None:
                    keep = torch.rand(h.shape, generator=self.dropout_gen, device=h.device) < self.keep
                    h = h * keep / self.keep
            elif kind == "ln":
                w, b = views
                h = torch.addcmul(b.unsqueeze(1), nn.functional.layer_norm(h, (op[3],), eps=op[4]), w.unsqueeze(1))
            elif kind == "bn":
                w, b = views
                eps, momentum = op[4], op[5]
                run_mean, run_var = self.running[bn]
                bn += 1
                if mask is None:
                    h = (h - run_mean.unsqueeze(1)) * torch.rsqrt(run_var.unsqueeze(1) + eps)
                else:
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
                h = torch.addcmul(b.unsqueeze(1), h, w.unsqueeze(1))
        return h

    def _loss(self, logits, target, mask, count):
        """Per-model mean cross-entropy over the real rows, with each model's label smoothing
        (torch's formula: ``(1 - e) * nll + e / C * mean(-sum_c log p_c)``)."""
        logp = torch.log_softmax(logits, -1)
        nll = (-logp.gather(-1, target.unsqueeze(-1)).squeeze(-1) * mask).sum(1) / count
        if self.smooth is None:
            return nll
        smooth = (-logp.sum(-1) * mask).sum(1) / count
        return self.smooth[0] * nll + smooth * self.smooth[1]

    # ------------------------------------------------------------------------------------- updates
    def _tables(self, epoch: int, n_steps: int) -> torch.Tensor:
        """Per-step, per-model optimizer scalars ``[S, K, M, 1]``, computed in double on the host exactly
        as torch's optimizers and schedulers do, then rounded to float32 as torch's kernels do. A model
        with no batch at a step gets values that leave its weights and moments unchanged."""
        M = len(self.models)
        adam = self.optim != "sgd"
        table = np.empty((n_steps, 7 if adam else 3, M), np.float64)
        table[:] = np.array([0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0] if adam else [0.0, 1.0, 0.0])[:, None]
        for r, m in enumerate(self.models):
            o = m.cfg.optim
            for s in range(m.steps):
                k = (epoch - 1) * m.steps + s
                lr, cycled = _lr_momentum(m.cfg, k, m.steps)
                if adam:
                    beta1 = o.beta1 if cycled is None else cycled
                    step = float(k + 1)
                    bias1, bias2 = 1 - beta1**step, 1 - o.beta2**step
                    table[s, :, r] = (1 - beta1, o.beta2, 1 - o.beta2, -(lr / bias1), bias2**0.5, o.eps,
                                      1 - lr * o.weight_decay)
                else:
                    table[s, :, r] = (1.0, o.momentum if cycled is None else cycled, -lr)
        return torch.from_numpy(table).to(torch.float32).unsqueeze(-1).to(self.dev)

    @torch.no_grad()
    def _update(self, grads, t: torch.Tensor, all_active: bool) -> None:
        M, theta = len(self.models), self.theta
        g = torch.cat([gr.reshape(M, -1) for gr in grads], 1)
        if self.l1 is not None:  # d/dW of l1 * |W| (weight matrices), as fit's objective adds it
            g.addcmul_(self.l1, theta.sign())
        if self.clip is not None:  # clip_grad_norm_ per model: g * min(clip / (||g|| + 1e-6), 1)
            norm = torch.linalg.vector_norm(g, dim=1, keepdim=True)
            g.mul_((self.clip / (norm + 1e-6)).clamp_(max=1.0))
        if self.l2 is not None:  # coupled weight decay (sgd, adam): grad + wd * param
            g.addcmul_(self.l2, theta)
        if self.optim == "sgd":
            active, momentum, neg_lr = t
            if not all_active:
                g.mul_(active)
            buf = self.moments[0]
            buf.mul_(momentum).add_(g)  # a zero buffer makes the first step buf = grad, as torch's clone
            step = g.add(buf * momentum) if self.nesterov else buf
            theta.add_(step * neg_lr)
            return
        w1, beta2, one_minus_beta2, neg_step, bias2_sqrt, eps, decay = t
        if self.adamw_decay:  # decoupled: param * (1 - lr * wd) on weight matrices, before the moments
            for lo, hi in self.decay_segments:
                theta[:, lo:hi].mul_(decay)
        exp_avg, exp_avg_sq = self.moments
        exp_avg.lerp_(g, w1)
        exp_avg_sq.mul_(beta2).addcmul_(g * one_minus_beta2, g)
        denom = (exp_avg_sq.sqrt() / bias2_sqrt).add_(eps)
        theta.addcdiv_(exp_avg * neg_step, denom)

    # ------------------------------------------------------------------------------------ the loop
    def _plan(self) -> tuple[torch.Tensor, torch.Tensor, list[list[int]]]:
        """This epoch's batches: global row ids ``[S, M*W]``, row mask ``[S, M, W]``, counts per step."""
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

    def run(self) -> list[FitResult]:
        last_epoch = max(m.cfg.train.epochs for m in self.models)
        for epoch in range(1, last_epoch + 1):
            self._epoch(epoch)
            if not self.models:
                break
        seconds = time.perf_counter() - self.start
        results = sorted(self.finished, key=lambda pair: pair[0])
        for _, result in results:
            result.seconds = seconds / self.group_size
            result.info["group_seconds"] = seconds
        return [result for _, result in results]

    def _epoch(self, epoch: int) -> None:
        M, W, F = len(self.models), self.width, self.X.shape[1]
        rows, mask, counts = self._plan()
        tables = self._tables(epoch, len(counts))
        count = mask.sum(-1).clamp(min=1)  # [S, M]; a model without a batch divides 0 by 1
        losses = torch.zeros(len(counts), M, device=self.dev)
        correct = torch.zeros(len(counts), M, device=self.dev)
        for s in range(len(counts)):
            all_active = min(counts[s]) > 0
            active = None if not self.running else (mask[s, :, 0] > 0).unsqueeze(1)
            xb = (self.X.index_select(0, rows[s]).view(M, W, F) - self.mean) / self.scale
            yb = self.y.index_select(0, rows[s]).view(M, W)
            logits = self._forward(xb, mask[s], count[s], active)
            loss = self._loss(logits, yb, mask[s], count[s])
            grads = torch.autograd.grad(loss.sum(), self.leaves)
            self._update(grads, tables[s], all_active)
            with torch.no_grad():
                losses[s] = loss
                correct[s] = ((logits.argmax(-1) == yb) * mask[s]).sum(1)
        val = self._validate()
        self._bookkeep(epoch, losses.tolist(), correct.tolist(), counts, val)

    @torch.no_grad()
    def _validate(self) -> tuple[list[float], list[float]] | None:
        if self.val is None:
            return None
        rows, mask, count, _ = self.val
        M = len(self.models)
        xb = (self.X.index_select(0, rows).view(M, -1, self.X.shape[1]) - self.mean) / self.scale
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
            for s in range(m.steps):
                total_loss += losses[s][r] * counts[s][r]
                total_correct += int(correct[s][r])
                seen += counts[s][r]
            done = epoch == m.cfg.train.epochs
            es = m.cfg.train.early_stopping
            if not math.isfinite(total_loss):
                m.history.append({"epoch": epoch, "train_loss": float("nan")})
                m.stopped = m.diverged = done = True
                leaving.append(r)
                continue
            lr, _ = _lr_momentum(m.cfg, epoch * m.steps, m.steps)
            record = {"epoch": epoch, "lr": lr, "train_loss": total_loss / seen,
                      "train_accuracy": total_correct / seen}
            if len(m.val_rows):
                record["val_loss"], record["val_accuracy"] = val[0][r], val[1][r]
            m.history.append(record)
            if self.on_epoch is not None and self.on_epoch(m.index, record) is False:
                m.stopped = m.pruned = done = True
            elif es is not None:
                value = record[es.monitor]
                better = value > m.best_value + es.min_delta if es.monitor == "val_accuracy" \
                    else value < m.best_value - es.min_delta
                if better:
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
            self._keep([r for r in range(len(self.models)) if r not in set(leaving)])

    def _finish(self, r: int, epoch: int) -> None:
        """Unstack model ``r`` into its nn.Sequential (best state if early stopping kept one)."""
        m = self.models[r]
        best = m.best_updates is not None
        theta = (self.best_theta if best else self.theta).detach()[r].cpu()
        running = self.best_running if best else self.running
        updates = m.best_updates if best else epoch * m.steps
        bn = 0
        with torch.no_grad():
            for op in self.ops:
                mod = m.model[op[1]]
                if op[0] == "linear":
                    _, _, off, n_in, n_out = op
                    mod.weight.copy_(theta[off : off + n_in * n_out].view(n_in, n_out).T)
                    mod.bias.copy_(theta[off + n_in * n_out : off + n_in * n_out + n_out])
                elif op[0] in ("ln", "bn"):
                    mod.weight.copy_(theta[op[2] : op[2] + op[3]])
                    mod.bias.copy_(theta[op[2] + op[3] : op[2] + 2 * op[3]])
                if op[0] == "bn":
                    mod.running_mean.copy_(running[bn][0][r].cpu())
                    mod.running_var.copy_(running[bn][1][r].cpu())
                    mod.num_batches_tracked.fill_(updates)
                    bn += 1
        es = m.cfg.train.early_stopping
        result = FitResult(
            model=m.model.eval(),
            history=m.history,
            best_epoch=m.best_epoch if es else len(m.history),
            stopped_early=m.stopped,
            train_index=m.fit_rows,
            val_index=m.val_rows,
            seconds=0.0,
            info={"steps_per_epoch": m.steps, "diverged": m.diverged, "pruned": m.pruned, "batched": True,
                  "group_size": self.group_size},
        )
        self.finished.append((m.index, result))


def _parse(model: nn.Sequential) -> tuple[list[tuple], int] | None:
    """The stacked program for ``build_model``'s MLP: one op per layer, with offsets into ``theta``.
    None when the model has a layer this module cannot stack (the jobs then go to fit())."""
    ops: list[tuple] = []
    offset = 0
    for i, mod in enumerate(model):
        if isinstance(mod, Standardize | nn.Flatten | nn.Identity):
            continue  # inputs are flattened and standardised per model before the first layer
        if isinstance(mod, nn.Linear) and mod.bias is not None:
            ops.append(("linear", i, offset, mod.in_features, mod.out_features))
            offset += mod.in_features * mod.out_features + mod.out_features
        elif isinstance(mod, nn.LayerNorm) and len(mod.normalized_shape) == 1 and mod.weight is not None \
                and mod.bias is not None:
            ops.append(("ln", i, offset, mod.normalized_shape[0], mod.eps))
            offset += 2 * mod.normalized_shape[0]
        elif type(mod) is nn.BatchNorm1d and mod.affine and mod.track_running_stats \
                and mod.momentum is not None:
            ops.append(("bn", i, offset, mod.num_features, mod.eps, mod.momentum))
            offset += 2 * mod.num_features
        elif type(mod) is nn.Dropout:
            ops.append(("dropout", i))
        elif isinstance(mod, _ACTIVATIONS):
            ops.append(("act", i, mod))
        else:
            return None
    return ops, offset


__all__ = ["FitJob", "batch_key", "fit_many"]
