"""Data validation with a Great Expectations (1.x) suite built from ``params.validate``.

GX checks tables, not tensors, and is slow on wide tables (one metric per column, and adding
expectations one by one re-validates the suite each time). So we first reduce the data to two compact
tables and validate those, each against a suite built in one call:

* ``samples``: one row per sample -- ``row``, ``y`` (label code), ``label`` (class name), ``n_values``,
  ``shape``, ``row_min`` / ``row_max`` (over finite values), ``n_nan``, ``n_inf``, ``duplicate_of``
  (the first earlier row with identical bytes, else -1);
* ``classes``: one row per class (expected or observed) -- ``label``, ``count``.

A 70000 x 784 data set validates in well under the time GX takes to import. The outcome is plain data:
``to_json()`` (deterministic: no timestamps or run ids), ``summary_markdown()`` and ``failure_message()``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dlrig.data.dataset import Dataset
from dlrig.errors import UserError
from dlrig.io import save_json, save_text
from dlrig.params import ValidateParams

N_EXAMPLES = 5  # offending rows / labels shown per failed expectation
_CHUNK = 8192  # rows per chunk when reducing X, to bound temporary memory


@dataclass
class ExpectationResult:
    name: str  # the GX expectation type, e.g. "expect_column_values_to_be_between"
    description: str  # plain words, e.g. "row_max <= 16"
    success: bool
    offending: int  # how many samples / classes / labels break it (reported even when it passes)
    unit: str  # what ``offending`` counts: "samples", "classes" or "labels"
    # A few offenders: {"row": i, <column>: value} for samples, {"label": name, "count": n} for classes,
    # or the missing label names.
    examples: list[Any] = field(default_factory=list)
    key: str | None = None  # the params key that sets this expectation (None: always checked)
    # On failure: one clause naming the key, what the data holds and what to set (or fix) instead.
    advice: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "success": self.success,
            "offending": self.offending,
            "unit": self.unit,
            "examples": self.examples,
            "key": self.key,
            "advice": self.advice,
        }

    def describe_offenders(self, total: int | None = None) -> str:
        of = f" of {total}" if total is not None else ""
        text = f"{self.offending}{of} {self.unit}"
        if self.examples:
            shown = ", ".join(_example_text(e) for e in self.examples)
            text += f" (e.g. {shown})"
        return text


def _example_text(e: Any) -> str:
    """``{"row": 5, "n_nan": 3}`` -> ``row 5 (n_nan=3)``; a class: ``class '3' (count=4)``."""
    if isinstance(e, dict):
        key = "row" if "row" in e else "label"
        where = f"row {e[key]}" if key == "row" else f"class {e[key]!r}"
        values = ", ".join(f"{k}={v!r}" for k, v in e.items() if k != key)
        return f"{where} ({values})" if values else where
    return repr(e)


@dataclass
class ValidationOutcome:
    success: bool
    results: list[ExpectationResult]
    dataset: dict[str, Any]  # n_samples, sample_shape, class_counts, n_duplicate_rows, ...
    settings: dict[str, Any]  # the validate params the suite was built from

    @property
    def failed(self) -> list[ExpectationResult]:
        return [r for r in self.results if not r.success]

    def to_json(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "n_expectations": len(self.results),
            "n_failed": len(self.failed),
            "expectations": [r.to_json() for r in self.results],
            "dataset": self.dataset,
            "settings": self.settings,
        }

    def _total(self, r: ExpectationResult) -> int | None:
        if r.unit == "samples":
            return int(self.dataset["n_samples"])
        if r.unit == "classes":
            return len(self.dataset["class_counts"])
        return None

    def failure_message(self) -> str:
        """One line: ``data validation failed (2 of 9 expectations): <what>: <count> ...; ...``."""
        if self.success:
            return f"data validation passed ({len(self.results)} expectations)"
        parts: list[str] = []
        for r in self.failed:
            text = r.advice or f"{r.description}: {r.describe_offenders(self._total(r))}"
            if text not in parts:  # n_values and sample shape fail together for one reason
                parts.append(text)
        head = f"data validation failed ({len(self.failed)} of {len(self.results)} expectations)"
        return f"{head}: " + "; ".join(parts)

    def summary_markdown(self) -> str:
        d = self.dataset
        n_failed, n_all = len(self.failed), len(self.results)
        verdict = "PASSED" if self.success else f"FAILED ({n_failed} of {n_all} expectations)"
        lines = [
            f"# Data validation: {verdict}",
            "",
            f"- source: {d['source']}",
            f"- samples: {d['n_samples']}, sample shape {d['sample_shape']}, {d['n_classes']} classes",
            f"- finite value range: {d['value_min']} .. {d['value_max']}",
            f"- NaN values: {d['n_nan_values']}, inf values: {d['n_inf_values']}",
            f"- duplicate rows: {d['n_duplicate_rows']} "
            f"({d['n_duplicate_rows_conflicting_labels']} with a different label than their first copy)",
            f"- on failure: {self.settings['on_failure']}",
            "",
            "| result | expectation | offending | examples |",
            "|---|---|---|---|",
        ]
        for r in self.results:
            total = self._total(r)
            count = f"{r.offending}" + (f" of {total}" if total is not None else "") + f" {r.unit}"
            examples = ", ".join(_example_text(e) for e in r.examples) or "-"
            verdict = "pass" if r.success else "**FAIL**"
            lines.append(f"| {verdict} | {_md(r.description)} | {count} | {_md(examples)} |")
        advice = list(dict.fromkeys(r.advice for r in self.failed if r.advice))
        if advice:
            lines += ["", "## What to change", ""] + [f"- {_md(a)}" for a in advice]
        lines += ["", "| class | samples |", "|---|---|"]
        lines += [f"| {_md(name)} | {n} |" for name, n in d["class_counts"].items()]
        return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    """Escape what would break a markdown table cell (class names are user data)."""
    return text.replace("|", "\\|").replace("\n", " ")


def check_outcome(outcome: ValidationOutcome, on_failure: str, source: str | None = None) -> None:
    """Stop (``UserError``) on a failed validation when ``on_failure == "error"``; else return.

    With ``"warn"`` the caller prints ``outcome.failure_message()`` as a warning. ``source`` (the data
    file) prefixes the message.
    """
    if on_failure not in ("error", "warn"):
        raise UserError(f"validate.on_failure must be one of ['error', 'warn'] (got {on_failure!r})")
    if outcome.success or on_failure == "warn":
        return
    message = outcome.failure_message()
    raise UserError(f"{source}: {message}" if source else message)


def write_outcome(
    outcome: ValidationOutcome, json_path: str | Path, summary_path: str | Path | None = None
) -> None:
    """reports/validation.json (+ the markdown summary), written atomically."""
    save_json(json_path, outcome.to_json())
    if summary_path is not None:
        save_text(summary_path, outcome.summary_markdown())


# ------------------------------------------------------------------------------------ compact views
def _shape_text(shape: list[int]) -> str:
    return "x".join(str(s) for s in shape)


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def sample_table(ds: Dataset):  # -> pandas.DataFrame
    """One row per sample: the statistics every per-sample expectation needs."""
    import pandas as pd

    n = len(ds.y)
    flat = ds.X.reshape(n, int(np.prod(ds.sample_shape)))
    row_min = np.full(n, np.nan)
    row_max = np.full(n, np.nan)
    n_nan = np.zeros(n, dtype=np.int64)
    n_inf = np.zeros(n, dtype=np.int64)
    hashes: list[bytes] = []
    for start in range(0, n, _CHUNK):
        block = flat[start:start + _CHUNK]
        nan, inf = np.isnan(block), np.isinf(block)
        n_nan[start:start + len(block)] = nan.sum(axis=1)
        n_inf[start:start + len(block)] = inf.sum(axis=1)
        finite = ~(nan | inf)
        has_finite = finite.any(axis=1)
        with np.errstate(invalid="ignore"):
            lo = np.where(finite, block, np.inf).min(axis=1)
            hi = np.where(finite, block, -np.inf).max(axis=1)
        row_min[start:start + len(block)] = np.where(has_finite, lo, np.nan)
        row_max[start:start + len(block)] = np.where(has_finite, hi, np.nan)
        canon = block + np.float32(0.0)  # -0.0 -> 0.0, so equal values hash equal
        hashes += [hashlib.blake2b(r.tobytes(), digest_size=16).digest() for r in canon]

    codes, _ = pd.factorize(pd.Series(hashes, dtype=object))  # codes in order of first appearance
    _, first_row = np.unique(codes, return_index=True)
    first = first_row[codes] if n else np.zeros(0, dtype=np.int64)
    duplicate_of = np.where(first == np.arange(n), -1, first).astype(np.int64)

    k = len(ds.classes)
    labels = [ds.classes[v] if 0 <= v < k else str(v) for v in ds.y.tolist()]
    return pd.DataFrame({
        "row": np.arange(n, dtype=np.int64),
        "y": ds.y,
        "label": pd.Series(labels, dtype=object),
        "n_values": np.full(n, flat.shape[1], dtype=np.int64),
        "shape": _shape_text(ds.sample_shape),
        "row_min": row_min,
        "row_max": row_max,
        "n_nan": n_nan,
        "n_inf": n_inf,
        "duplicate_of": duplicate_of,
    })


def class_table(ds: Dataset, expected: list[str] | None):  # -> pandas.DataFrame
    """One row per class, expected (``validate.labels``) or present, with its sample count (0 if absent)."""
    import pandas as pd

    counts = ds.class_counts()
    names = list(counts) + [e for e in (expected or []) if e not in counts]
    return pd.DataFrame({"label": names, "count": [counts.get(k, 0) for k in names]})


# ---------------------------------------------------------------------------------------------- GX
def _gx_context():
    """A fresh in-memory GX context: no files, no analytics, no progress bars, no network."""
    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
    )
    return gx, gx.get_context(mode="ephemeral", project_config=config)


@dataclass
class _Spec:
    """One expectation: the GX object plus how to report it."""

    expectation: Any
    description: str
    unit: str
    table: str  # "samples" or "classes"
    kind: str  # which advice to give on failure (see _advice)
    key: str | None  # the params key that sets it


def _specs(ds: Dataset, cfg: ValidateParams, expected_labels: list[str] | None) -> list[_Spec]:
    import great_expectations.expectations as gxe

    shape_now = ds.sample_shape
    n_values = int(np.prod(cfg.sample_shape)) if cfg.sample_shape is not None else int(np.prod(shape_now))
    specs = [
        _Spec(gxe.ExpectColumnValuesToBeBetween(column="n_nan", min_value=0, max_value=0),
              "no NaN values", "samples", "samples", "nan", None),
        _Spec(gxe.ExpectColumnValuesToBeBetween(column="n_inf", min_value=0, max_value=0),
              "no inf values", "samples", "samples", "inf", None),
    ]
    if cfg.value_min is not None:
        specs.append(_Spec(gxe.ExpectColumnValuesToBeBetween(column="row_min", min_value=cfg.value_min),
                           f"row_min >= {_fmt(cfg.value_min)}", "samples", "samples", "min",
                           "validate.value_min"))
    if cfg.value_max is not None:
        specs.append(_Spec(gxe.ExpectColumnValuesToBeBetween(column="row_max", max_value=cfg.value_max),
                           f"row_max <= {_fmt(cfg.value_max)}", "samples", "samples", "max",
                           "validate.value_max"))
    if expected_labels is not None:
        specs += [
            _Spec(gxe.ExpectColumnValuesToBeInSet(column="label", value_set=expected_labels),
                  f"label in {{{', '.join(expected_labels)}}}", "samples", "samples", "label_in",
                  "validate.labels"),
            _Spec(gxe.ExpectColumnDistinctValuesToContainSet(column="label", value_set=expected_labels),
                  "every expected label present", "missing labels", "samples", "label_present",
                  "validate.labels"),
        ]
    else:
        specs.append(_Spec(gxe.ExpectColumnValuesToBeInSet(column="y", value_set=list(range(ds.n_classes))),
                           f"label code in 0..{ds.n_classes - 1}", "samples", "samples", "code", None))
    specs.append(_Spec(gxe.ExpectColumnValuesToBeBetween(column="n_values", min_value=n_values,
                                                         max_value=n_values),
                       f"n_values == {n_values}", "samples", "samples", "shape", "validate.sample_shape"))
    if cfg.sample_shape is not None:
        want = _shape_text(cfg.sample_shape)
        specs.append(_Spec(gxe.ExpectColumnValuesToBeInSet(column="shape", value_set=[want]),
                           f"sample shape == {want}", "samples", "samples", "shape", "validate.sample_shape"))
    # Rows identical to an earlier row; the count is always reported, it fails only past the fraction.
    # (A hair of slack so that exactly max_duplicate_fraction passes despite float rounding.)
    mostly = min(1.0, max(0.0, 1.0 - cfg.max_duplicate_fraction - 1e-12))
    specs.append(_Spec(gxe.ExpectColumnValuesToBeBetween(column="duplicate_of", max_value=-1, mostly=mostly),
                       f"duplicate rows <= {cfg.max_duplicate_fraction * 100:g}% of samples",
                       "samples", "samples", "duplicates", "validate.max_duplicate_fraction"))
    specs.append(_Spec(gxe.ExpectColumnValuesToBeBetween(column="count", min_value=cfg.min_per_class),
                       f"samples per class >= {cfg.min_per_class}", "classes", "classes", "per_class",
                       "validate.min_per_class"))
    return specs


def _cli_list(values: list[Any]) -> str:
    """``[1, 28, 28]`` as ``dvc exp run -S`` takes it: ``[1,28,28]``."""
    return "[" + ",".join(str(v) for v in values) + "]"


def _labels_value(names: list[str]) -> str:
    """What to set validate.labels to for these class names (it holds integers only; else null)."""
    try:
        ints = sorted(int(n) for n in names)
    except ValueError:
        return "null"
    return _cli_list(ints) if [str(i) for i in ints] == sorted(names, key=int) else "null"


def _advice(
    kind: str, r: ExpectationResult, d: dict[str, Any], cfg: ValidateParams, total: int | None
) -> str:
    """One clause for a failed expectation: the key, what the data holds, and what to set instead."""
    offenders = r.describe_offenders(total)
    if kind in ("nan", "inf"):
        what = "NaN" if kind == "nan" else "inf"
        return (f"{what} values in {offenders}: clean or impute the data (always checked: nothing can "
                f"train on {what})")
    if kind == "min":
        low = d["value_min"] if d["value_min"] is not None else cfg.value_min
        return (f"validate.value_min is {_fmt(cfg.value_min)} but {offenders} go below it (the data's "
                f"minimum is {_fmt(low)}): set validate.value_min={_fmt(low)} or null, or fix the data")
    if kind == "max":
        high = d["value_max"] if d["value_max"] is not None else cfg.value_max
        return (f"validate.value_max is {_fmt(cfg.value_max)} but {offenders} go above it (the data's "
                f"maximum is {_fmt(high)}): set validate.value_max={_fmt(high)} or null, or fix the data")
    present = [name for name, n in d["class_counts"].items() if n > 0]
    fits = _labels_value(present)
    set_labels = (f"set validate.labels={fits} or null" if fits != "null"
                  else "set validate.labels=null (it lists integer labels only)")
    if kind == "label_in":
        return (f"validate.labels is {_cli_list(cfg.labels)} but {offenders} have another label (the data's "
                f"labels are {present}): {set_labels}")
    if kind == "label_present":
        more = ", ..." if r.offending > len(r.examples) else ""
        missing = ", ".join(repr(e) for e in r.examples) + more
        return (f"validate.labels is {_cli_list(cfg.labels)} but the data has no sample of label(s) "
                f"{missing} (the data's labels are {present}): {set_labels}")
    if kind == "code":
        return (f"{offenders} have a label code outside 0..{d['n_classes'] - 1}: the data file does not "
                "match its meta.json; rerun prepare")
    if kind == "shape":
        have = d["sample_shape"]
        return (f"validate.sample_shape is {_cli_list(cfg.sample_shape or [])} but the data's samples are "
                f"{_cli_list(have)}: set validate.sample_shape={_cli_list(have)} or null")
    if kind == "duplicates":
        share = r.offending / max(int(d["n_samples"]), 1)
        enough = min(1.0, math.ceil(share * 1000) / 1000)
        return (f"validate.max_duplicate_fraction is {cfg.max_duplicate_fraction:g} but {offenders} "
                f"({share * 100:.3g}%) repeat an earlier row: remove the duplicates or set "
                f"validate.max_duplicate_fraction={enough:g}")
    if kind == "per_class":
        smallest = min(d["class_counts"].values())
        fix = (f"set validate.min_per_class={smallest}" if smallest > 0
               else "set validate.labels without the label(s) the data lacks")
        return (f"validate.min_per_class is {cfg.min_per_class} but {offenders} have fewer samples: "
                f"collect more data, drop the class, or {fix}")
    raise AssertionError(f"no advice for {kind!r}")  # pragma: no cover


def _run_suite(context, gx, name: str, df, specs: list[_Spec], index_column: str) -> list[dict[str, Any]]:
    """Validate one table against a suite built in one call; results in the order of ``specs``."""
    for i, spec in enumerate(specs):
        spec.expectation.meta = {"dlrig_index": i}
    suite = gx.ExpectationSuite(name=f"dlrig_{name}", expectations=[s.expectation for s in specs])
    asset = context.data_sources.add_pandas(f"dlrig_{name}").add_dataframe_asset(name)
    batch = asset.add_batch_definition_whole_dataframe("all").get_batch(batch_parameters={"dataframe": df})
    result = batch.validate(suite, result_format={
        "result_format": "SUMMARY",
        "partial_unexpected_count": N_EXAMPLES,
        "unexpected_index_column_names": [index_column],
    })
    by_index: dict[int, dict[str, Any]] = {}
    for r in result.results:
        payload = r.to_json_dict()
        by_index[int(payload["expectation_config"]["meta"]["dlrig_index"])] = payload
    return [by_index[i] for i in range(len(specs))]


def _plain(v: Any) -> Any:
    """numpy scalars (GX hands them back) -> Python values, so JSON and messages read plainly."""
    return v.item() if isinstance(v, np.generic) else v


def _to_result(spec: _Spec, payload: dict[str, Any], index_column: str) -> ExpectationResult:
    exc = payload.get("exception_info") or {}
    if exc.get("raised_exception"):  # a bug in how we call GX, not a data problem
        raise RuntimeError(
            f"Great Expectations failed on {spec.description!r}: {exc.get('exception_message')}"
        )
    res = payload.get("result") or {}
    column = spec.expectation.column
    if "missing_count" in res and "unexpected_count" not in res:  # distinct values contain set
        offending = int(res["missing_count"])
        # (validate_dataset replaces these with a deterministic choice)
        examples = [_plain(v) for v in res.get("partial_missing_list", [])][:N_EXAMPLES]
    else:
        offending = int(res.get("unexpected_count", 0))
        examples = [{index_column: _plain(e[index_column]), column: _plain(e[column])}
                    for e in res.get("partial_unexpected_index_list", [])][:N_EXAMPLES]
    return ExpectationResult(
        name=payload["expectation_config"]["type"],
        description=spec.description,
        success=bool(payload["success"]),
        offending=offending,
        unit=spec.unit,
        examples=examples,
    )


def validate_dataset(ds: Dataset, cfg: ValidateParams) -> ValidationOutcome:
    """Validate ``ds`` against the suite ``cfg`` describes; never raises for bad data (see check_outcome)."""
    expected = [str(v) for v in cfg.labels] if cfg.labels is not None else None
    samples, classes = sample_table(ds), class_table(ds, expected)
    specs = _specs(ds, cfg, expected)

    gx, context = _gx_context()
    by_spec: dict[int, ExpectationResult] = {}
    for table, df, index_column in (("samples", samples, "row"), ("classes", classes, "label")):
        chosen = [s for s in specs if s.table == table]
        payloads = _run_suite(context, gx, table, df, chosen, index_column)
        by_spec.update({id(s): _to_result(s, p, index_column) for s, p in zip(chosen, payloads, strict=True)})
    results = [by_spec[id(s)] for s in specs]

    dup = samples["duplicate_of"].to_numpy() >= 0
    y = samples["y"].to_numpy()
    conflicting = int(np.sum(y[dup] != y[samples["duplicate_of"].to_numpy()[dup]]))
    finite_min, finite_max = samples["row_min"].min(), samples["row_max"].max()
    dataset = {
        "source": ds.source,
        "n_samples": int(len(ds.y)),
        "sample_shape": ds.sample_shape,
        "n_classes": ds.n_classes,
        "class_counts": dict(zip(classes["label"], classes["count"].tolist(), strict=True)),
        "value_min": None if np.isnan(finite_min) else float(finite_min),
        "value_max": None if np.isnan(finite_max) else float(finite_max),
        "n_nan_values": int(samples["n_nan"].sum()),
        "n_inf_values": int(samples["n_inf"].sum()),
        "n_duplicate_rows": int(dup.sum()),
        "n_duplicate_rows_conflicting_labels": conflicting,
    }
    outcome = ValidationOutcome(
        success=all(r.success for r in results),
        results=results,
        dataset=dataset,
        settings=cfg.model_dump(mode="json"),
    )
    for spec, r in zip(specs, results, strict=True):
        r.key = spec.key
        if spec.kind == "label_present":
            # GX picks its (at most 20) missing values out of a set, so which ones varies from run to run
            # with more than 20; the class table gives them in validate.labels order, every time.
            counts = dict(zip(classes["label"], classes["count"].tolist(), strict=True))
            r.examples = [e for e in expected or [] if counts.get(e, 0) == 0][:N_EXAMPLES]
        if not r.success:
            r.advice = _advice(spec.kind, r, dataset, cfg, outcome._total(r))
    return outcome
