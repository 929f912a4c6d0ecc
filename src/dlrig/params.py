"""params.yaml as typed, validated models: the experiment, refused early when it is wrong.

Every section forbids unknown keys and checks types and ranges, so a typo such as ``optim.lr: -1`` or
``model.hiden`` stops a stage before any work with one line:

    params.yaml: optim.lr must be > 0 (got -1)

Stage code reads params only through :func:`load_params`; the library takes the section models (or plain
values) it needs, never the YAML file.
"""

from __future__ import annotations

import re
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, field_validator, model_validator

from dlrig.errors import UserError

# YAML 1.1 (PyYAML) reads ``1e-3`` as a string; YAML 1.2 (ruamel, which DVC uses to write params) reads
# it as a float. Accept both spellings so a hand-written ``lr: 1e-3`` means what it says.
_FLOAT_RE = re.compile(
    r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)"
    r"|\.[0-9_]+(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` as a float."""


_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:float"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.copy().items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_RE, list("-+0123456789."))

# Integers and booleans are strict: ``epochs: 2.5`` or ``nesterov: 1`` is a mistake, not a request.
Int = Annotated[int, Strict()]
Bool = Annotated[bool, Strict()]
PosInt = Annotated[int, Strict(), Field(ge=1)]
PosFloat = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(ge=0, lt=1)]


class Section(BaseModel):
    # Floats are finite: ``lr: .inf`` or ``rate: .nan`` is refused here, not by a traceback mid-training.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


# ------------------------------------------------------------------------------------------- labels
class NoiseParams(Section):
    kind: Literal["none", "symmetric", "pairflip", "asymmetric"] = "none"
    rate: Annotated[float, Field(ge=0, le=1)] = 0.0
    mapping: dict[int, int] | None = None  # asymmetric: class -> class it is mistaken for


class ImbalanceParams(Section):
    profile: Literal["none", "step", "linear", "exponential"] = "none"
    ratio: Annotated[float, Field(ge=1)] = 1.0
    minority: list[Int] | None = None


class DetectParams(Section):
    enabled: Bool = True
    n_splits: Annotated[int, Strict(), Field(ge=2)] = 3
    ambiguity_threshold: Annotated[float, Field(gt=0, le=1)] = 0.5


class LabelsParams(Section):
    noise: NoiseParams = Field(default_factory=NoiseParams)
    imbalance: ImbalanceParams = Field(default_factory=ImbalanceParams)
    detect: DetectParams = Field(default_factory=DetectParams)


# --------------------------------------------------------------------------------------------- data
class CsvParams(Section):
    label_column: str = "label"
    delimiter: str = Field(",", min_length=1, max_length=1)


class ImageParams(Section):
    size: list[PosInt] = Field(default_factory=lambda: [28, 28], min_length=2, max_length=2)
    grayscale: Bool = True


class SyntheticParams(Section):
    n_samples: PosInt = 600
    n_classes: Annotated[int, Strict(), Field(ge=2)] = 3
    n_features: PosInt = 20
    image_side: Annotated[int, Strict(), Field(ge=0)] = 0  # >0: images [N,1,side,side], else a table
    class_sep: PosFloat = 1.5
    noise: Annotated[float, Field(ge=0)] = 1.0


class MnistParams(Section):
    use_official_test: Bool = True  # the t10k files are the test split (split.test_size is then unused)


class AddingParams(Section):
    """The adding problem (Hochreiter & Schmidhuber 1997; Le et al. 2015) as a two-class task."""

    n_samples: PosInt = 2000
    length: Annotated[int, Strict(), Field(ge=2)] = 50  # T time steps; one marker in each half


class ModularParams(Section):
    """data.source modular: every pair (a, b) in 0..p-1 with the label (a op b) mod p (the grokking task)."""

    p: Annotated[int, Strict(), Field(ge=2, le=1000)] = 59  # p * p rows and p classes
    op: Literal["add", "sub", "mul", "div"] = "add"  # div: a * b^-1 mod p over b != 0 (needs a prime p)

    @model_validator(mode="after")
    def _prime_for_div(self) -> ModularParams:
        if self.op == "div" and any(self.p % k == 0 for k in range(2, int(self.p**0.5) + 1)):
            raise ValueError(f"p must be prime for op div (got {self.p}: b has no inverse mod p)")
        return self


class DataParams(Section):
    source: Literal["digits", "csv", "imagefolder", "mnist", "synthetic", "adding", "modular"] = "digits"
    path: str = "data/raw/input"
    csv: CsvParams = Field(default_factory=CsvParams)
    image: ImageParams = Field(default_factory=ImageParams)
    mnist: MnistParams = Field(default_factory=MnistParams)
    synthetic: SyntheticParams = Field(default_factory=SyntheticParams)
    adding: AddingParams = Field(default_factory=AddingParams)
    modular: ModularParams = Field(default_factory=ModularParams)


# ----------------------------------------------------------------------------------------- validate
class ValidateParams(Section):
    on_failure: Literal["error", "warn"] = "error"
    min_per_class: PosInt = 10
    value_min: float | None = None
    value_max: float | None = None
    labels: list[Int] | None = None
    sample_shape: list[PosInt] | None = None
    max_duplicate_fraction: Annotated[float, Field(ge=0, le=1)] = 1.0

    @model_validator(mode="after")
    def _range_ordered(self) -> ValidateParams:
        if self.value_min is not None and self.value_max is not None and self.value_min > self.value_max:
            raise ValueError(
                f"value_min must be <= value_max (got {self.value_min} > {self.value_max})"
            )
        return self


# -------------------------------------------------------------------------------------------- split
class SplitParams(Section):
    test_size: Annotated[float, Field(gt=0, lt=1)] = 0.2
    duplicates: Literal["remove", "refuse", "keep"] = "remove"
    group_column: str | None = None  # csv only: rows sharing a value stay on one side of every split


