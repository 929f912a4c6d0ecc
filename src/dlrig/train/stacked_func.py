"""Many fits at once for the families the hand-written MLP stack (:mod:`dlrig.train.batched`) does not
cover -- CNNs, recurrent nets, transformers -- trained as one stacked model, on a CPU as on a GPU.

A recurrent net and a transformer body are *composite layers* (:mod:`dlrig.train.stacked_ops`): each runs
as one stacked function of its own module, :mod:`dlrig.train.stacked_rnn` (a batched time loop with a
hand-written backward) and :mod:`dlrig.train.stacked_attn` (attention over every model, row and head at
once); their dropout sites join the stack's. Measured per fit against fit() on one thread (6 digits fits):
GRU and plain RNN 1.3-1.8x, LSTM up to 256 steps x hidden size 1.4-2.2x (a larger LSTM trains with fit():
oneDNN's fused LSTM wins, 0.95x at the default hidden 64), transformer 1.3-1.5x (its time is matrix
products, which cost the same either way); the train stage's 41-fit search: bench/cnn_stacked.py --family.

Nested cross-validation trains a few configs on many (fold, seed) pairs. Models of one architecture are
stacked: every parameter is one tensor ``[M, ...]``, a view of the master copy ``theta [M, P]`` (row ``r``:
model ``r``); each layer runs once for all models (:func:`_forward`); autograd gives every model's gradient
from the sum of their losses (model ``r``'s loss depends on row ``r`` only); and one vectorised update moves
them all, each model with its own lr, weight decay, L1, betas or momentum and schedule (optim.py's
``adam_update`` / ``sgd_update`` with per-row scalars, as batched.py uses them). Optimizers without such a
rule (rmsprop, nadam, adagrad, adadelta, amsgrad, sgd with dampening) keep fit()'s own torch optimizer and
scheduler per model, over views of ``theta``.

The layers, laid out for a CPU (bench/cnn_stacked.py; the first version, ``vmap(grad(functional_call))``
with a torch optimizer per model, was 1.0x the per-fit loop in CPU time):

- a feature map holds every model's channels side by side, ``[W, M*C, H, W']`` in channels-last memory: a
  convolution is ONE grouped convolution (oneDNN; group ``r`` is model ``r``), pooling and activations act
  on all models at once. Channels-last matters: max-pooling a contiguous map is ~10x slower on this CPU;
- ReLU then max-pool runs as max-pool then ReLU (the same numbers forward and backward, a quarter of the
  work); dense layers are batched matrix products (MKL, one GEMM per model).

bench/cnn_stacked.py (digits CNN [16, 32], batch 64, one thread, 2 shared cores): a stack of 6 trains
~2.5-3x faster per fit than fit(), a lone fit (with its twin) ~1.6x; the train stage's 41 fits 2.1x in
CPU time (2.8x with select.run's up-front stacking forced on, which stacks the 5 outer refits too).
What is left per step is oneDNN's grouped convolutions and their backward, max-pool's backward, and
fresh pages for each step's activations (glibc hands large freed blocks back to the OS; raising its
trim / mmap thresholds gave 2.4x instead of 2.1x).

A model's bytes depend on its own job only (config, rows, seed), never on its stack mates, at one torch
thread: every batch is padded to ``min(batch_size, rows) + 1`` rows (fit()'s last-batch rule makes a batch
at most one row wider than ``batch_size``) whatever the stack, the padding repeats the model's own rows and
is masked out of the loss; every reduction is per model (a grouped convolution's group; one GEMM per model
in aligned layouts, stacked_ops.bmm; a bias gradient a sum over the model's own rows); a lone CNN trains
beside a twin of itself, because oneDNN takes another kernel for a one-group convolution (see
:func:`_conv`). tests/train/test_stacked_func.py: a job trained alone and in a stack of 4 with other
configs, rows and seeds gives ``torch.equal`` weights.
The fit cache keys a fit by its own config, rows and seed, so this is what lets the scorer stack them.
Dropout keeps it so (:func:`_dropout_mask`): each model draws its masks from its own generator, seeded
from ``SeedSequence([job.seed, 1])`` as batched.py seeds its, in blocks of its own padded width (rows) by
the layer's features, at every step (every model of a stack has a batch at every step); a model with
dropout 0 draws nothing and is multiplied by exactly 1. How many mates, their rates and rows never move a
model's generator. With more threads oneDNN and MKL split reductions by the stack's size: the bits then
depend on the stack.

Same training as :func:`dlrig.train.fit` for the subset supported here, step for step: the initial weights
(``build_model`` under ``torch.manual_seed(seed)``), the scaler (fitted on the job's rows), the batch order
(a generator seeded like fit's), the last-batch rule, the loss (cross-entropy with label smoothing, as
``training_loss`` builds it for these settings: the mean over the batch), L1 on weight matrices, the
schedule (``optim.schedule_at``) and the epoch records. Held to fit() to float tolerance, not bit for bit.
Dropout is inverted dropout as ``nn.Dropout`` (kept with probability ``1 - p``, scaled by ``1 / (1 - p)``;
none at prediction: the returned module is in eval mode) but its masks are not fit()'s (fit draws from the
global RNG): statistically the same training, not the same numbers (test_stacked_func.py: held-out
accuracy on digits as fit()'s, masks keeping ``1 - p``).

Supported (:func:`stack_key` is None otherwise, and the job trains with fit()): any config whose built
model has only the layers of ``_LAYERS`` and the composites' in an order :func:`_forward` knows (no batch
norm: its running statistics are per-model state this stack does not carry; convolutions
without groups or dilation; ``nn.Dropout`` only on flat features, where cnn.py and mlp.py put it -- after
Flatten and after each hidden dense layer -- and not in place: a dropout on a feature map or a Dropout2d
is refused), ``model.dropout`` (and a transformer's ``attention_dropout``) per model (a stack may mix
rates), every ``train`` key at its default but
epochs, batch_size, standardize and label_smoothing (shared by a stack), and no early stopping.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from functools import cache
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from dlrig.models import Standardize, build_model
from dlrig.params import MODEL_FAMILIES, FitConfig, OptimParams
from dlrig.train import work
from dlrig.train.batched import FitJob, batch_key, dropout_generator
from dlrig.train.fit import FitResult, fit, fit_standardizer, resolve_device, steps_per_epoch
from dlrig.train.optim import (
    adam_coefficients,
    adam_rows,
    add_weight_decay,
    build_optimizer,
    build_scheduler,
    decays,
    schedule_at,
    sgd_update,
)
from dlrig.train.stacked_attn import COMPOSITES as _ATTENTION
from dlrig.train.stacked_ops import Composite, layer_norm, linear
from dlrig.train.stacked_ops import Unsupported as _Unsupported
from dlrig.train.stacked_rnn import COMPOSITES as _RECURRENT

# may differ from the default (early_stopping: must be None, checked on its own)
_TRAIN_KEYS = ("epochs", "batch_size", "standardize", "label_smoothing", "early_stopping")
_ACTIVATIONS = (nn.ReLU, nn.GELU, nn.Tanh, nn.Sigmoid, nn.SiLU, nn.ELU, nn.LeakyReLU)
_LAYERS = (Standardize, nn.Flatten, nn.Identity, nn.Dropout, nn.Linear, nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d,
           nn.LayerNorm, nn.Sequential, *_ACTIVATIONS)

ManyEpochCallback = Callable[[int, dict[str, float]], bool | None]
# Modules that run as one stacked function (a recurrent net, a transformer body): their inner layers are
# theirs to run, and their own check says which of their options stack (stacked_ops.Composite).
_COMPOSITES: dict[type, Composite] = {**_RECURRENT, **_ATTENTION}


def _composite_names(model: nn.Module) -> list[str]:
    return [name for name, mod in model.named_modules() if type(mod) in _COMPOSITES]


def _inside(name: str, composites: list[str]) -> bool:
    return any(name.startswith(c + ".") for c in composites)


@cache
def _default_train() -> dict[str, Any]:
    return {k: v for k, v in FitConfig().train.model_dump().items() if k not in _TRAIN_KEYS}


def _layers_supported(model: nn.Module, sample_shape: tuple[int, ...]) -> bool:
    composites = _composite_names(model)
    for name, mod in model.named_modules():
        if _inside(name, composites):
            continue  # the composite's own check
        if type(mod) in _COMPOSITES:
            try:
                _COMPOSITES[type(mod)].check(mod, sample_shape)
            except _Unsupported:
                return False
            continue
        if type(mod) not in _LAYERS or getattr(mod, "inplace", False):
            return False
        if isinstance(mod, nn.Conv2d) and (mod.groups != 1 or tuple(mod.dilation) != (1, 1)
                                           or mod.padding_mode != "zeros" or isinstance(mod.padding, str)):
            return False
        if isinstance(mod, nn.Flatten) and (mod.start_dim, mod.end_dim) != (1, -1):
            return False
    return True


@cache
def _family_supported(model_json: str, sample_shape: tuple[int, ...], n_classes: int) -> bool:
    model = _template_json(model_json, sample_shape, n_classes)
    if not _layers_supported(model, sample_shape):
        return False
    # the model's own dropout, if any, run as the stack runs it: a dropout on a feature map is refused
    active = any(isinstance(m, nn.Dropout) and m.p > 0 for m in model.modules()) or any(
        rate > 0 for _, mod in _layers(model) if type(mod) in _COMPOSITES
        for rate in _COMPOSITES[type(mod)].dropouts(mod).values())
    try:  # a LayerNorm on a feature map, a pooling before any convolution: not a layout _forward knows
        _forward(_layers(model), {n: p.detach()[None] for n, p in model.named_parameters()},
                 {n: b[None] for n, b in model.named_buffers()}, torch.zeros(1, 2, *sample_shape),
                 (lambda _prefix, x: x) if active else None)
    except _Unsupported:
        return False
    return True


def stack_key(config: FitConfig, sample_shape: Sequence[int], n_classes: int) -> str | None:
    """What jobs must share to train as one stack here: the architecture but its dropout rates, and the
    ``train`` section (each model keeps its own optimizer, schedule and dropout rate); None: not supported,
    train with fit()."""
    if config.train.early_stopping is not None:
        return None
    train = {k: v for k, v in config.train.model_dump().items() if k not in _TRAIN_KEYS}
    if train != _default_train():
        return None
    model_json = config.model.model_dump_json()
    if not _family_supported(model_json, tuple(sample_shape), n_classes):
        return None
    # the dropout rates are per model (each row its own masks and rates), as in batched.py's _PER_MODEL;
    # a transformer's attention dropout too (stacked_attn reads each model's own rate)
    shared = config.model.model_dump() | {"dropout": None, "attention_dropout": None}
    return json.dumps([json.dumps(shared, sort_keys=True), config.train.model_dump_json()])


def stacks_here(device: str) -> bool:
    """Whether this module's stacks train here: on a GPU, or on a CPU at one torch thread. With more threads
    oneDNN and MKL split reductions by the stack's size, so a model's bits would depend on its stack."""
    return resolve_device(device).type == "cuda" or torch.get_num_threads() == 1


def trains_stacked(config: FitConfig, sample_shape: Sequence[int], n_classes: int) -> bool:
    """A config the hand-written MLP stack does not take (``batch_key`` None) and this module does."""
    return batch_key(config) is None and stack_key(config, sample_shape, n_classes) is not None


def _update_kind(o: OptimParams) -> str:
    """Which update a model takes: optim.py's vectorised rule (``sgd``, ``sgd-nesterov``, ``adam``,
    ``adamw``), or ``torch``: fit()'s own optimizer object, one per model."""
    if o.name == "sgd" and o.dampening == 0:
        return "sgd-nesterov" if o.nesterov else "sgd"
    if o.name in ("adam", "adamw") and not o.amsgrad:
        return o.name
    return "torch"


