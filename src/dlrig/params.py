"""params.yaml as typed, validated models: the experiment, refused early when it is wrong.

Every section forbids unknown keys and checks types and ranges, so a typo such as ``optim.lr: -1`` or
``model.hiden`` stops a stage before any work with one line:

    params.yaml: optim.lr must be > 0 (got -1)

Stage code reads params only through :func:`load_params`; the library takes the section models (or plain
values) it needs, never the YAML file.
"""

from __future__ import annotations

import re
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


class DataParams(Section):
    source: Literal["digits", "csv", "imagefolder", "mnist", "synthetic"] = "digits"
    path: str = "data/raw/input"
    csv: CsvParams = Field(default_factory=CsvParams)
    image: ImageParams = Field(default_factory=ImageParams)
    mnist: MnistParams = Field(default_factory=MnistParams)
    synthetic: SyntheticParams = Field(default_factory=SyntheticParams)


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
    "default", "kaiming_normal", "kaiming_uniform", "xavier_normal", "xavier_uniform", "orthogonal"
]


class ModelBase(Section):
    """Keys every family has."""

    name: str  # each family narrows it to its own literal (the union's tag); declared here to come first
    activation: Activation = "relu"
    dropout: Fraction = 0.1
    norm: Literal["none", "batch", "layer"] = "none"
    init: Init = "default"


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

    @model_validator(mode="after")
    def _odd_kernel(self) -> CnnParams:
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (got {self.kernel_size})")
        return self


MODEL_FAMILIES: dict[str, type[ModelBase]] = {"mlp": MlpParams, "cnn": CnnParams}
ModelParams = Annotated[MlpParams | CnnParams, Field(discriminator="name")]


def family_keys(name: str) -> list[str]:
    """The keys of one family, ``name`` first (for error messages and the docs)."""
    return ["name", *(k for k in MODEL_FAMILIES[name].model_fields if k != "name")]


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
    eps: PosFloat = 1e-8
    alpha: Fraction = 0.99
    rho: Fraction = 0.9

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> OptimParams:
        if self.name == "sgd" and self.nesterov and self.momentum == 0:
            raise ValueError("nesterov needs momentum > 0 with name=sgd (got momentum 0)")
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

    @model_validator(mode="after")
    def _smoothing_needs_ce(self) -> TrainParams:
        if self.label_smoothing > 0 and self.loss.name not in {"ce", "logit_adjusted"}:
            raise ValueError(f"label_smoothing applies to loss ce or logit_adjusted (loss.name is "
                             f"{self.loss.name!r}); set it to 0")
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

    @model_validator(mode="after")
    def _nonempty_lists(self) -> SearchParams:
        if self.storage is not None and not self.storage.strip():
            raise ValueError("storage must be null, a journal file path or an RDB URL (got an empty string)")
        for key, spec in self.space.items():
            if isinstance(spec, list) and not spec:
                raise ValueError(f"space.{key} must list at least one value")
        return self


class FitConfig(Section):
    """Everything one training run depends on: what a search varies and a checkpoint records."""

    model: ModelParams = Field(default_factory=MlpParams)
    optim: OptimParams = Field(default_factory=OptimParams)
    schedule: ScheduleParams = Field(default_factory=ScheduleParams)
    train: TrainParams = Field(default_factory=TrainParams)

    _model_name = field_validator("model", mode="before")(_default_family)

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
            allowed = set(MODEL_FAMILIES[family].model_fields) | named
            raw["model"] = {k: v for k, v in raw["model"].items() if k in allowed}
        try:
            return FitConfig.model_validate(raw)
        except ValidationError as exc:
            raise UserError(format_validation_error(exc, source="config")) from None


# ------------------------------------------------------------------------------------------ compare
class BaselineParams(Section):
    estimator: Literal["logistic_regression", "svm_rbf", "knn", "random_forest", "dlrig"]
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


class StudiesParams(Section):
    labels: LabelsStudyParams = Field(default_factory=LabelsStudyParams)


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