# -------------------------------------------------------------------------------------------- model
# One params class per model family, chosen by ``model.name`` (a discriminated union): a key the chosen
# family does not have is refused with a line naming the family's keys. Adding a family = its builder
# module in ``dlrig.models`` + its class here + its tests.
Activation = Literal["relu", "gelu", "tanh", "leaky_relu", "elu", "silu", "sigmoid"]
Init = Literal[
    "default", "kaiming_normal", "kaiming_uniform", "xavier_normal", "xavier_uniform", "orthogonal",
    "normal",  # N(0, 1) weights whatever the width: the textbook way to make gradients explode
]


class ModelBase(Section):
    """Keys every family has."""

    name: str  # each family narrows it to its own literal (the union's tag); declared here to come first
    activation: Activation = "relu"
    dropout: Fraction = 0.1
    norm: Literal["none", "batch", "layer"] = "none"
    norm_momentum: Annotated[float, Field(gt=0, le=1)] = 0.1  # batch norm running-stat update (torch's)
    norm_eps: PosFloat = 1e-5  # added to the variance by batch and layer norm (torch's default)
    init: Init = "default"
    # mlp only: x + block(x) around every hidden block after the first (same width in and out). A key of
    # every family, so a params.yaml that spells it out still switches family with -S model.name=...
    residual: Bool = False

    @model_validator(mode="after")
    def _residual_is_mlp_only(self) -> ModelBase:
        if self.residual and self.name != "mlp":
            raise ValueError(f"residual is for model.name=mlp only (the {self.name} family has no such "
                             "option)")
        return self


class MlpParams(ModelBase):
    name: Literal["mlp"] = "mlp"
    hidden: PosInt = 256
    depth: PosInt = 2


class CnnParams(ModelBase):
    name: Literal["cnn"] = "cnn"
    hidden: PosInt = 256  # width of the dense head
    depth: PosInt = 2  # dense layers after the conv blocks, the output layer included
    channels: list[PosInt] = Field(default_factory=lambda: [16, 32], min_length=1)
    kernel_size: PosInt = 3
    # Geometry (defaults = the original CNN: stride 1, 'same' padding, 2x2 max-pool after each block while
    # the map is at least 2 * pool_size wide). stride: one value for every conv, or one per channels entry.
    # stride and padding take two kinds of value; they are checked in _odd_kernel (one readable line each,
    # where a typed union would report one error per branch).
    stride: Any = 1  # an integer >= 1, or a list of them, one per channels entry
    padding: Any = "same"  # 'same' (kernel_size // 2, stride 1 only) or an integer >= 0
    pooling: Literal["max", "avg", "none"] = "max"
    pool_size: Annotated[int, Strict(), Field(ge=2)] = 2

    @model_validator(mode="after")
    def _odd_kernel(self) -> CnnParams:
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (got {self.kernel_size})")
        strides = self.stride if isinstance(self.stride, list) else [self.stride]
        if not strides or not all(type(v) is int and v >= 1 for v in strides):
            raise ValueError(f"stride must be an integer >= 1 or a list of them, one per channels entry "
                             f"(got {self.stride!r})")
        if isinstance(self.stride, list) and len(self.stride) != len(self.channels):
            raise ValueError(f"stride must be one value or one per channels entry "
                             f"(got {len(self.stride)} strides for {len(self.channels)} channels)")
        if self.padding != "same" and not (type(self.padding) is int and self.padding >= 0):
            raise ValueError(f"padding must be 'same' or an integer >= 0 (got {self.padding!r})")
        if self.padding == "same" and max(strides) > 1:
            raise ValueError(f"padding 'same' needs stride 1 (torch refuses it with strides; got stride "
                             f"{self.stride}): give padding as an integer, e.g. {self.kernel_size // 2}")
        return self


class TransformerParams(ModelBase):
    """A transformer encoder over tokens cut from each sample, pooled into one vector for the classifier."""

    name: Literal["transformer"] = "transformer"
    d_model: PosInt = 64  # width of every token inside the encoder
    heads: PosInt = 4  # attention heads; each sees d_model / heads dimensions
    layers: PosInt = 2  # encoder layers
    decoder_layers: Annotated[int, Strict(), Field(ge=0)] = 0  # > 0 only for dlrig.models.seq2seq
    ff_size: PosInt = 128  # hidden width of each layer's feed-forward block
    attention_dropout: Fraction = 0.1  # on the attention weights (dropout: on the residual/feed-forward)
    norm_first: Bool = True  # pre-norm (LayerNorm before attention): trains stably without warm-up
    positional: Literal["learned", "sinusoidal", "none"] = "learned"
    pooling: Literal["cls", "mean"] = "mean"  # a class token's output, or the mean over tokens
    tokens: Literal["rows", "patches", "embed"] = "rows"  # how a sample becomes tokens (models/transformer)
    patch_size: PosInt = 4  # tokens: patches, non-overlapping p x p patches
    vocab_size: PosInt | None = None  # tokens: embed, integer codes 0 .. vocab_size-1
    # Like the cnn's: a dense head after the read-out, so the mlp's hidden/depth in params.yaml carry over
    # when `-S model.name=...` switches family. depth counts the output layer: 1 = read-out -> output.
    hidden: PosInt = 128  # width of the head's hidden layers (used when depth > 1)
    depth: PosInt = 1  # dense layers after the read-out, the output layer included

    @model_validator(mode="after")
    def _heads_divide(self) -> TransformerParams:
        if self.d_model % self.heads:
            raise ValueError(f"heads must divide d_model (got heads {self.heads}, d_model {self.d_model})")
        if self.tokens == "embed" and self.vocab_size is None:
            raise ValueError("vocab_size is required with tokens: embed (the number of integer codes)")
        return self


