"""The GX suite on digits and on digits broken in one known way at a time."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest

from dlrig.data.dataset import Dataset
from dlrig.data.sources import load_digits
from dlrig.data.validate import check_outcome, validate_dataset, write_outcome
from dlrig.errors import UserError
from dlrig.params import ValidateParams

STRICT = dict(value_min=0, value_max=16, labels=list(range(10)), sample_shape=[1, 8, 8], min_per_class=10)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Validation must never reach the network (GX analytics, version checks)."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_digits()


def copy(ds: Dataset, X=None, y=None) -> Dataset:
    return Dataset(X=ds.X.copy() if X is None else X, y=ds.y.copy() if y is None else y,
                   classes=list(ds.classes), source=ds.source)


def by_description(outcome, start: str):
    (hit,) = [r for r in outcome.results if r.description.startswith(start)]
    return hit


def test_clean_digits_pass(digits):
    outcome = validate_dataset(digits, ValidateParams(**STRICT))
    assert outcome.success and outcome.failed == []
    assert [r.description for r in outcome.results] == [
        "no NaN values", "no inf values", "row_min >= 0", "row_max <= 16",
        "label in {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}", "every expected label present", "n_values == 64",
        "sample shape == 1x8x8", "duplicate rows <= 100% of samples", "samples per class >= 10",
    ]
    assert all(r.offending == 0 for r in outcome.results)
    d = outcome.dataset
    assert d["n_samples"] == 1797 and d["sample_shape"] == [1, 8, 8]
    assert d["class_counts"]["8"] == 174 and sum(d["class_counts"].values()) == 1797
    assert (d["value_min"], d["value_max"], d["n_duplicate_rows"]) == (0.0, 16.0, 0)
    check_outcome(outcome, "error")  # passes silently


def test_nan_and_inf_counted_per_sample(digits):
    X = digits.X.copy()
    X[4, 0, 0, 0] = X[4, 0, 1, 1] = np.nan  # two NaN in one sample
    X[9, 0, 2, 2] = np.nan
    X[11, 0, 3, 3] = np.inf
    outcome = validate_dataset(copy(digits, X=X), ValidateParams(**STRICT))
    nan, inf = by_description(outcome, "no NaN"), by_description(outcome, "no inf")
    assert (nan.success, nan.offending) == (False, 2)
    assert nan.examples == [{"row": 4, "n_nan": 2}, {"row": 9, "n_nan": 1}]
    assert (inf.success, inf.offending, inf.examples) == (False, 1, [{"row": 11, "n_inf": 1}])
    assert outcome.dataset["n_nan_values"] == 3 and outcome.dataset["n_inf_values"] == 1
    # inf is not double-counted as out of range: ranges look at finite values only
    assert by_description(outcome, "row_max").success
    assert outcome.failure_message() == (
        "data validation failed (2 of 10 expectations): "
        "NaN values in 2 of 1797 samples (e.g. row 4 (n_nan=2), row 9 (n_nan=1)): clean or impute the data "
        "(always checked: nothing can train on NaN); "
        "inf values in 1 of 1797 samples (e.g. row 11 (n_inf=1)): clean or impute the data "
        "(always checked: nothing can train on inf)"
    )


def test_out_of_range_values(digits):
    X = digits.X.copy()
    X[10, 0, 4, 4] = 20.0
    X[20, 0, 5, 5] = -1.5
    X[30, 0, 6, 6] = 16.0  # on the bound: allowed
    outcome = validate_dataset(copy(digits, X=X), ValidateParams(**STRICT))
    hi, lo = by_description(outcome, "row_max <= 16"), by_description(outcome, "row_min >= 0")
    assert (hi.offending, hi.examples) == (1, [{"row": 10, "row_max": 20.0}])
    assert (lo.offending, lo.examples) == (1, [{"row": 20, "row_min": -1.5}])
    assert [r.description for r in outcome.failed] == ["row_min >= 0", "row_max <= 16"]
    assert outcome.dataset["value_max"] == 20.0


def test_too_few_samples_in_a_class(digits):
    keep = np.flatnonzero(digits.y != 3)
    keep = np.r_[keep, np.flatnonzero(digits.y == 3)[:4]]
    outcome = validate_dataset(digits.subset(keep), ValidateParams(**STRICT))
    per_class = by_description(outcome, "samples per class")
    assert (per_class.success, per_class.offending, per_class.unit) == (False, 1, "classes")
    assert per_class.examples == [{"label": "3", "count": 4}]
    assert outcome.failure_message() == (
        "data validation failed (1 of 10 expectations): validate.min_per_class is 10 but 1 of 10 classes "
        "(e.g. class '3' (count=4)) have fewer samples: collect more data, drop the class, or set "
        "validate.min_per_class=4"
    )


def test_wrong_and_missing_labels(digits):
    outcome = validate_dataset(digits, ValidateParams(**{**STRICT, "labels": list(range(9))}))
    in_set = by_description(outcome, "label in")
    assert (in_set.success, in_set.offending) == (False, 180)  # every sample of class 9
    assert all(e["label"] == "9" for e in in_set.examples) and len(in_set.examples) == 5
    assert by_description(outcome, "every expected label").success

    outcome = validate_dataset(digits, ValidateParams(**{**STRICT, "labels": list(range(11))}))
    present = by_description(outcome, "every expected label")
    assert (present.success, present.offending, present.examples) == (False, 1, ["10"])
    per_class = by_description(outcome, "samples per class")
    assert per_class.examples == [{"label": "10", "count": 0}]
    assert outcome.dataset["class_counts"]["10"] == 0


def test_bad_label_code_without_labels_param(digits):
    y = digits.y.copy()
    y[7] = 12  # outside 0..9
    outcome = validate_dataset(copy(digits, y=y), ValidateParams())
    code = by_description(outcome, "label code in 0..9")
    assert (code.success, code.offending, code.examples) == (False, 1, [{"row": 7, "y": 12}])


def test_duplicates_counted_and_fail_past_the_fraction(digits):
    X, y = digits.X.copy(), digits.y.copy()
    X[100:105] = X[0]  # five copies of row 0; two of them with another label
    y[100:103], y[103:105] = y[0], (y[0] + 1) % 10
    X[200] = -0.0 * X[200]  # -0.0 equals 0.0: still not a duplicate of anything
    ds = copy(digits, X=X, y=y)
    loose = validate_dataset(ds, ValidateParams(**STRICT))
    dup = by_description(loose, "duplicate rows")
    assert dup.success and dup.offending == 5
    assert dup.examples == [{"row": r, "duplicate_of": 0} for r in range(100, 105)]
    assert loose.dataset["n_duplicate_rows"] == 5
    assert loose.dataset["n_duplicate_rows_conflicting_labels"] == 2

    at_limit = validate_dataset(ds, ValidateParams(**{**STRICT, "max_duplicate_fraction": 5 / 1797}))
    assert by_description(at_limit, "duplicate rows").success
    strict = validate_dataset(ds, ValidateParams(**{**STRICT, "max_duplicate_fraction": 0.001}))
    dup = by_description(strict, "duplicate rows <= 0.1% of samples")
    assert (dup.success, dup.offending) == (False, 5)


def test_wrong_shape(digits):
    outcome = validate_dataset(digits, ValidateParams(**{**STRICT, "sample_shape": [1, 28, 28]}))
    assert [r.description for r in outcome.failed] == ["n_values == 784", "sample shape == 1x28x28"]
    assert all(r.offending == 1797 for r in outcome.failed)
    assert outcome.failed[1].examples[0] == {"row": 0, "shape": "1x8x8"}
    # One reason, said once, naming the key and the value that fits (the README image-folder recipe).
    assert outcome.failure_message() == (
        "data validation failed (2 of 10 expectations): validate.sample_shape is [1,28,28] but the data's "
        "samples are [1,8,8]: set validate.sample_shape=[1,8,8] or null"
    )


def broken_each_way(digits):
    """(params, data) pairs that each fail one expectation; together every expectation fails once."""
    X = digits.X.copy()
    X[1, 0, 0, 0], X[2, 0, 0, 1], X[3, 0, 0, 2], X[4, 0, 0, 3] = np.nan, np.inf, -5.0, 99.0
    X[100:400] = X[0]
    y = digits.y.copy()
    y[500] = 12
    keep = np.r_[np.flatnonzero(digits.y != 3), np.flatnonzero(digits.y == 3)[:4]]
    return [
        (dict(STRICT, max_duplicate_fraction=0.01), copy(digits, X=X)),
        (dict(STRICT, labels=list(range(9))), digits),
        (dict(STRICT, labels=list(range(11))), digits),
        (dict(STRICT, labels=None), copy(digits, y=y)),
        (dict(STRICT, sample_shape=[1, 28, 28]), digits),
        (STRICT, digits.subset(keep)),
    ]


def test_every_failure_names_its_key_and_what_to_set(digits):
    seen = set()
    for cfg, ds in broken_each_way(digits):
        outcome = validate_dataset(ds, ValidateParams(**cfg))
        message = outcome.failure_message()
        for r in outcome.failed:
            seen.add(r.description)
            assert r.advice and r.advice in message
            if r.key is None:  # always checked: the advice says what to fix in the data
                assert "the data" in r.advice
            else:  # "validate.x is <value> but <what the data holds>: set validate.x=<fits> or ..."
                assert r.advice.startswith(f"{r.key} is ") and "set validate." in r.advice
    assert len(seen) == 11  # every expectation the suite can hold has failed once
    by = {r.description: r.advice for r in validate_dataset(
        broken_each_way(digits)[0][1], ValidateParams(**broken_each_way(digits)[0][0])).failed}
    assert by["row_min >= 0"].endswith("set validate.value_min=-5 or null, or fix the data")
    assert by["duplicate rows <= 1% of samples"] == (
        "validate.max_duplicate_fraction is 0.01 but 300 of 1797 samples (e.g. row 100 (duplicate_of=0), "
        "row 101 (duplicate_of=0), row 102 (duplicate_of=0), row 103 (duplicate_of=0), row 104 "
        "(duplicate_of=0)) (16.7%) repeat an earlier row: remove the duplicates or set "
        "validate.max_duplicate_fraction=0.167"
    )
    present = validate_dataset(digits, ValidateParams(**dict(STRICT, labels=list(range(11))))).failed
    assert present[0].advice.startswith("validate.labels is [0,1,2,3,4,5,6,7,8,9,10] but the data has no "
                                        "sample of label(s) '10'")
    assert present[0].advice.endswith("set validate.labels=[0,1,2,3,4,5,6,7,8,9] or null")


def test_table_data_validates(digits):
    flat = Dataset(X=digits.X.reshape(1797, 64), y=digits.y, classes=digits.classes, source="csv")
    outcome = validate_dataset(flat, ValidateParams(sample_shape=[64]))
    assert outcome.success and by_description(outcome, "sample shape == 64").offending == 0


def test_on_failure_error_vs_warn(digits):
    X = digits.X.copy()
    X[3, 0, 0, 0] = np.nan
    outcome = validate_dataset(copy(digits, X=X), ValidateParams(**STRICT))
    assert check_outcome(outcome, "warn") is None
    with pytest.raises(UserError) as err:
        check_outcome(outcome, "error", source="data/raw/dataset.npz")
    assert str(err.value) == (
        "data/raw/dataset.npz: data validation failed (1 of 10 expectations): "
        "NaN values in 1 of 1797 samples (e.g. row 3 (n_nan=1)): clean or impute the data "
        "(always checked: nothing can train on NaN)"
    )


def test_json_is_deterministic_and_summary_readable(digits, tmp_path):
    X = digits.X.copy()
    X[5, 0, 0, 0] = 99.0
    ds = copy(digits, X=X)
    cfg = ValidateParams(**STRICT)
    first, second = validate_dataset(ds, cfg), validate_dataset(ds, cfg)
    write_outcome(first, tmp_path / "a.json", tmp_path / "a.md")
    write_outcome(second, tmp_path / "b.json", tmp_path / "b.md")
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    assert (tmp_path / "a.md").read_text() == (tmp_path / "b.md").read_text()

    data = json.loads((tmp_path / "a.json").read_text())
    assert set(data) == {"success", "n_expectations", "n_failed", "expectations", "dataset", "settings"}
    assert (data["success"], data["n_expectations"], data["n_failed"]) == (False, 10, 1)
    assert data["expectations"][3] == {
        "name": "expect_column_values_to_be_between", "description": "row_max <= 16", "success": False,
        "offending": 1, "unit": "samples", "examples": [{"row": 5, "row_max": 99.0}],
        "key": "validate.value_max",
        "advice": "validate.value_max is 16 but 1 of 1797 samples (e.g. row 5 (row_max=99.0)) go above it "
                  "(the data's maximum is 99): set validate.value_max=99 or null, or fix the data",
    }
    assert data["expectations"][0]["key"] is None and data["expectations"][0]["advice"] is None
    assert data["settings"]["value_max"] == 16.0
    md = (tmp_path / "a.md").read_text()
    assert md.startswith("# Data validation: FAILED (1 of 10 expectations)")
    assert "| **FAIL** | row_max <= 16 | 1 of 1797 samples | row 5 (row_max=99.0) |" in md
    assert "| pass | no NaN values | 0 of 1797 samples | - |" in md
    assert "## What to change\n\n- validate.value_max is 16 but" in md


def test_missing_labels_are_named_in_order_whatever_the_hash_seed(digits):
    """GX returns missing values from a set; the examples come from validate.labels, in its order."""
    two = digits.subset(np.flatnonzero(digits.y < 2))
    outcome = validate_dataset(two, ValidateParams(**{**STRICT, "labels": list(range(40))}))
    present = by_description(outcome, "every expected label")
    assert (present.offending, present.examples) == (38, ["2", "3", "4", "5", "6"])