def fit_stacked(
    X: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    jobs: Sequence[FitJob],
    *,
    device: str = "cpu",
    on_epoch: ManyEpochCallback | None = None,
) -> list[FitResult]:
    """Train every job; results in job order, each as ``fit(X[job.train_index], ...)`` returns it (indices
    mapped back to rows of X, as :func:`dlrig.train.batched.fit_many` does). Jobs with the same
    :func:`stack_key`, steps per epoch, batch width and update rule train as one stack (which jobs share
    a stack changes no job's bytes; a lone CNN trains beside a twin of itself, whose result is dropped);
    the others with fit()."""
    X, y = np.asarray(X), np.asarray(y)
    results: list[FitResult | None] = [None] * len(jobs)
    groups: dict[tuple, list[int]] = {}
    for i, job in enumerate(jobs):
        key = stack_key(job.config, X.shape[1:], n_classes)
        if key is None:
            rows = np.asarray(job.train_index)
            callback = None if on_epoch is None else (lambda record, i=i: on_epoch(i, record))
            result = fit(X[rows], y[rows], n_classes, job.config, job.seed, device=device, on_epoch=callback)
            result.train_index, result.val_index = rows[result.train_index], rows[result.val_index]
            result.info["stacked"] = False
            results[i] = result
        else:
            n, bs = len(job.train_index), job.config.train.batch_size
            groups.setdefault((key, steps_per_epoch(n, bs), min(bs, n) + 1, _update_kind(job.config.optim)),
                              []).append(i)
    for members in groups.values():
        stack = [jobs[i] for i in members]
        if len(stack) == 1 and any(isinstance(m, nn.Conv2d) for m in _template(stack[0].config, X.shape[1:],
                                                                             n_classes).modules()):
            stack *= 2  # a twin: see _conv
        done = _Stack(X, y, n_classes, stack, members, device).run(on_epoch)
        for i, result in zip(members, done, strict=True):
            results[i] = result
    return results  # type: ignore[return-value]