class RnnParams(ModelBase):
    """A recurrent net reading each sample as a sequence (:mod:`dlrig.models.rnn`)."""

    name: Literal["rnn"] = "rnn"
    activation: Activation = "tanh"  # cell rnn: its nonlinearity (tanh | relu); lstm/gru gates are fixed
    cell: Literal["rnn", "lstm", "gru"] = "lstm"
    hidden_size: PosInt = 64
    layers: PosInt = 1
    bidirectional: Bool = False
    sequence: Literal["rows", "pixels"] = "rows"
    readout: Literal["last", "mean"] = "last"
    # Like the cnn's: a dense head after the read-out, so the mlp's hidden/depth in params.yaml carry over
    # when `-S model.name=...` switches family. depth counts the output layer: 1 = read-out -> output.
    hidden: PosInt = 128  # width of the head's hidden layers (used when depth > 1)
    depth: PosInt = 1  # dense layers after the read-out, the output layer included

    @model_validator(mode="after")
    def _rnn_nonlinearity(self) -> RnnParams:
        if self.cell == "rnn" and self.activation not in {"tanh", "relu"}:
            raise ValueError(f"activation must be 'tanh' or 'relu' with cell=rnn (torch.nn.RNN's "
                             f"nonlinearity; got {self.activation!r})")
        return self


MODEL_FAMILIES: dict[str, type[ModelBase]] = {
    "mlp": MlpParams, "cnn": CnnParams, "transformer": TransformerParams, "rnn": RnnParams,
}
ModelParams = Annotated[MlpParams | CnnParams | TransformerParams | RnnParams, Field(discriminator="name")]


def family_keys(name: str) -> list[str]:
    """The keys of one family, ``name`` first (for error messages and the docs)."""
    return ["name", *(k for k in MODEL_FAMILIES[name].model_fields if k != "name")]


def _classifier_checks(model: ModelBase, train: Any) -> None:
    """What the classification pipeline cannot do with a valid model section (FitConfig and Params)."""
    if getattr(model, "decoder_layers", 0):
        raise ValueError(f"model.decoder_layers is for sequence-to-sequence tasks (dlrig.models.seq2seq); "
                         f"the pipeline classifies, one label per sample: set it to 0 "
                         f"(got {model.decoder_layers})")
    if getattr(model, "tokens", None) == "embed" and train.standardize != "none":
        raise ValueError(f"train.standardize must be none with model.tokens: embed (the embedding looks up "
                         f"integer codes; standardising would shift them; got {train.standardize!r})")


def _default_family(value: Any) -> Any:
    """A model section without ``name`` is an mlp (the discriminated union needs the tag to pick)."""
    if isinstance(value, dict) and "name" not in value:
        return {"name": "mlp", **value}
    return value


# -------------------------------------------------------------------------------------------- optim
class OptimParams(Section):
    name: Literal["sgd", "adam", "adamw", "rmsprop", "adagrad", "adadelta", "nadam"] = "adam"
    lr: PosFloat = 1e-3
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    l1: Annotated[float, Field(ge=0)] = 0.0
    momentum: Fraction = 0.9
    nesterov: Bool = False
    beta1: Fraction = 0.9
    beta2: Fraction = 0.999
    eps: PosFloat = 1e-8  # every optimizer but sgd (adam, adamw, nadam, rmsprop, adagrad, adadelta)
    alpha: Fraction = 0.99
    rho: Fraction = 0.9
    # Each optimizer's remaining knobs, torch's defaults (unused by the other optimizers):
    dampening: Annotated[float, Field(ge=0, le=1)] = 0.0  # sgd: share of each gradient kept out of momentum
    amsgrad: Bool = False  # adam, adamw: divide by the running max of the second moment
    centered: Bool = False  # rmsprop: divide by the variance, not the raw second moment
    lr_decay: Annotated[float, Field(ge=0)] = 0.0  # adagrad: lr / (1 + (step - 1) * lr_decay)
    initial_accumulator_value: Annotated[float, Field(ge=0)] = 0.0  # adagrad: starting sum of squares
    momentum_decay: Annotated[float, Field(ge=0)] = 4e-3  # nadam: psi of its momentum schedule

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> OptimParams:
        if self.name == "sgd" and self.nesterov and self.momentum == 0:
            raise ValueError("nesterov needs momentum > 0 with name=sgd (got momentum 0)")
        if self.name == "sgd" and self.nesterov and self.dampening > 0:
            raise ValueError(f"nesterov needs dampening 0 with name=sgd (torch refuses it; got dampening "
                             f"{self.dampening})")
        return self


class ScheduleParams(Section):
    name: Literal["constant", "step", "exponential", "cosine", "onecycle"] = "cosine"
    warmup_epochs: Annotated[int, Strict(), Field(ge=0)] = 0
    step_size: PosInt = 10
    gamma: Annotated[float, Field(gt=0, le=1)] = 0.5
    min_lr_ratio: Annotated[float, Field(ge=0, le=1)] = 0.0


# -------------------------------------------------------------------------------------------- train
class EarlyStoppingParams(Section):
    patience: Annotated[int, Strict(), Field(ge=0)] = 10
    val_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.15
    monitor: Literal["val_loss", "val_accuracy"] = "val_loss"
    min_delta: Annotated[float, Field(ge=0)] = 0.0


class LossParams(Section):
    name: Literal["ce", "gce", "sce", "focal", "logit_adjusted"] = "ce"
    gce_q: Annotated[float, Field(gt=0, le=1)] = 0.7
    sce_alpha: PosFloat = 0.1
    sce_beta: PosFloat = 1.0
    focal_gamma: Annotated[float, Field(ge=0)] = 2.0
    tau: Annotated[float, Field(ge=0)] = 1.0


class TransferParams(Section):
    """Start from a dlrig checkpoint's body (:mod:`dlrig.train.transfer`); ``mode: scratch`` ignores it.

    The weights' *content* is part of every fit-cache key (``dlrig.select.scorers`` hashes the file), not
    only this path."""

    pretrained: str | None = None  # a dlrig checkpoint (stages/studies/pretrain.py writes one)
    mode: Literal["scratch", "linear_probe", "finetune", "finetune_top", "gradual"] = "scratch"
    body_lr_scale: Annotated[float, Field(gt=0, le=1)] = 0.1  # body lr = optim.lr x this (head: optim.lr)
    unfreeze: PosInt = 1  # finetune_top: the last k body blocks train (with the head)
    unfreeze_every: PosInt = 5  # gradual: epochs between unfreezing one more block, top down
    head: Literal["new", "keep"] = "new"  # keep: the checkpoint's head (same classes only)
    scaler: Literal["source", "refit"] = "source"  # Standardize: the checkpoint's, or fitted on these rows

    @model_validator(mode="after")
    def _needs_checkpoint(self) -> TransferParams:
        if self.mode != "scratch" and not self.pretrained:
            raise ValueError(f"mode {self.mode} needs pretrained: a checkpoint path (or mode: scratch)")
        return self


