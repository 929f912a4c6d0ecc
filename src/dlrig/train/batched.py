"""Many small fits at once: the models of one shape trained as ONE stacked model (``torch.baddbmm``).

Nested cross-validation trains folds x configs small models; :func:`dlrig.train.fit` trains one at a time
and spends most of each step in Python and dispatch overhead, not arithmetic. :func:`fit_many` stacks the
parameters of every model that shares an architecture (one row of ``theta[M, P]`` per model), runs each
step for all of them at once -- batched matrix products, a hand-written backward pass that writes every
model's gradients into one ``grad[M, P]`` -- and updates them all together, each model with its own lr,
weight decay, betas, clipping, schedule, epochs and early stopping.

``fit()`` stays the reference; each model here follows it step for step, and what training *means* is
written once, in the modules fit() uses, and imported here:

- the rows: the early-stopping split (``fit.early_stopping_split``) and the scaler (``fit_standardizer``)
  on the job's own fit rows only (no model sees another model's rows, or its own validation rows);
- the loss and its gradient: ``losses.cross_entropy_rows`` (torch's label-smoothing formula; fit trains
  with ``nn.CrossEntropyLoss``) and ``losses.cross_entropy_grad`` (softmax minus the smoothed targets,
  what autograd gets from that loss); validation is plain CE, as fit's;
- the schedule: ``optim.schedule_at``, the lr (and the momentum / beta1 onecycle cycles) that fit's
  ``build_scheduler`` sets at every step (its ``lr_factor`` and OneCycle warm-up share);
- the optimizer: which parameters weight decay and L1 touch (``optim.decays``), and the update rules
  ``optim.add_weight_decay``, ``sgd_update``, ``adam_coefficients`` / ``adam_update`` -- torch.optim's
  single-tensor arithmetic with one set of scalars per row of ``theta``;
- early stopping and pruning: fit's own callbacks (``callbacks.EarlyStopping``, ``EpochFunction`` for
  ``on_epoch``), one set per model, in fit's order; the divergence message is ``fit.failure_reason``;
- the same initial weights (``build_model`` under ``torch.manual_seed(seed)``, then stacked) and the same
  batch order (a ``torch.Generator`` per model seeded like fit's).

What stays written here, and why; each is held numerically to fit()'s own piece by
tests/train/test_batched.py (``test_stacked_loss_is_autograd_of_fits_loss``,
``test_stacked_step_is_fits_step``, and end to end ``test_matches_fit``):

- the backward pass: no autograd graph over the stack (the engine's per-op bookkeeping is the overhead
  stacking removes); a hand-written pass through the same aten backward kernels autograd runs, writing
  every model's gradients into one ``grad[M, P]``;
- the L1 gradient ``l1 * sign(W)`` (fit: autograd of ``fit.l1_penalty``) and clipping per model,
  ``g * min(clip / (||g|| + 1e-6), 1)`` (fit: ``nn.utils.clip_grad_norm_``): torch's functions take one
  model's parameters and one float bound, so using them would mean a Python loop over the models at every
  step; here each row has its own bound, in one tensor operation;
- Adam/AdamW through torch's fused kernel (``torch._fused_adam_`` / ``_fused_adamw_``) where torch has
  one: one pass over memory instead of the nine of ``optim.adam_update`` (the fallback), called once per
  set of models with equal scalars. Same formulas as fit's ``torch.optim.Adam``; the last bit of rounding
  may differ;
- the last-batch rule (steps per epoch) and the batch slicing (``_plan``, vectorised), which fit() writes
  inline rather than in a function this module could import;
- what only a stack has: a model with no batch at a step (fewer fit rows -> fewer steps per epoch) is
  not updated (zero gradient and decay, the scalars of a step that changes nothing); models of a group
  with different row counts get padded batches whose padding is masked out of the loss; a model that has
  finished (epochs, early stopping, divergence, pruning) leaves the stack.

With dropout 0 the histories and predictions agree with ``fit()`` to float32 rounding (tests/train/
test_batched.py). Dropout masks come from one generator per model (seeded from its job's seed), not fit's
global RNG: statistically the same training, not the same numbers. A model draws its masks only at the
steps it has a batch, in blocks of ``batch_size + 1`` rows whatever the stack's padded width. What a model
learns does not depend on which other models share its stack, to the last bit (the fit cache keys a fit by
its own config, rows and seed): its products are its own entries of batched products, each row of theta
starts its weight and bias blocks on an ``_ALIGN`` boundary (so vectorised kernels treat every model's row
alike, wherever it sits in the stack), and validation sums a model's loss in blocks of a size the stack's
model count does not change (test_a_models_training_does_not_depend_on_its_stack_mates).

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
from dlrig.train import work
from dlrig.train.callbacks import Callback, EarlyStopping, EpochFunction, FitState
from dlrig.train.fit import (
    FitResult,
    early_stopping_split,
    failure_reason,
    fit,
    fit_standardizer,
    resolve_device,
    steps_per_epoch,
)
from dlrig.train.losses import cross_entropy_grad, cross_entropy_rows
from dlrig.train.optim import (
    ADAM_NO_STEP,
    adam_coefficients,
    adam_rows,
    add_weight_decay,
    decays,
    schedule_at,
    sgd_update,
)

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
    # norm_momentum / norm_eps: the stack reads them from the first model's norm layers (_parse).
    "model": ("name", "hidden", "depth", "activation", "norm", "norm_momentum", "norm_eps"),
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
_NO_EFFECT = {"model": ("channels", "kernel_size"),  # unused by mlp + sgd/adam(w)
              "optim": ("alpha", "rho", "centered", "lr_decay", "initial_accumulator_value",
                        "momentum_decay")}
_OPTIMIZERS = ("sgd", "adam", "adamw")


def dropout_generator(seed: int, device: torch.device) -> torch.Generator:
    """A model's own dropout-mask stream, from its job's seed alone (never fit's global RNG, never its
    stack mates): the stacked trainers (this module and stacked_func) draw every mask from it."""
    return torch.Generator(device=device).manual_seed(
        int(np.random.SeedSequence([seed, 1]).generate_state(1)[0]))
_FUSED_ADAM = hasattr(torch, "_fused_adam_")  # else the vectorised update below (same math)
_STACK_BYTES = 1 << 30  # default cap on a stack's parameter-sized state (theta, grad, moments, best copy)
# Row layout: the weight block and the bias block of each model's row of theta start on a multiple of this
# many floats. Vectorised kernels (the fused Adam, element-wise ops) treat a misaligned head or a tail with
# other instructions (a separate multiply and add instead of an FMA), so without it a model's last bits
# depended on its position in the stack, which depends on its stack mates.
_ALIGN = 64
# Validation runs in row blocks of at most this many activations per model and layer: a block size that
# does not depend on how many models share the stack, so neither does the order a model's loss is summed in.
_BLOCK_FLOATS = 1 << 16


@cache
def _defaults() -> dict[str, Any]:
    return FitConfig().model_dump()


def batch_key(config: FitConfig) -> tuple | None:
    """What jobs must share to train as one stack (as ``(key, value)`` pairs); None: train with fit().

    Shared: the architecture (model name, hidden, depth, activation, norm and its momentum/eps), optimizer
    (name, nesterov for sgd), schedule name, batch size and standardize mode. Everything else listed in
    ``_PER_MODEL`` may differ between the models of a stack.
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
        cap = max_models or max(1, _STACK_BYTES // (5 * 4 * _mlp_size(jobs[members[0]].config, X, n_classes)))
        n_chunks = math.ceil(len(members) / cap)
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


def _mlp_size(config: FitConfig, X: np.ndarray, n_classes: int) -> int:
    """Parameters of build_model's MLP for this config and data (without building it)."""
    m = config.model
    width = int(np.prod(X.shape[1:]))
    linear = (width + 1) * m.hidden + (m.depth - 1) * (m.hidden + 1) * m.hidden + (m.hidden + 1) * n_classes
    return linear + (2 * m.hidden * m.depth if m.norm != "none" else 0)


def _fit_one(X, y, n_classes, i, job, device, on_epoch) -> FitResult:
    rows = np.asarray(job.train_index)
    callback = None if on_epoch is None else (lambda record: on_epoch(i, record))
    result = fit(X[rows], y[rows], n_classes, job.config, job.seed, device=device, on_epoch=callback)
    result.train_index, result.val_index = rows[result.train_index], rows[result.val_index]
    result.info["batched"] = False
    return result


# ---------------------------------------------------------------------------------------- the stack
class _NoSnapshot:
    """``FitState.model`` for fit's EarlyStopping on a stacked model: the callback snapshots
    ``state_dict()`` when a model improves, but the stack keeps every model's best weights itself (rows of
    ``best_theta``), so the callback's copy is empty. ``on_fit_end`` (its restore) is never called."""

    def state_dict(self) -> dict:
        return {}


_NO_SNAPSHOT = _NoSnapshot()


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
    state: FitState  # what fit's callbacks see: epoch, history, stop, stop_reason, pruned
    hooks: list[Callback]  # fit's own epoch callbacks, in fit's order: on_epoch (pruning), early stopping
    early: EarlyStopping | None
    diverged: bool = False

    @property
    def history(self) -> list[dict[str, float]]:
        return self.state.history

    @property
    def best_updates(self) -> int | None:
        """Optimizer steps taken at the best epoch (batch-norm counter); None: no best state kept."""
        if self.early is None or self.early.best_epoch is None:
            return None
        return self.early.best_epoch * self.steps

    @property
    def cfg(self) -> FitConfig:
        return self.job.config

    def schedule(self, k: int) -> tuple[float, float | None]:
        """(lr, cycled momentum or None) after ``k`` optimizer steps, as fit()'s scheduler sets them."""
        cfg = self.cfg
        return schedule_at(cfg.schedule, cfg.optim.lr, k, cfg.train.epochs, self.steps)


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
        start = time.perf_counter()
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
            steps = steps_per_epoch(n, bs)
            es = cfg.train.early_stopping
            early = EarlyStopping(es) if es is not None else None
            pruner = [] if on_epoch is None else [EpochFunction(lambda record, i=index: on_epoch(i, record))]
            models.append(_Model(
                index=index, job=job, model=net, fit_rows=rows[fit_local], val_rows=rows[val_local],
                gen=torch.Generator().manual_seed(job.seed), batch_size=bs, steps=steps,
                state=FitState(model=_NO_SNAPSHOT, optimizer=None, scheduler=None, config=cfg,
                               steps_per_epoch=steps),
                hooks=pruner + ([early] if early is not None else []), early=early,
            ))
            mean.append(torch.from_numpy(mu).reshape(-1))
            scale.append(torch.from_numpy(sd).reshape(-1))
        parsed = _parse(models[0].model)
        if parsed is None:
            return None
        self = cls()  # a constructor that may decline (None above: a layer it cannot stack)
        self.start = start
        self.dev = dev = resolve_device(device)
        self.n_classes, self.models, self.finished = n_classes, models, []
        self.ops, self.size, self.n_decayed = parsed
        self.widest = max([int(np.prod(X.shape[1:]))] + [op["weight_shape"][0] for op in self.ops
                                                         if "weight_shape" in op])
        self.first_linear = next(i for i, op in enumerate(self.ops) if op["kind"] == "linear")
        self.group_size = len(models)
        self.optim = models[0].cfg.optim.name
        self.nesterov = self.optim == "sgd" and models[0].cfg.optim.nesterov
        self.sample_shape = tuple(X.shape[1:])
        self.X = torch.as_tensor(X.reshape(len(X), -1), dtype=torch.float32).to(dev)
        self.y = torch.as_tensor(y, dtype=torch.int64).to(dev)
        self.mean = torch.stack(mean).unsqueeze(1).to(dev)  # [M, 1, F]: each model's own scaler
        self.scale = torch.stack(scale).unsqueeze(1).to(dev)
        # Padded batch width: the largest batch of any model (a merged last batch can be batch_size + 1).
        self.width = max(max(m.batch_size, len(m.fit_rows) - (m.steps - 1) * m.batch_size) for m in models)
        self.dropout_gens = [dropout_generator(m.job.seed, dev) for m in models]
        self._init_state()
        return self

    # ------------------------------------------------------------------------------------- set-up
    def _init_state(self) -> None:
        M, dev = len(self.models), self.dev
        theta = torch.zeros(M, self.size)  # the alignment padding (_ALIGN) stays 0
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
        self.grad = torch.zeros_like(self.theta)  # the alignment padding stays 0: no update, no norm
        self.views = []
        for op in self.ops:
            if "params" not in op:
                self.views.append(None)
                continue
            (lo_w, hi_w), (lo_b, hi_b) = op["params"]["weight"], op["params"]["bias"]
            shape = op["weight_shape"]
            w, b = self.theta[:, lo_w:hi_w].view(M, *shape), self.theta[:, lo_b:hi_b]
            # (weight, bias, their gradient views, the views the forward reads: made once, valid as long
            # as theta is updated in place)
            reads = _linear_views(w, b) if op["kind"] == "linear" else (w.unsqueeze(1), b.unsqueeze(1))
            self.views.append((w, b, self.grad[:, lo_w:hi_w].view(M, *shape), self.grad[:, lo_b:hi_b], reads))
        self.row_views: dict[tuple, tuple] = {}
        cfgs = [m.cfg for m in self.models]

        def col(values, shape=(M, 1)):
            return torch.tensor(values, dtype=torch.float32).reshape(shape).to(dev)

        # L1 and L2 act on the weight matrices only (theta[:, :n_decayed]), as l1_penalty and
        # optim._param_groups decide: not on biases or norm gains.
        l1 = [c.optim.l1 for c in cfgs]
        self.l1 = col(l1) if any(l1) else None
        wd = [c.optim.weight_decay for c in cfgs]
        self.l2 = col(wd) if any(wd) else None  # for sgd and the unfused adam update
        clip = [c.train.grad_clip if c.train.grad_clip is not None else math.inf for c in cfgs]
        self.clip = col(clip) if any(c.train.grad_clip is not None for c in cfgs) else None
        smooth = [c.train.label_smoothing for c in cfgs]  # one float when the models agree, else [M, 1]
        self.smooth = smooth[0] if len(set(smooth)) == 1 else col(smooth)
        keep = [1 - c.model.dropout for c in cfgs]
        self.keep = col(keep, (M, 1, 1)) if any(k < 1 for k in keep) else None
        n_val = [len(m.val_rows) for m in self.models]
        self.val = None
        if max(n_val):
            rows = np.zeros((M, max(n_val)), np.int64)
            mask = np.zeros((M, max(n_val)), np.float32)
            for r, m in enumerate(self.models):
                rows[r, : n_val[r]], mask[r, : n_val[r]] = m.val_rows, 1.0
            self.val = (torch.from_numpy(rows).to(dev), torch.from_numpy(mask).to(dev),
                        col([max(n, 1) for n in n_val], (M,)))

    def _keep(self, rows: list[int]) -> None:
        """Keep only the models at ``rows`` (the others have finished)."""
        self.models = [self.models[r] for r in rows]
        self.dropout_gens = [self.dropout_gens[r] for r in rows]
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

    def _uniforms(self, h: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        """U(0, 1) draws shaped like ``h [M, R, W]`` for a dropout mask: each model with a batch (``active
        [M, 1]``) draws ``batch_size + 1`` rows from its own generator; padding rows get 1 (dropped, and
        masked out of the loss anyway). Independent of the stack's other models and its padded width."""
        u = torch.ones(h.shape, device=h.device)
        for i in torch.nonzero(active.view(-1)).view(-1).tolist():
            block = self.models[i].batch_size + 1  # the largest batch a model has (a merged last batch)
            draw = torch.rand((block, h.shape[2]), generator=self.dropout_gens[i], device=h.device)
            u[i, : min(block, h.shape[1])] = draw[: h.shape[1]]
        return u

    # ------------------------------------------------------------------------------- forward, backward
    def _forward(self, h: torch.Tensor, batch: tuple | None = None) -> tuple[torch.Tensor, list | None]:
        """Logits ``[M, R, C]`` of standardised inputs ``h [M, R, F]``. ``batch = (mask [M, R], count [M],
        active [M, 1])`` means training mode: dropout on, batch-norm statistics over each model's real
        rows, running statistics updated for models that have a batch, and what :meth:`_backward` needs
        kept on a tape (one entry per op)."""
        tape: list | None = None if batch is None else []
        bn = 0
        for op, views in zip(self.ops, self.views, strict=True):
            kind, saved = op["kind"], None
            if kind == "linear":
                saved = h
                h = _linear(h, *views[4])
            elif kind == "act" and type(op["module"]) is nn.ReLU:
                saved = (None, h.relu_())  # in place: the input is a fresh tensor nothing else keeps
            elif kind == "act":
                z = h
                h = op["module"](z)
                saved = (z, h)
            elif kind == "dropout":
                if batch is not None and self.keep is not None:
                    saved = (self._uniforms(h, batch[2]) < self.keep) / self.keep
                    h = h * saved
            elif kind == "ln":
                out, mean, rstd = torch.native_layer_norm(h, h.shape[-1:], None, None, op["eps"])
                saved = (h, out, mean, rstd)
                h = torch.addcmul(views[4][1], out, views[4][0])
            elif kind == "bn":
                eps, momentum = op["eps"], op["momentum"]
                run_mean, run_var = self.running[bn]
                bn += 1
                if batch is None:
                    xhat = (h - run_mean.unsqueeze(1)) * torch.rsqrt(run_var.unsqueeze(1) + eps)
                else:
                    mask, count, active = batch
                    m, n = mask.unsqueeze(-1), count.view(-1, 1, 1)
                    mu = (h * m).sum(1, keepdim=True) / n
                    d = h - mu
                    sq = (d * d * m).sum(1, keepdim=True)
                    rstd = torch.rsqrt(sq / n + eps)
                    xhat = d * rstd
                    saved = (xhat, rstd, m, n)
                    # as torch: running = momentum * batch statistic + (1 - momentum) * running
                    unbiased = (sq / (n - 1).clamp(min=1)).squeeze(1)
                    run_mean.copy_(torch.where(
                        active, momentum * mu.squeeze(1) + (1 - momentum) * run_mean, run_mean))
                    run_var.copy_(torch.where(
                        active, momentum * unbiased + (1 - momentum) * run_var, run_var))
                h = torch.addcmul(views[4][1], xhat, views[4][0])
            if tape is not None:
                tape.append(saved)
        return h, tape

    def _backward(self, g: torch.Tensor, tape: list) -> None:
        """Back-propagate ``g`` (gradient of the summed per-model losses w.r.t. the logits) through the
        tape, writing every parameter gradient into its place in ``self.grad``. The same backward
        kernels autograd would run (threshold_backward, native_layer_norm_backward, ...), without the
        autograd engine's bookkeeping; padded rows carry zero gradient throughout."""
        for i in range(len(self.ops) - 1, -1, -1):
            op, views, saved = self.ops[i], self.views[i], tape[i]
            kind = op["kind"]
            if kind == "linear":
                w, _, gw, gb, _ = views
                torch.bmm(g.transpose(1, 2), saved, out=gw)
                torch.sum(g, 1, out=gb)
                if i == self.first_linear:
                    return  # the input needs no gradient
                g = torch.bmm(g, w)
            elif kind == "act":
                g = op["backward"](g, *saved)
            elif kind == "dropout":
                if saved is not None:
                    g = g * saved
            elif kind == "ln":
                z, out, mean, rstd = saved
                torch.sum(g * out, 1, out=views[2])
                torch.sum(g, 1, out=views[3])
                g = _ATEN.native_layer_norm_backward(g * views[4][0], z, z.shape[-1:], mean, rstd,
                                                     None, None, [True, False, False])[0]
            elif kind == "bn":
                xhat, rstd, m, n = saved
                torch.sum(g * xhat, 1, out=views[2])
                torch.sum(g, 1, out=views[3])
                gx = g * views[4][0]
                mean_gx = (gx * m).sum(1, keepdim=True) / n
                mean_gxx = (gx * xhat * m).sum(1, keepdim=True) / n
                g = (gx - mean_gx - xhat * mean_gxx) * rstd * m

    def _loss(self, logits, target, mask, count, weight) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-model mean cross-entropy over the real rows with each model's label smoothing, and its
        gradient w.r.t. the logits (losses.py's ``cross_entropy_grad`` / count on real rows, 0 on padding)."""
        logp = torch.log_softmax(logits, -1)
        rows = cross_entropy_rows(logp, target, self.smooth)
        # Without smoothing the gradient starts from softmax(logits) (the bits every such run has had);
        # with it, from the log-probabilities already at hand (a pass fewer, also as it always was).
        plain = not torch.is_tensor(self.smooth) and self.smooth == 0
        grad = cross_entropy_grad(torch.softmax(logits, -1) if plain else logp.exp(), target, self.smooth)
        return (rows * mask).sum(1) / count, grad.mul_(weight)

    # ------------------------------------------------------------------------------------- updates
    def _tables(self, epoch: int, n_steps: int) -> tuple[torch.Tensor, list[list]]:
        """Per-step optimizer scalars of every model, computed in double on the host exactly as torch's
        optimizers and schedulers do: a tensor ``[S, K, M, 1]`` (rounded to float32 as torch's kernels
        round them) for the vectorised updates, and for the fused Adam kernel, per step, the models
        grouped by equal scalars ``[((decayed, lr, beta1, beta2, eps, weight_decay), rows)]``. A model with no
        batch at a step gets values that leave its weights and optimizer state unchanged."""
        M = len(self.models)
        adam, fused = self.optim != "sgd", self.optim != "sgd" and _FUSED_ADAM
        table = np.empty((n_steps, 7 if adam else 3, M), np.float64)
        table[:] = np.array(ADAM_NO_STEP if adam else [0.0, 1.0, 0.0])[:, None]  # no batch: no change
        calls: list[dict] = [{} for _ in range(n_steps)]
        for r, m in enumerate(self.models):
            o = m.cfg.optim
            for s in range(m.steps):
                k = (epoch - 1) * m.steps + s
                lr, cycled = m.schedule(k)
                if adam:
                    beta1 = o.beta1 if cycled is None else cycled
                    # weight matrices (decayed) and the rest: models with equal scalars share a call
                    calls[s].setdefault((True, lr, beta1, o.beta2, o.eps, o.weight_decay), []).append(r)
                    calls[s].setdefault((False, lr, beta1, o.beta2, o.eps, 0.0), []).append(r)
                    if fused:
                        continue
                    table[s, :, r] = adam_coefficients(lr, beta1, o.beta2, o.eps, o.weight_decay, k + 1)
                else:
                    table[s, :, r] = (1.0, o.momentum if cycled is None else cycled, -lr)
        tensor = torch.from_numpy(table).to(torch.float32).unsqueeze(-1).to(self.dev)
        return tensor, [[(hyper, tuple(rows)) for hyper, rows in step.items()] for step in calls]

    def _update(self, t: torch.Tensor, calls: list, has_batch: torch.Tensor, all_active: bool) -> None:
        """One optimizer step of every model, in the order of fit(): L1 gradient, clipping, the step."""
        theta, g, nd = self.theta, self.grad, self.n_decayed
        if self.l1 is not None:  # d/dW of l1 * |W| (weight matrices), as fit's objective adds it
            g[:, :nd].addcmul_(theta[:, :nd].sign(), self.l1)
        if self.clip is not None:  # clip_grad_norm_ per model: g * min(clip / (||g|| + 1e-6), 1)
            norm = torch.linalg.vector_norm(g, dim=1, keepdim=True)
            g.mul_((self.clip / (norm + 1e-6)).clamp_(max=1.0))
        if self.optim == "sgd":  # torch.optim.SGD, single-tensor path
            active, momentum, neg_lr = t
            l2 = self.l2
            if not all_active:  # a model without a batch: zero gradient and decay, so no change at all
                g.mul_(active)
                l2 = None if l2 is None else l2 * active
            if l2 is not None:
                add_weight_decay(g[:, :nd], theta[:, :nd], l2)
            sgd_update(theta, g, self.moments[0], momentum, neg_lr, nesterov=self.nesterov)
        elif _FUSED_ADAM:
            self.steps.add_(has_batch)  # torch's Adam counts a model's steps before its update
            self._fused_adam(calls)
        else:
            self._adam(t)

    def _fused_adam(self, calls: list) -> None:
        """torch's fused Adam/AdamW kernel: one pass over memory instead of nine, once per set of models
        with equal scalars (weight decay in-kernel, on weight matrices only). Same formulas as
        torch.optim.Adam's default path; the last bit of rounding may differ."""
        kernel = torch._fused_adamw_ if self.optim == "adamw" else torch._fused_adam_
        for (decayed, lr, beta1, beta2, eps, weight_decay), rows in calls:
            params, grads, avgs, sqs = self._rows(rows, decayed)
            kernel(params, grads, avgs, sqs, [], self._rows(rows, None), lr=lr, beta1=beta1, beta2=beta2,
                   weight_decay=weight_decay, eps=eps, amsgrad=False, maximize=False)

    def _rows(self, rows: tuple[int, ...], decayed: bool | None):
        """Cached per-model views for the fused kernel: the weight matrices (``decayed``) or the other
        parameters of each model, with its gradients and moments; ``decayed=None``: the step counts."""
        key = (rows, decayed)
        if key not in self.row_views:
            if decayed is None:
                self.row_views[key] = [self.steps[r] for r in rows]
            else:
                part = slice(0, self.n_decayed) if decayed else slice(self.n_decayed, self.size)
                self.row_views[key] = tuple(
                    [t[r, part] for r in rows] for t in (self.theta, self.grad, *self.moments))
        return self.row_views[key]

    def _adam(self, t: torch.Tensor) -> None:
        """torch.optim.Adam/AdamW single-tensor path, vectorised over models (when no fused kernel)."""
        adam_rows(self.theta, self.grad, self.moments, t.unbind(), self.l2, self.n_decayed,
                  decoupled=self.optim == "adamw")

    # ------------------------------------------------------------------------------------ the loop
    @torch.no_grad()
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
        counts = np.zeros((S, M), np.int64)
        for r, m in enumerate(self.models):
            perm = m.fit_rows[torch.randperm(len(m.fit_rows), generator=m.gen).numpy()]
            full, bs = m.steps - 1, m.batch_size  # full batches, then the last one takes the rest
            rows[:full, r, :bs] = perm[: full * bs].reshape(full, bs)
            mask[:full, r, :bs] = 1.0
            counts[:full, r] = bs
            rows[full, r, : len(perm) - full * bs] = perm[full * bs :]
            mask[full, r, : len(perm) - full * bs] = 1.0
            counts[full, r] = len(perm) - full * bs
        return (torch.from_numpy(rows.reshape(S, M * W)).to(self.dev), torch.from_numpy(mask).to(self.dev),
                counts.tolist())

    def _epoch(self, epoch: int) -> None:
        M, W, F = len(self.models), self.width, self.X.shape[1]
        rows, mask, counts = self._plan()
        tables, calls = self._tables(epoch, len(counts))
        count = mask.sum(-1).clamp(min=1)  # [S, M]; a model without a batch divides 0 by 1
        weight = (mask / count.unsqueeze(-1)).unsqueeze(-1)  # [S, M, W, 1]: d(mean loss)/d(row loss)
        real = mask > 0
        active = real[:, :, :1]  # [S, M, 1]: the model has a batch at this step
        losses = torch.zeros(len(counts), M, device=self.dev)
        correct = torch.zeros(len(counts), M, dtype=torch.int64, device=self.dev)
        per_step = zip(rows.unbind(), mask.unbind(), count.unbind(), weight.unbind(), active.unbind(),
                       real.unbind(), mask[:, :, 0].unbind(), tables.unbind(), calls, counts,
                       losses.unbind(), correct.unbind(), strict=True)  # views made once, not per step
        for rows_s, mask_s, count_s, weight_s, active_s, real_s, stepped, t, call, n, loss, right in per_step:
            xb = (self.X.index_select(0, rows_s).view(M, W, F) - self.mean) / self.scale
            yb = self.y.index_select(0, rows_s).view(M, W)
            logits, tape = self._forward(xb, (mask_s, count_s, active_s))
            loss_s, grad = self._loss(logits, yb, mask_s, count_s, weight_s)
            loss.copy_(loss_s)
            self._backward(grad, tape)
            self._update(t, call, stepped, min(n) > 0)
            torch.sum((logits.argmax(-1) == yb) & real_s, 1, out=right)
        self._bookkeep(epoch, losses.tolist(), correct.tolist(), counts, self._validate())

    def _validate(self) -> tuple[list[float], list[float]] | None:
        """Every model on its own early-stopping rows, in eval mode: fit()'s ``_evaluate`` (plain CE)."""
        if self.val is None:
            return None
        rows, mask, count = self.val
        M, F = len(self.models), self.X.shape[1]
        loss = torch.zeros(M, device=self.dev)
        correct = torch.zeros(M, device=self.dev)
        block = max(1, _BLOCK_FLOATS // self.widest)  # rows per pass: bounded activation memory per model
        for lo in range(0, rows.shape[1], block):
            part = rows[:, lo : lo + block]
            xb = (self.X.index_select(0, part.reshape(-1)).view(M, -1, F) - self.mean) / self.scale
            yb = self.y.index_select(0, part.reshape(-1)).view(M, -1)
            logits, _ = self._forward(xb)
            loss += (cross_entropy_rows(torch.log_softmax(logits, -1), yb) * mask[:, lo : lo + block]).sum(1)
            correct += ((logits.argmax(-1) == yb) * mask[:, lo : lo + block]).sum(1)
        # mean loss; accuracy in float32, as fit's .float().mean()
        return (loss / count).tolist(), (correct / count).tolist()

    def _bookkeep(self, epoch, losses, correct, counts, val) -> None:
        """fit()'s end-of-epoch logic for every model: record, divergence, on_epoch, early stopping."""
        improved, leaving = [], []
        for r, m in enumerate(self.models):
            total_loss, total_correct, seen = 0.0, 0, 0
            for s in range(m.steps):  # the same float64 sum, in the same order, as fit()
                total_loss += losses[s][r] * counts[s][r]
                total_correct += int(correct[s][r])
                seen += counts[s][r]
            state = m.state
            state.epoch = epoch
            if not math.isfinite(total_loss):
                m.history.append({"epoch": epoch, "train_loss": float("nan")})
                state.stop = m.diverged = True  # the reason: failure_reason, in _finish
                leaving.append(r)
                continue
            record = {"epoch": epoch, "lr": m.schedule(epoch * m.steps)[0],
                      "train_loss": total_loss / seen, "train_accuracy": total_correct / seen}
            if len(m.val_rows):
                record["val_loss"], record["val_accuracy"] = val[0][r], val[1][r]
            m.history.append(record)
            for hook in m.hooks:  # fit's EpochFunction (pruning), then its EarlyStopping
                hook.on_epoch_end(state, record)
            if m.early is not None and m.early.best_epoch == epoch:
                improved.append(r)
            if state.stop or epoch == m.cfg.train.epochs:
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
        state = m.state
        if m.early is None:
            best_epoch = len(m.history)
        else:  # as fit(): the epochs, when no epoch ever improved
            best_epoch = m.early.best_epoch if best else m.cfg.train.epochs
        result = FitResult(
            model=m.model.eval(),
            history=m.history,
            best_epoch=best_epoch,
            stopped_early=state.stop,
            train_index=m.fit_rows,
            val_index=m.val_rows,
            seconds=0.0,
            info={"steps_per_epoch": m.steps, "diverged": m.diverged, "pruned": state.pruned,
                  "stop_reason": state.stop_reason, "batched": True, "group_size": self.group_size},
        )
        if m.diverged:
            result.info["stop_reason"] = failure_reason(result)
        work.add_fit(m.model, self.sample_shape, len(m.fit_rows), len(m.history))  # the cost report's
        self.finished.append((m.index, result))


def _linear_views(w: torch.Tensor, b: torch.Tensor) -> tuple[bool, torch.Tensor, torch.Tensor]:
    """How :func:`_linear` reads ``w [M, out, in]`` and ``b [M, out]``.

    MKL's small batched GEMMs are up to 5x slower when the result has few columns (the classifier's
    ``out`` = n_classes), so a narrowing layer computes ``(w @ h^T)^T`` (the weight gradient in
    ``_backward`` is likewise ``g^T @ h``, ``[out, in]``)."""
    n_out, n_in = w.shape[1:]
    if n_out < n_in or n_out < 32:
        return True, w, b.unsqueeze(2)
    return False, w.transpose(1, 2), b.unsqueeze(1)


def _linear(h: torch.Tensor, narrow: bool, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``h @ w^T + b`` for ``h [M, R, in]``: one nn.Linear per model (views from :func:`_linear_views`)."""
    if narrow:
        return torch.baddbmm(b, w, h.transpose(1, 2)).transpose(1, 2).contiguous()
    return torch.baddbmm(b, h, w)


_ATEN = torch.ops.aten
# Each activation's backward, as autograd computes it: fn(grad, input, output).
_ACT_BACKWARD: dict[type, Callable] = {  # (g is a fresh tensor: relu's backward overwrites it)
    nn.ReLU: lambda m, g, z, a: _ATEN.threshold_backward.grad_input(g, a, 0, grad_input=g),
    nn.LeakyReLU: lambda m, g, z, a: _ATEN.leaky_relu_backward(g, z, m.negative_slope, False),
    nn.GELU: lambda m, g, z, a: _ATEN.gelu_backward(g, z, approximate=m.approximate),
    nn.Tanh: lambda m, g, z, a: _ATEN.tanh_backward(g, a),
    nn.Sigmoid: lambda m, g, z, a: _ATEN.sigmoid_backward(g, a),
    nn.SiLU: lambda m, g, z, a: _ATEN.silu_backward(g, z),
    nn.ELU: lambda m, g, z, a: _ATEN.elu_backward(g, m.alpha, 1, 1, False, z),
}


def _parse(model: nn.Sequential) -> tuple[list[dict], int, int] | None:
    """The stacked program of ``build_model``'s MLP: one op per layer, parameters as ``(lo, hi)`` ranges of
    a row of theta, weight matrices first (``[0, n_decayed)``: the ones weight decay and L1 apply to).
    None when the model has a layer this module cannot stack (its jobs then go to fit())."""
    ops: list[dict] = []
    for i, mod in enumerate(model):
        if isinstance(mod, Standardize | nn.Flatten | nn.Identity):
            continue  # inputs are flattened and standardised per model before the first layer
        if type(mod) is nn.Linear and mod.bias is not None:
            ops.append({"kind": "linear", "index": i})
        elif type(mod) is nn.LayerNorm and len(mod.normalized_shape) == 1 and mod.weight is not None \
                and mod.bias is not None:
            ops.append({"kind": "ln", "index": i, "eps": mod.eps})
        elif type(mod) is nn.BatchNorm1d and mod.affine and mod.track_running_stats \
                and mod.momentum is not None:
            ops.append({"kind": "bn", "index": i, "eps": mod.eps, "momentum": mod.momentum})
        elif type(mod) is nn.Dropout:
            ops.append({"kind": "dropout", "index": i})
        elif type(mod) in _ACT_BACKWARD and not getattr(mod, "inplace", False):
            backward = _ACT_BACKWARD[type(mod)]
            ops.append({"kind": "act", "index": i, "module": mod,
                        "backward": lambda g, z, a, m=mod, f=backward: f(m, g, z, a)})
        else:
            return None
    offset = 0
    for decayed in (True, False):
        for op in ops:
            mod = model[op["index"]]
            for name, p in mod.named_parameters():
                if decays(name, p) == decayed:
                    op.setdefault("params", {})[name] = (offset, offset + p.numel())
                    op["weight_shape"] = tuple(mod.weight.shape)
                    offset += p.numel()
        offset = -(-offset // _ALIGN) * _ALIGN  # each block starts on a boundary (see _ALIGN)
        if decayed:
            n_decayed = offset
    return ops, offset, n_decayed


__all__ = ["FitJob", "batch_key", "fit_many"]