@cache
def _template_json(model_json: str, sample_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """The family's architecture (its weights unused), built once."""
    spec = json.loads(model_json)  # the model section alone: FitConfig's cross-section rules (embed tokens
    # need train.standardize none) would refuse it beside the default train section
    return build_model(MODEL_FAMILIES[spec["name"]].model_validate(spec), sample_shape, n_classes)


def _template(config: FitConfig, sample_shape, n_classes: int) -> nn.Module:
    return _template_json(config.model.model_dump_json(), tuple(sample_shape), n_classes)


# ------------------------------------------------------------------------------------- the stacked forward
def _layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The leaf layers in forward order, with their parameter-name prefix (nested Sequentials unrolled;
    identities dropped; dropout kept whatever its rate: its rate is per model, see :func:`_forward`). ReLU
    then max-pool runs as max-pool then ReLU: the same numbers, forward and
    backward (ReLU is monotone, zero-gradient wherever it ties), on a quarter of the activations."""
    out: list[tuple[str, nn.Module]] = []
    composites = _composite_names(model)
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Sequential | nn.Identity) or _inside(name, composites):
            continue
        if isinstance(mod, nn.MaxPool2d) and out and type(out[-1][1]) is nn.ReLU:
            out.insert(len(out) - 1, (f"{name}.", mod))
            continue
        out.append((f"{name}." if name else "", mod))
    return out


def _forward(layers, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
             x: torch.Tensor, dropout: Callable[[str, torch.Tensor], torch.Tensor] | None = None
             ) -> torch.Tensor:
    """Every model's logits ``[M, W, K]`` for its batch ``x [M, W, *sample]``; ``params`` / ``buffers`` by
    the model's own names, each ``[M, ...]``. ``dropout(prefix, x)`` applies the dropout layer at
    ``prefix`` to a flat ``x [M, W, F]`` (training with some model's rate > 0); None: every dropout layer
    is the identity (evaluation, or no model of the stack drops anything: no draw, no multiply).

    A feature map holds every model's channels side by side, ``[W, M*C, H, W']`` in channels-last memory:
    a convolution is ONE grouped convolution (group ``r``: model ``r``), pooling and activations act on
    every model at once."""
    M, W = x.shape[:2]
    layout = "flat" if x.dim() == 3 else "models"  # models: [M, W, C, H, W']; grouped: [W, M*C, H, W']
    for prefix, mod in layers:
        if isinstance(mod, Standardize):  # (x - mean) / scale, as the layer computes it
            x = (x - buffers[prefix + "mean"].unsqueeze(1)) / buffers[prefix + "scale"].unsqueeze(1)
        elif isinstance(mod, nn.Conv2d):
            if layout == "flat":
                raise _Unsupported("conv2d on a flat input")
            weight, bias = params[prefix + "weight"], params.get(prefix + "bias")
            x, layout = _conv(_grouped(x) if layout == "models" else x, mod, weight, bias), "grouped"
        elif isinstance(mod, nn.MaxPool2d | nn.AvgPool2d):
            if layout == "flat":
                raise _Unsupported("pooling a flat input")
            x, layout = mod(_grouped(x) if layout == "models" else x), "grouped"  # channels-last in and out
        elif isinstance(mod, nn.Flatten):
            if layout == "grouped":  # [W, M*C, H, W'] -> [M, W, C*H*W'] in torch's (C, H, W) order
                C, H, Wd = x.shape[1] // M, *x.shape[2:]
                x = x.permute(0, 2, 3, 1).reshape(W, H, Wd, M, C).permute(3, 0, 4, 1, 2)
            x, layout = x.reshape(M, W, -1), "flat"
        elif isinstance(mod, nn.Linear):
            if layout != "flat":
                raise _Unsupported("linear on a map")
            x = linear(x, params[prefix + "weight"], params.get(prefix + "bias"))  # stack-invariant bits
        elif isinstance(mod, nn.LayerNorm):
            if layout != "flat":
                raise _Unsupported("layer norm on a map")
            x = layer_norm(x, mod, params.get(prefix + "weight"), params.get(prefix + "bias"))
        elif type(mod) in _COMPOSITES:  # [M, W, *sample] (or flat) -> [M, W, F]
            if layout == "grouped":
                raise _Unsupported(f"{type(mod).__name__} after a convolution")
            x, layout = _COMPOSITES[type(mod)].forward(mod, prefix, params, buffers, x, dropout), "flat"
        elif isinstance(mod, _ACTIVATIONS):
            x = mod(x)  # element-wise: any layout
        elif isinstance(mod, nn.Dropout):
            if dropout is None:
                continue
            if layout != "flat":  # cnn.py drops out only in the dense head; a map's masks are not drawn here
                raise _Unsupported("dropout on a map")
            x = dropout(prefix, x)
        else:  # identities are not in _layers
            raise _Unsupported(type(mod).__name__)
    if layout != "flat":
        raise _Unsupported("no flatten before the output")
    return x


def _grouped(x: torch.Tensor) -> torch.Tensor:
    """``[M, W, C, H, W']`` -> ``[W, M*C, H, W']`` channels-last (one copy; ``contiguous`` is not
    redundant: with one channel the reshape is a view whose strides oneDNN does not take as channels-last,
    and its convolution is then 4x slower)."""
    M, W, C, H, Wd = x.shape
    return x.permute(1, 0, 2, 3, 4).reshape(W, M * C, H, Wd).contiguous(memory_format=torch.channels_last)


def _conv(x: torch.Tensor, mod: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``mod``'s convolution of every model's map ``x [W, M*C, H, W']``, as one convolution with a group per
    model (oneDNN's grouped kernel on a CPU: group ``r``'s numbers are the same for any number of groups
    from 2 up). With ONE group oneDNN takes another kernel, whose last bits differ for some input widths
    (1, 3, 8 channels), so a lone CNN trains beside a twin of itself (:func:`fit_stacked`): a model's bits
    must not depend on whether it trains alone."""
    M, n_out = weight.shape[:2]
    w = weight.reshape(M * n_out, *weight.shape[2:]).contiguous(memory_format=torch.channels_last)
    b = None if bias is None else bias.reshape(M * n_out)
    out = F.conv2d(x, w, b, mod.stride, mod.padding, groups=M)
    # channels-last out: pooling is ~10x faster so (oneDNN returns some maps contiguous)
    return out.contiguous(memory_format=torch.channels_last)


def _dropout_mask(gens: Sequence[torch.Generator], keeps: Sequence[float], shape: tuple[int, ...],
                  device: torch.device) -> torch.Tensor:
    """Inverted-dropout multipliers ``[M, *shape]`` as ``nn.Dropout`` makes them: kept with probability
    ``keep``, scaled by ``1 / keep``. Model ``r`` draws ``shape`` (its own padded batch width, which its
    own config and rows fix, times the layer's features) from its own generator ``gens[r]``; a model with
    ``keep == 1`` draws nothing and multiplies by exactly 1. So a model's masks never depend on its stack
    mates: not on their number, rates or rows."""
    mask = torch.ones(len(gens), *shape, device=device)
    for r, (gen, keep) in enumerate(zip(gens, keeps, strict=True)):
        if keep < 1:
            mask[r] = (torch.rand(shape, generator=gen, device=device) < keep) / keep
    return mask


# ------------------------------------------------------------------------------------------------ the stack
class _Stack:
    """The models of one group: parameters ``theta [M, P]`` (weight matrices and kernels first, the
    columns weight decay and L1 touch), gradients ``grad [M, P]``, one row per model."""

    def __init__(self, X, y, n_classes, jobs: list[FitJob], positions: list[int], device: str) -> None:
        self.start = time.perf_counter()
        self.dev = dev = resolve_device(device)
        self.jobs, self.positions = jobs, positions
        self.tcfg = tcfg = jobs[0].config.train  # shared by the stack (stack_key)
        self.kind = _update_kind(jobs[0].config.optim)  # shared (fit_stacked's groups)
        self.sample_shape = X.shape[1:]
        n = len(jobs[0].train_index)
        self.steps, self.bs = steps_per_epoch(n, tcfg.batch_size), min(tcfg.batch_size, n)
        self.width = self.bs + 1  # own config and rows only: never the stack's widest batch
        self.models, self.rows, self.gens = [], [], []
        for job in jobs:
            local = np.asarray(job.train_index)
            torch.manual_seed(job.seed)  # as fit(): build_model draws the initial weights from it
            mean, scale = fit_standardizer(X[local], tcfg.standardize)
            model = build_model(job.config.model, X.shape[1:], n_classes)
            model[0].mean.copy_(torch.from_numpy(mean))
            model[0].scale.copy_(torch.from_numpy(scale))
            self.models.append(model.train())
            self.gens.append(torch.Generator().manual_seed(job.seed))  # fit's batch order
            self.rows.append(local)
        M = len(jobs)
        template = self.models[0]
        named = list(template.named_parameters())
        # decayed parameters first (optim.decays): weight decay and L1 act on the columns [:nd]
        order = sorted(range(len(named)), key=lambda j: not decays(*named[j]))
        self.names = [named[j][0] for j in order]
        self.shapes = [named[j][1].shape for j in order]
        sizes = [s.numel() for s in self.shapes]
        self.offsets = np.cumsum([0, *sizes]).tolist()
        self.nd = sum(size for j, size in zip(order, sizes, strict=True) if decays(*named[j]))
        with torch.no_grad():
            own = [dict(m.named_parameters()) for m in self.models]
            self.theta = torch.stack([torch.cat([p[k].reshape(-1) for k in self.names]) for p in own])
            self.theta = self.theta.to(dev)
        self.grad = torch.zeros_like(self.theta)
        # leaves of the autograd graph: views of theta (the update moves them in place)
        self.leaves = [self.theta[:, a:b].view(M, *shape).detach().requires_grad_()
                       for a, b, shape in zip(self.offsets, self.offsets[1:], self.shapes, strict=False)]
        self.params = dict(zip(self.names, self.leaves, strict=True))
        self.buffers = {k: torch.stack([dict(m.named_buffers())[k] for m in self.models]).to(dev)
                        for k, _ in template.named_buffers()}
        self.layers = _layers(template)
        # dropout: each model's keep probability per dropout layer (its own built module's rate) and its
        # own mask generator, seeded from its job alone as batched.py seeds them (never fit's global RNG)
        self.keeps = {prefix: [1 - m.get_submodule(prefix[:-1]).p for m in self.models]
                      for prefix, mod in self.layers if isinstance(mod, nn.Dropout)}
        for prefix, mod in self.layers:  # the dropouts inside a composite layer, each model's own rates
            if type(mod) in _COMPOSITES:
                rates = [_COMPOSITES[type(mod)].dropouts(m.get_submodule(prefix[:-1])) for m in self.models]
                self.keeps |= {prefix + site: [1 - r[site] for r in rates] for site in rates[0]}
        self.dropping = any(k < 1 for ks in self.keeps.values() for k in ks)
        self.dropout_gens = [dropout_generator(job.seed, dev) for job in jobs]
        self.X, self.y = torch.as_tensor(X, device=dev), torch.as_tensor(y, device=dev)
        optims = [job.config.optim for job in jobs]
        column = lambda values: torch.tensor(values, dtype=torch.float32, device=dev).unsqueeze(1)  # noqa: E731
        l1 = [o.l1 for o in optims]
        self.l1 = column(l1) if any(l1) else None
        wd = [o.weight_decay for o in optims]
        self.l2 = column(wd) if any(wd) else None
        self.moments = [torch.zeros_like(self.theta) for _ in range(1 if self.kind.startswith("sgd") else 2)]
        self.optimizers, self.schedulers = [], []
        if self.kind == "torch":  # fit()'s own optimizer per model, over views of its row of theta
            for r, (model, job) in enumerate(zip(self.models, jobs, strict=True)):
                params = self._row_parameters(model, r)
                optimizer = build_optimizer(model, job.config.optim)
                self.optimizers.append((optimizer, params))
                self.schedulers.append(build_scheduler(optimizer, job.config.schedule, job.config.optim.lr,
                                                       tcfg.epochs, self.steps))

    def _row_parameters(self, model: nn.Module, r: int) -> list[torch.Tensor]:
        """Rebind ``model``'s parameters to views of row ``r`` of theta (what torch's optimizer moves)."""
        out = []
        for k, a, b, shape in zip(self.names, self.offsets, self.offsets[1:], self.shapes, strict=False):
            owner, _, leaf = k.rpartition(".")
            p = nn.Parameter(self.theta[r, a:b].view(shape))  # shares theta's storage
            model.get_submodule(owner)._parameters[leaf] = p
            out.append(p)
        return out

    def _dropout(self, prefix: str, x: torch.Tensor) -> torch.Tensor:
        """The dropout layer at ``prefix`` on ``x [M, W, ...]`` in training (see :func:`_dropout_mask`)."""
        keeps = self.keeps[prefix]
        if all(k == 1 for k in keeps):
            return x
        return x * _dropout_mask(self.dropout_gens, keeps, tuple(x.shape[1:]), x.device)

    def _schedule(self, r: int, k: int) -> tuple[float, float | None]:
        cfg = self.jobs[r].config
        return schedule_at(cfg.schedule, cfg.optim.lr, k, self.tcfg.epochs, self.steps)

    # ------------------------------------------------------------------------------------- one epoch
    def _plan(self) -> tuple[torch.Tensor, torch.Tensor, list[list[int]]]:
        """This epoch's batches, fit()'s order per model: row ids ``[S, M*W]``, mask ``[S, M, W]``, real rows
        ``[S][M]``. Padding repeats the model's own first row of the batch (masked out of the loss)."""
        M, S, W, bs = len(self.rows), self.steps, self.width, self.bs
        index = np.zeros((S, M, W), np.int64)
        mask = np.zeros((S, M, W), np.float32)
        counts = [[0] * M for _ in range(S)]
        for r, (local, gen) in enumerate(zip(self.rows, self.gens, strict=True)):
            perm = local[torch.randperm(len(local), generator=gen).numpy()]
            for s in range(S):
                part = perm[s * bs : (s + 1) * bs] if s < S - 1 else perm[s * bs :]
                index[s, r, :] = part[0]
                index[s, r, : len(part)] = part
                mask[s, r, : len(part)] = 1.0
                counts[s][r] = len(part)
        return (torch.from_numpy(index.reshape(S, M * W)).to(self.dev), torch.from_numpy(mask).to(self.dev),
                counts)

    def _tables(self, epoch: int) -> torch.Tensor | None:
        """Per-step scalars of every model, in double on the host as torch computes them, rounded to float32
        as its kernels do: adam ``[S, 7, M, 1]`` (optim.adam_coefficients), sgd ``[S, 2, M, 1]`` (momentum,
        -lr)."""
        if self.kind == "torch":
            return None
        M, S = len(self.jobs), self.steps
        table = np.empty((S, 7 if self.kind.startswith("adam") else 2, M), np.float64)
        for r, job in enumerate(self.jobs):
            o = job.config.optim
            for s in range(S):
                k = (epoch - 1) * S + s
                lr, cycled = self._schedule(r, k)
                if self.kind.startswith("adam"):
                    beta1 = o.beta1 if cycled is None else cycled
                    table[s, :, r] = adam_coefficients(lr, beta1, o.beta2, o.eps, o.weight_decay, k + 1)
                else:
                    table[s, :, r] = (o.momentum if cycled is None else cycled, -lr)
        return torch.from_numpy(table).to(torch.float32).unsqueeze(-1).to(self.dev)

    def _update(self, t: torch.Tensor | None) -> None:
        """One optimizer step of every model, in fit()'s order: L1 gradient, then the optimizer's step."""
        theta, g, nd = self.theta, self.grad, self.nd
        if self.l1 is not None:  # d/dW of l1 * |W| (weight matrices), as fit's objective adds it
            g[:, :nd].addcmul_(theta[:, :nd].sign(), self.l1)
        if self.kind == "torch":
            for (optimizer, params), scheduler, r in zip(self.optimizers, self.schedulers, range(len(g)),
                                                         strict=True):
                for p, a, b in zip(params, self.offsets, self.offsets[1:], strict=False):
                    p.grad = g[r, a:b].view(p.shape)
                optimizer.step()
                scheduler.step()
        elif self.kind.startswith("sgd"):  # torch.optim.SGD, single-tensor path
            momentum, neg_lr = t.unbind()
            if self.l2 is not None:
                add_weight_decay(g[:, :nd], theta[:, :nd], self.l2)
            sgd_update(theta, g, self.moments[0], momentum, neg_lr, nesterov=self.kind == "sgd-nesterov")
        else:  # torch.optim.Adam / AdamW, single-tensor path
            adam_rows(theta, g, self.moments, t.unbind(), self.l2, nd, decoupled=self.kind == "adamw")

    def run(self, on_epoch: ManyEpochCallback | None) -> list[FitResult]:
        M, W, S = len(self.jobs), self.width, self.steps
        smoothing = self.tcfg.label_smoothing
        histories: list[list[dict[str, float]]] = [[] for _ in range(M)]
        done: dict[int, FitResult] = {}
        for epoch in range(1, self.tcfg.epochs + 1):
            index, mask, counts = self._plan()
            tables = self._tables(epoch)
            count = mask.sum(-1)  # [S, M] real rows
            losses = torch.zeros(S, M)
            correct = torch.zeros(S, M, dtype=torch.int64)
            for s in range(S):
                xb = self.X.index_select(0, index[s]).view(M, W, *self.sample_shape)
                yb = self.y.index_select(0, index[s]).view(M, W)
                logits = _forward(self.layers, self.params, self.buffers, xb,
                                  self._dropout if self.dropping else None)
                per_row = F.cross_entropy(logits.reshape(M * W, -1), yb.reshape(-1), reduction="none",
                                          label_smoothing=smoothing).view(M, W)
                loss = (per_row * mask[s]).sum(1) / count[s]  # each model's mean over its real rows
                grads = torch.autograd.grad(loss.sum(), self.leaves)  # the sum's gradient: each its own
                with torch.no_grad():
                    torch.cat([gr.reshape(M, -1) for gr in grads], dim=1, out=self.grad)
                    self._update(None if tables is None else tables[s])
                    losses[s] = loss.detach().cpu()
                    correct[s] = ((logits.argmax(-1) == yb) & (mask[s] > 0)).sum(1).cpu()
            for r in range(len(self.positions)):  # the models, not a twin (fit_stacked)
                if r in done:
                    continue
                # the same float64 sum, in the same order, as fit(): batch loss x batch rows
                total = sum(float(losses[s, r]) * counts[s][r] for s in range(S))
                seen = sum(counts[s][r] for s in range(S))
                if not math.isfinite(total):
                    histories[r].append({"epoch": epoch, "train_loss": float("nan")})
                    why = f"diverged: non-finite training loss in epoch {epoch}"
                    done[r] = self._result(r, histories[r], why)
                    continue
                lr = (self.optimizers[r][0].param_groups[0]["lr"] if self.kind == "torch"
                      else self._schedule(r, epoch * S)[0])
                record = {"epoch": epoch, "lr": lr, "train_loss": total / seen,
                          "train_accuracy": int(correct[:, r].sum()) / seen}
                histories[r].append(record)
                if on_epoch is not None:
                    on_epoch(self.positions[r], record)
            if len(done) == len(self.positions):
                break
        out = [done.get(r) or self._result(r, histories[r], None) for r in range(len(self.positions))]
        for result in out:
            result.seconds = (time.perf_counter() - self.start) / len(out)
        return out

    def _result(self, r: int, history, stop_reason: str | None) -> FitResult:
        """Model ``r`` as fit() returns it: its own module, with a copy of its row of theta (a diverged
        model's row keeps moving in the running stack)."""
        model = self.models[r]
        with torch.no_grad():
            for k, a, b, shape in zip(self.names, self.offsets, self.offsets[1:], self.shapes, strict=False):
                owner, _, leaf = k.rpartition(".")
                own = self.theta[r, a:b].view(shape).cpu().clone()
                model.get_submodule(owner)._parameters[leaf] = nn.Parameter(own)
        model = model.cpu().eval()
        rows = self.rows[r]
        work.add_fit(model, tuple(self.sample_shape), len(rows), len(history))
        return FitResult(
            model=model,
            history=history,
            best_epoch=len(history),
            stopped_early=stop_reason is not None,
            train_index=np.asarray(rows),
            val_index=np.asarray(rows)[:0],
            seconds=0.0,
            info={"steps_per_epoch": self.steps, "diverged": stop_reason is not None, "pruned": False,
                  "stop_reason": stop_reason, "batched": True, "stacked": "stacked_func",  # this trainer
                  "group_size": len(self.positions)},
        )


__all__ = ["fit_stacked", "stack_key", "stacks_here", "trains_stacked"]