class AugmentParams(Section):
    """Image augmentation of the gradient rows, per batch inside fit() (``dlrig.train.augment``), on the raw
    pixels before the model's Standardize layer. Every key at its default = off. Image data only."""

    rotation: Annotated[float, Field(ge=0, le=180)] = 0.0  # degrees: each image turns by U(-r, r)
    translate: Annotated[float, Field(ge=0, lt=1)] = 0.0  # shift of up to this fraction of width / height
    scale: list[PosFloat] = Field(default_factory=lambda: [1.0, 1.0], min_length=2, max_length=2)  # zoom
    erasing: Annotated[float, Field(ge=0, le=1)] = 0.0  # probability of erasing one rectangle (value 0)
    noise_std: Annotated[float, Field(ge=0)] = 0.0  # gaussian noise, in the data's own pixel units
    hflip: Bool = False  # off for digits: a mirrored 2 is not a 2
    vflip: Bool = False

    @model_validator(mode="after")
    def _scale_ordered(self) -> AugmentParams:
        if self.scale[0] > self.scale[1]:
            raise ValueError(f"scale must be [low, high] with low <= high (got {self.scale})")
        return self

    @property
    def active(self) -> bool:
        return (self.rotation > 0 or self.translate > 0 or self.scale != [1.0, 1.0] or self.erasing > 0
                or self.noise_std > 0 or self.hflip or self.vflip)


class DistillParams(Section):
    """Knowledge distillation (Hinton et al. 2015) from a saved dlrig checkpoint (``dlrig.train.distill``)."""

    teacher: Annotated[str, Field(min_length=1)] | None = None  # a checkpoint path; null = off
    temperature: PosFloat = 4.0  # softens both distributions; the loss carries T^2
    alpha: Annotated[float, Field(ge=0, le=1)] = 0.5  # weight of the teacher term (1 - alpha: the labels)


class TrainParams(Section):
    epochs: PosInt = 60
    batch_size: PosInt = 64
    grad_clip: PosFloat | None = None
    label_smoothing: Fraction = 0.0
    standardize: Literal["none", "feature", "global"] = "feature"
    early_stopping: EarlyStoppingParams | None = Field(default_factory=EarlyStoppingParams)
    loss: LossParams = Field(default_factory=LossParams)
    class_weight: Literal["none", "balanced", "inverse_sqrt", "effective_number"] = "none"
    resample: Literal["none", "oversample", "undersample"] = "none"
    noise_filter: Literal["none", "drop"] = "none"
    noise_filter_folds: Annotated[int, Strict(), Field(ge=2)] = 3
    shuffle: Literal["epoch", "once", "none"] = "epoch"  # new order every epoch | one reused | as given
    augment: AugmentParams = Field(default_factory=AugmentParams)
    mixup_alpha: Annotated[float, Field(ge=0)] = 0.0  # Beta(a, a) mixing weight; 0 = off
    cutmix_alpha: Annotated[float, Field(ge=0)] = 0.0  # images only; 0 = off
    distill: DistillParams = Field(default_factory=DistillParams)
    transfer: TransferParams = Field(default_factory=TransferParams)

    @model_validator(mode="after")
    def _smoothing_needs_ce(self) -> TrainParams:
        if self.label_smoothing > 0 and self.loss.name not in {"ce", "logit_adjusted"}:
            raise ValueError(f"label_smoothing applies to loss ce or logit_adjusted (loss.name is "
                             f"{self.loss.name!r}); set it to 0")
        return self

    @model_validator(mode="after")
    def _mixing_and_distill(self) -> TrainParams:
        mixing = self.mixup_alpha > 0 or self.cutmix_alpha > 0
        if mixing and (self.loss.name != "ce" or self.class_weight != "none"):
            raise ValueError(f"mixup_alpha / cutmix_alpha train on soft targets, which only loss ce without "
                             f"class weights takes (got loss.name {self.loss.name!r}, class_weight "
                             f"{self.class_weight!r}); set them to 0")
        if self.distill.teacher is not None and (mixing or self.augment.active):
            raise ValueError("distill.teacher: the teacher's logits are computed once on the un-augmented "
                             "rows, so distillation takes no augment, mixup_alpha or cutmix_alpha (turn "
                             "them off)")
        return self

    @property
    def plain(self) -> bool:
        """No loss, weighting, resampling or filtering beyond plain (smoothed) cross-entropy."""
        return (self.loss.name == "ce" and self.class_weight == "none" and self.resample == "none"
                and self.noise_filter == "none")


class ComputeParams(Section):
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    torch_threads: PosInt = 1
    n_jobs: PosInt = 1
    cache_dir: str | None = ".cache/dlrig"
    backend: Literal["local", "dask"] = "local"
    scheduler: str | None = None  # dask: tcp://host:port of a running `dask scheduler`
    connect_timeout: PosInt = 10  # dask: seconds to wait for the scheduler before failing

    @model_validator(mode="after")
    def _scheduler_address(self) -> ComputeParams:
        address = self.scheduler and re.match(r"^(tcp|tls)://[^/\s]+:\d+$", self.scheduler)
        if self.backend == "dask" and not address:
            raise ValueError(f"scheduler must be a tcp://host:port address with backend: dask "
                             f"(got {self.scheduler!r})")
        return self


# --------------------------------------------------------------------------------- cv and search
class CvParams(Section):
    depth: Literal[1, 2, 3] = 2
    outer_folds: Annotated[int, Strict(), Field(ge=2)] = 5
    inner_folds: Annotated[int, Strict(), Field(ge=2)] = 3
    middle_folds: Annotated[int, Strict(), Field(ge=2)] = 3
    candidates: dict[str, dict[str, Any]] | None = None


class RangeSpec(Section):
    """A numeric range: ``count`` points, evenly spaced (in log space when ``log``)."""

    low: float
    high: float
    log: Bool = False
    base: Annotated[float, Field(gt=1)] = 10.0
    count: Annotated[int, Strict(), Field(ge=2)] = 4
    refine: Annotated[int, Strict(), Field(ge=0)] = 0

    @model_validator(mode="after")
    def _ordered(self) -> RangeSpec:
        if self.low >= self.high:
            raise ValueError(f"low must be < high (got {self.low} >= {self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"low must be > 0 with log: true (got {self.low})")
        return self


class SearchParams(Section):
    strategy: Literal["grid", "random", "bayes", "coordinate"] = "grid"
    n_trials: PosInt = 8
    metric: Literal["accuracy", "balanced_accuracy", "macro_f1", "neg_log_loss"] = "accuracy"
    stop_when: float | None = None
    pruning: Literal["none", "median", "halving"] = "none"
    prune_after: PosInt = 5
    space: dict[str, list[Any] | RangeSpec] = Field(default_factory=dict)
    storage: str | None = None  # bayes: null = in memory; a journal file path or an RDB URL (sqlite:///x.db)
    # Wall-clock minutes per search (null: no limit); the trials reached are recorded, to be reproduced.
    budget_minutes: PosFloat | None = None

    @model_validator(mode="after")
    def _nonempty_lists(self) -> SearchParams:
        if self.storage is not None and not self.storage.strip():
            raise ValueError("storage must be null, a journal file path or an RDB URL (got an empty string)")
        for key, spec in self.space.items():
            if isinstance(spec, list) and not spec:
                raise ValueError(f"space.{key} must list at least one value")
        if self.budget_minutes is not None and self.strategy == "grid":
            raise ValueError("budget_minutes applies to random, bayes and coordinate searches (a grid cut "
                             "short covers only its first points in product order); use strategy random "
                             "or budget_minutes null")
        return self


class FitConfig(Section):
    """Everything one training run depends on: what a search varies and a checkpoint records."""

    model: ModelParams = Field(default_factory=MlpParams)
    optim: OptimParams = Field(default_factory=OptimParams)
    schedule: ScheduleParams = Field(default_factory=ScheduleParams)
    train: TrainParams = Field(default_factory=TrainParams)

    _model_name = field_validator("model", mode="before")(_default_family)

    @model_validator(mode="after")
    def _classifier(self) -> FitConfig:
        _classifier_checks(self.model, self.train)
        return self

    def with_overrides(self, overrides: dict[str, Any]) -> FitConfig:
        """A validated copy with dotted keys replaced, e.g. ``{"optim.lr": 0.01, "model.hidden": 64}``."""
        raw = self.model_dump()
        for dotted, value in overrides.items():
            node = raw
            *parents, leaf = dotted.split(".")
            for key in parents:
                node = node.get(key) if isinstance(node, dict) else None
            family_key = parents == ["model"] and any(leaf in c.model_fields for c in MODEL_FAMILIES.values())
            if not isinstance(node, dict) or (leaf not in node and not family_key):
                raise UserError(f"{dotted}: not a key of the training config (model/optim/schedule/train)")
            node[leaf] = value
        family = raw["model"].get("name")
        if family != self.model.name and family in MODEL_FAMILIES:
            # Another family: keep the keys it shares with this one (activation, dropout, hidden, ...) and
            # the ones named in the overrides; drop the rest (an mlp has no channels), defaults fill in.
            named = {k.split(".", 1)[1] for k in overrides if k.startswith("model.")}
            # A key both families have but with another meaning (cnn pooling max|avg vs transformer
            # cls|mean) is not shared: only keys declared alike carry over.
            new, old = MODEL_FAMILIES[family].model_fields, MODEL_FAMILIES[self.model.name].model_fields
            def declared(field: Any) -> tuple:
                return field.annotation, repr(field.metadata)

            allowed = {k for k in new if k in old and k != "name" and declared(new[k]) == declared(old[k])}
            allowed |= named | {"name"}
            raw["model"] = {k: v for k, v in raw["model"].items() if k in allowed}
        try:
            return FitConfig.model_validate(raw)
        except ValidationError as exc:
            raise UserError(format_validation_error(exc, source="config")) from None


# ------------------------------------------------------------------------------------------ compare
class BaselineParams(Section):
    # pca_logreg / hog_logreg / pretrained_logreg: fixed features + logistic regression (evaluate/features.py)
    estimator: Literal["logistic_regression", "svm_rbf", "knn", "random_forest", "dlrig",
                       "pca_logreg", "hog_logreg", "pretrained_logreg"]
    params: dict[str, Any] = Field(default_factory=dict)  # scikit-learn keyword arguments
    overrides: dict[str, Any] = Field(default_factory=dict)  # dlrig: dotted keys over the tuned config

    @model_validator(mode="after")
    def _one_kind(self) -> BaselineParams:
        if self.estimator == "dlrig" and self.params:
            raise ValueError("params is for scikit-learn estimators; a dlrig baseline takes overrides")
        if self.estimator != "dlrig" and self.overrides:
            raise ValueError("overrides is for estimator dlrig; scikit-learn estimators take params")
        return self


class CompareParams(Section):
    baselines: dict[str, BaselineParams] = Field(default_factory=dict)
    alpha: Annotated[float, Field(gt=0, lt=1)] = 0.05
    rope: Annotated[float, Field(ge=0, lt=1)] = 0.01
    five_by_two: Bool = True


# ------------------------------------------------------------------------------------------ studies
class LabelsStudyParams(Section):
    noise_rates: list[Annotated[float, Field(ge=0, lt=1)]] = Field(
        default_factory=lambda: [0.0, 0.2, 0.4, 0.6]
    )
    ratios: list[Annotated[float, Field(ge=1)]] = Field(default_factory=lambda: [1.0, 10.0, 100.0])
    detect_rate: Annotated[float, Field(gt=0, lt=1)] = 0.2
    wrong_right_ratio: Annotated[float, Field(gt=1)] = 10.0
    folds: Annotated[int, Strict(), Field(ge=2)] = 5


class TransferStudyParams(Section):
    """studies.transfer: pretrain on some classes, transfer to the others (dlrig.studies.transfer)."""

    source_classes: list[Int] = Field(default_factory=lambda: [0, 1, 2, 3, 4], min_length=2)
    source_overrides: dict[str, Any] = Field(default_factory=dict)  # dotted keys over the pipeline config
    target_overrides: dict[str, Any] = Field(default_factory=dict)  # the same, for every target fit
    samples_per_class: list[PosInt | Literal["all"]] = Field(
        default_factory=lambda: [5, 10, 20, 50, "all"], min_length=1)
    seeds: Annotated[int, Strict(), Field(ge=1)] = 3
    modes: list[Literal["scratch", "linear_probe", "finetune", "finetune_top", "gradual"]] = Field(
        default_factory=lambda: ["scratch", "linear_probe", "finetune", "finetune_top", "gradual"],
        min_length=1)
    extractors: list[Literal["pretrained", "pca", "hog"]] = Field(
        default_factory=lambda: ["pretrained", "pca", "hog"])
    min_steps: PosInt = 200  # a target fit takes at least this many optimizer steps (few rows: more epochs)
    pca_components: PosInt = 20
    hog_cell: PosInt = 2
    hog_bins: Annotated[int, Strict(), Field(ge=2)] = 9
    margin: Annotated[float, Field(ge=0, lt=1)] = 0.01  # scratch within this of transfer = caught up

    @model_validator(mode="after")
    def _distinct(self) -> TransferStudyParams:
        if len(set(self.source_classes)) != len(self.source_classes):
            raise ValueError(f"source_classes must not repeat a class (got {self.source_classes})")
        if "scratch" not in self.modes:
            raise ValueError("modes must include scratch (every other mode is measured against it)")
        return self


class LrRangeStudyParams(Section):
    start_lr: PosFloat = 1e-6
    end_lr: PosFloat = 10.0
    steps: Annotated[int, Strict(), Field(ge=20)] = 200  # fastai's suggestions skip the first 10% and last 5
    beta: Fraction = 0.9  # loss smoothing
    diverge: Annotated[float, Field(gt=1)] = 4.0  # stop when the smoothed loss exceeds this x its minimum
    seeds: Annotated[int, Strict(), Field(ge=3)] = 5

    @model_validator(mode="after")
    def _ordered(self) -> LrRangeStudyParams:
        if self.start_lr >= self.end_lr:
            raise ValueError(f"start_lr must be < end_lr (got {self.start_lr:g} >= {self.end_lr:g})")
        return self


class GrokkingStudyParams(Section):
    """studies.grokking: modular arithmetic learned long after it is memorised (dlrig.studies.grokking)."""

    modular: ModularParams = Field(default_factory=ModularParams)
    train_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.5
    embed_dim: PosInt = 32
    hidden: PosInt = 128
    lr: PosFloat = 3e-3
    weight_decay: PosFloat = 1.0
    control_weight_decay: Annotated[float, Field(ge=0)] = 0.0
    steps: Annotated[int, Strict(), Field(ge=10)] = 3000
    evals: Annotated[int, Strict(), Field(ge=5, le=1000)] = 40
    seeds: PosInt = 3
    train_threshold: Annotated[float, Field(gt=0, le=1)] = 0.99
    test_threshold: Annotated[float, Field(gt=0, le=1)] = 0.95

    @model_validator(mode="after")
    def _control_differs(self) -> GrokkingStudyParams:
        if self.control_weight_decay >= self.weight_decay:
            raise ValueError(
                f"control_weight_decay must be < weight_decay (got {self.control_weight_decay:g} >= "
                f"{self.weight_decay:g}): the control is the run without the decay"
            )
        return self


GradientRemedy = Literal["batch_norm", "layer_norm", "residual", "grad_clip"]


class GradientsStudyParams(Section):
    """studies.gradients: per-layer gradient norms of deep narrow MLPs (dlrig.studies.gradients)."""

    depths: list[PosInt] = Field(default_factory=lambda: [5, 10, 20, 30], min_length=1)
    activations: list[Activation] = Field(default_factory=lambda: ["sigmoid", "tanh", "relu"], min_length=1)
    inits: list[Init] = Field(
        default_factory=lambda: ["default", "xavier_normal", "kaiming_normal", "normal"], min_length=1
    )
    width: PosInt = 32
    steps: PosInt = 300
    batch_size: PosInt = 64
    lr: PosFloat = 1e-3
    seeds: PosInt = 3
    remedies: list[GradientRemedy] = Field(
        default_factory=lambda: ["batch_norm", "layer_norm", "residual", "grad_clip"]
    )
    remedy_depth: PosInt = 30
    remedy_activation: Activation = "sigmoid"
    grad_clip: PosFloat = 1.0


class AugmentationStudyParams(Section):
    """dlrig.studies.augmentation: clean test accuracy vs training rows per class, with and without
    augmentation and with mixup."""

    per_class: list[Any] = Field(default_factory=lambda: [10, 25, 50, "all"], min_length=1)  # ints, "all"
    seeds: PosInt = 3
    epochs: PosInt = 30
    min_steps: PosInt = 300
    augment: AugmentParams = Field(default_factory=lambda: AugmentParams(rotation=8.0, scale=[0.9, 1.1]))
    mixup_alpha: PosFloat = 0.2

    @model_validator(mode="after")
    def _sizes(self) -> AugmentationStudyParams:
        for v in self.per_class:
            if v != "all" and not (type(v) is int and v >= 1):
                raise ValueError(f"per_class entries must be integers >= 1 or 'all' (got {v!r})")
        return self


class DistillationStudyParams(Section):
    """dlrig.studies.distillation: a small student from labels vs distilled from a larger teacher, on the
    same k folds of the training split, judged by the corrected resampled t-test."""

    folds: Annotated[int, Strict(), Field(ge=2)] = 5
    epochs: PosInt = 60
    teacher: dict[str, Any] = Field(default_factory=lambda: {"model.name": "cnn"})
    student: dict[str, Any] = Field(default_factory=lambda: {"model.hidden": 16, "model.depth": 1,
                                                             "optim.lr": 0.01})
    temperature: PosFloat = 4.0
    alpha: Annotated[float, Field(ge=0, le=1)] = 0.7
    test_alpha: Annotated[float, Field(gt=0, lt=1)] = 0.05


class DoubleDescentStudyParams(Section):
    """studies.double_descent: test error vs width of a one-hidden-layer MLP on a noisy training subset,
    trained to interpolation without early stopping (dlrig.studies.double_descent)."""

    subset: Annotated[int, Strict(), Field(ge=20)] = 1000  # stratified training rows per seed
    noise: Fraction = 0.2  # symmetric label noise on the subset (the control curve uses 0)
    widths: list[PosInt] = Field(
        default_factory=lambda: [1, 2, 4, 6, 8, 12, 16, 24, 32, 64, 128, 256, 512, 1024], min_length=3)
    epochs: PosInt = 300
    lr: PosFloat = 0.01
    optimizer: Literal["adam", "sgd"] = "adam"
    batch_size: PosInt | None = None  # null = full batch
    seeds: Annotated[int, Strict(), Field(ge=3)] = 3
    interpolation_error: Annotated[float, Field(ge=0, lt=1)] = 0.01  # train error below this = interpolates
    epoch_width: PosInt | None = 256  # the width whose errors are also traced per epoch (null: none)
    eval_every: PosInt = 5  # epochs between two points of that trace

    @model_validator(mode="after")
    def _increasing(self) -> DoubleDescentStudyParams:
        if any(b <= a for a, b in pairwise(self.widths)):
            raise ValueError(f"widths must be strictly increasing (got {self.widths})")
        return self


class OverparamStudyParams(Section):
    """studies.overparam: under-, well- and over-parameterised MLPs on digits, small vs large batch, with
    the sharpness of the minimum each one reaches (dlrig.studies.overparam)."""

    widths: list[PosInt] = Field(default_factory=lambda: [4, 64, 1024], min_length=2)
    batch_sizes: list[PosInt] = Field(default_factory=lambda: [16, 512], min_length=2)
    epochs: PosInt = 30
    min_steps: PosInt = 600  # a fit takes at least this many optimizer steps (large batches: more epochs)
    lr: PosFloat = 1e-3
    seeds: Annotated[int, Strict(), Field(ge=3)] = 3
    rho: Annotated[float, Field(gt=0, le=1)] = 0.05  # perturbation size relative to each filter's norm
    directions: Annotated[int, Strict(), Field(ge=10)] = 20

    @model_validator(mode="after")
    def _increasing(self) -> OverparamStudyParams:
        for key in ("widths", "batch_sizes"):
            values = getattr(self, key)
            if any(b <= a for a, b in pairwise(values)):
                raise ValueError(f"{key} must be strictly increasing (got {values})")
        return self


class StudiesParams(Section):
    labels: LabelsStudyParams = Field(default_factory=LabelsStudyParams)
    augmentation: AugmentationStudyParams = Field(default_factory=AugmentationStudyParams)
    distillation: DistillationStudyParams = Field(default_factory=DistillationStudyParams)
    grokking: GrokkingStudyParams = Field(default_factory=GrokkingStudyParams)
    gradients: GradientsStudyParams = Field(default_factory=GradientsStudyParams)
    lr_range: LrRangeStudyParams = Field(default_factory=LrRangeStudyParams)
    transfer: TransferStudyParams = Field(default_factory=TransferStudyParams)
    double_descent: DoubleDescentStudyParams = Field(default_factory=DoubleDescentStudyParams)
    overparam: OverparamStudyParams = Field(default_factory=OverparamStudyParams)


# ------------------------------------------------------------------------------------------- report
class ReportParams(Section):
    title: str = "dlrig experiment report"
    dpi: Annotated[int, Strict(), Field(ge=50, le=600)] = 110


class Params(Section):
    seed: Annotated[int, Strict(), Field(ge=0)] = 42
    data: DataParams = Field(default_factory=DataParams)
    validate_: ValidateParams = Field(default_factory=ValidateParams, alias="validate")
    split: SplitParams = Field(default_factory=SplitParams)
    labels: LabelsParams = Field(default_factory=LabelsParams)
    model: ModelParams = Field(default_factory=MlpParams)
    optim: OptimParams = Field(default_factory=OptimParams)
    schedule: ScheduleParams = Field(default_factory=ScheduleParams)
    train: TrainParams = Field(default_factory=TrainParams)
    compute: ComputeParams = Field(default_factory=ComputeParams)
    cv: CvParams = Field(default_factory=CvParams)
    search: SearchParams = Field(default_factory=SearchParams)
    compare: CompareParams = Field(default_factory=CompareParams)
    studies: StudiesParams = Field(default_factory=StudiesParams)
    report: ReportParams = Field(default_factory=ReportParams)

    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)

    _model_name = field_validator("model", mode="before")(_default_family)

    def fit_config(self) -> FitConfig:
        return FitConfig(model=self.model, optim=self.optim, schedule=self.schedule, train=self.train)

    @model_validator(mode="after")
    def _classifier(self) -> Params:  # before _search_keys_exist, which builds a FitConfig from these
        _classifier_checks(self.model, self.train)
        return self

    @model_validator(mode="after")
    def _search_keys_exist(self) -> Params:
        """Every searched key and candidate override must be a real training key with valid values."""
        base = self.fit_config()
        for key, spec in self.search.space.items():
            values = spec if isinstance(spec, list) else [spec.low, spec.high]
            for value in values:
                try:
                    base.with_overrides({key: value})
                except UserError as exc:
                    raise ValueError(f"search.space.{key}: {str(exc).split(': ', 1)[-1]}") from None
        for name, overrides in (self.cv.candidates or {}).items():
            try:
                base.with_overrides({k: v for k, v in overrides.items() if k != "search.strategy"})
            except UserError as exc:
                raise ValueError(f"cv.candidates.{name}: {exc}") from None
        for name, spec in self.compare.baselines.items():
            if spec.estimator == "dlrig":
                try:
                    base.with_overrides(spec.overrides)
                except UserError as exc:
                    raise ValueError(f"compare.baselines.{name}.overrides: {exc}") from None
        if self.cv.depth == 3 and not self.cv.candidates:
            raise ValueError("cv.depth 3 needs cv.candidates (the families the middle loop chooses between)")
        return self


# -------------------------------------------------------------------------------- loading and errors
def _describe(err: dict[str, Any]) -> str:
    """One readable clause for one pydantic error."""
    kind, ctx, got = err["type"], err.get("ctx", {}), err.get("input")
    shown = f" (got {got!r})" if not isinstance(got, dict) else ""
    if kind == "extra_forbidden":
        return "is not a known key"
    if kind == "missing":
        return "is required"
    if kind in {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}:
        op = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
        bound = next(iter(ctx.values()))
        if isinstance(bound, float) and bound.is_integer():
            bound = int(bound)
        return f"must be {op[kind]} {bound}{shown}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}{shown}"
    if kind == "finite_number":
        return f"must be a finite number{shown}"
    if kind.startswith("int"):
        return f"must be an integer{shown}"
    if kind.startswith("float"):
        return f"must be a number{shown}"
    if kind.startswith("bool"):
        return f"must be true or false{shown}"
    if kind.startswith("string"):
        return f"must be a string{shown}"
    if kind in {"list_type", "too_short", "too_long"}:
        return f"{err['msg'].lower()}{shown}"
    if kind in {"model_type", "dict_type", "model_attributes_type"}:
        return f"must be a mapping of keys{shown}"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    return f"{err['msg']}{shown}"


def format_validation_error(exc: ValidationError, source: str = "params.yaml") -> str:
    lines = []
    errors = exc.errors()
    for err in errors:
        loc = [str(p) for p in err["loc"] if not str(p).startswith("function-after")]
        # Unions (e.g. ``float | None``, ``list | RangeSpec``) report each branch; a branch that says
        # only "not of this type" adds nothing when another branch says what is wrong.
        if loc and (loc[-1] in {"float", "int", "bool", "str", "none"} or loc[-1].startswith("list[")):
            loc = loc[:-1]
            prefix = tuple(err["loc"][: len(loc)])
            if err["type"].endswith("_type") and any(
                e is not err and tuple(e["loc"][: len(loc)]) == prefix for e in errors
            ):
                continue
        if err["type"] in {"union_tag_invalid", "union_tag_not_found"}:
            line = (f"{source}: {'.'.join([*loc, 'name'])} must be one of {sorted(MODEL_FAMILIES)}"
                    f" (got {err.get('ctx', {}).get('tag')!r})")
            if line not in lines:
                lines.append(line)
            continue
        if len(loc) >= 2 and loc[-2] in MODEL_FAMILIES and (loc[:1] == ["model"] or loc[-3:-2] == ["model"]):
            family = loc[-2]
            del loc[-2]  # the union's tag (mlp, cnn) is not a key
            if err["type"] == "extra_forbidden":
                lines.append(f"{source}: {'.'.join(loc)} is not a key of model.name={family} "
                             f"({family} keys: {', '.join(family_keys(family))})")
                continue
        elif len(loc) == 2 and loc[0] == "model" and loc[1] in MODEL_FAMILIES:
            loc = ["model"]  # a cross-field check of the family (kernel_size must be odd)
        key = ".".join(loc).replace("validate_", "validate")
        if loc[:2] == ["search", "space"] and err["type"] == "model_type":
            lines.append(
                f"{source}: {key} must be a list of values or a range {{low, high, log, count}}"
                f" (got {err.get('input')!r})"
            )
            continue
        if not key:
            lines.append(f"{source}: {_describe(err)}")
            continue
        # Cross-field checks speak of the section's own keys: "optim" + "nesterov needs ..." reads
        # as "optim.nesterov needs ...".
        sep = "." if err["type"] == "value_error" and loc else " "
        line = f"{source}: {key}{sep}{_describe(err)}"
        if line not in lines:
            lines.append(line)
    return "\n".join(lines)


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    """Validate an already-loaded mapping (tests use this to shrink the real profile)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(f"{source}: must be a mapping of sections (got {type(raw).__name__})")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise UserError(format_validation_error(exc, source)) from None


def read_yaml(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)  # noqa: S506 (SafeLoader)
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None


# The top-level sections, spelled as in the YAML (``validate``, not ``validate_``).
SECTIONS = tuple(field.alias or name for name, field in Params.model_fields.items())


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate a params file; raises :class:`UserError` naming every bad key.

    A file is the whole experiment: every top-level section must be present. An empty file, or one that
    lost a section, would otherwise run silently on built-in defaults and overwrite real results. (Keys
    *inside* a section may be left out: their defaults are the ones params.py documents.)
    """
    raw = read_yaml(path)
    name = str(Path(path).name)
    if raw is None or raw == {}:
        raise UserError(f"{name}: is empty; it must hold every section ({', '.join(SECTIONS)}): "
                        "restore it (git checkout params.yaml)")
    if isinstance(raw, dict):
        missing = [key for key in SECTIONS if key not in raw]
        if missing:
            raise UserError(f"{name}: missing section(s) {', '.join(missing)}; every section must be "
                            "present (no silent defaults for a whole section): copy it from the committed "
                            "params.yaml")
    return parse_params(raw, source=name)


def dump_params(params: Params) -> dict[str, Any]:
    """Plain dict with the YAML spelling of keys (``validate``, not ``validate_``)."""
    return params.model_dump(mode="json", by_alias=True)
