"""data.source modular: the whole table of (a op b) mod p, checked against Python's own arithmetic."""

from __future__ import annotations

import numpy as np
import pytest

from dlrig.data.sources import load_source, make_modular
from dlrig.data.validate import validate_dataset
from dlrig.errors import UserError
from dlrig.params import DataParams, ModularParams, Params, ValidateParams, dump_params, parse_params


@pytest.mark.parametrize("op, fn", [("add", lambda a, b, p: (a + b) % p), ("sub", lambda a, b, p: (a - b) % p),
                                    ("mul", lambda a, b, p: (a * b) % p),
                                    ("div", lambda a, b, p: (a * pow(b, p - 2, p)) % p)])
def test_every_row_is_its_operation_mod_p(op, fn):
    p = 13
    ds = make_modular(ModularParams(p=p, op=op))
    a, b = ds.X[:, 0].astype(int), ds.X[:, 1].astype(int)
    assert np.array_equal(ds.X, np.round(ds.X))  # exact integer codes
    assert ds.y.tolist() == [fn(int(x), int(z), p) for x, z in zip(a, b, strict=True)]
    assert ds.classes == [str(k) for k in range(p)] and ds.sample_shape == [2]
    pairs = {(int(x), int(z)) for x, z in zip(a, b, strict=True)}
    expected = {(x, z) for x in range(p) for z in range(p) if op != "div" or z != 0}
    assert pairs == expected and len(pairs) == len(ds.y)  # every pair once: no duplicate rows
    if op in ("add", "sub", "div"):  # a group: every result equally often
        assert len(set(np.bincount(ds.y, minlength=p).tolist())) == 1


def test_div_inverts_mul():
    p = 11
    div = make_modular(ModularParams(p=p, op="div"))
    a, b = div.X[:, 0].astype(int), div.X[:, 1].astype(int)
    assert np.array_equal((div.y * b) % p, a)


def test_load_source_dispatches_and_is_deterministic():
    cfg = DataParams(source="modular", modular=ModularParams(p=7, op="sub"))
    one, two = load_source(cfg, seed=1), load_source(cfg, seed=2)  # no randomness: the seed is unused
    assert one.source == "modular" and len(one.y) == 49
    assert np.array_equal(one.X, two.X) and np.array_equal(one.y, two.y)
    assert one.meta()["modular"] == {"p": 7, "op": "sub"}


def test_div_needs_a_prime_in_one_line():
    raw = dump_params(Params())
    raw["data"]["modular"] = {"p": 12, "op": "div"}
    with pytest.raises(UserError) as exc:
        parse_params(raw)
    msg = str(exc.value)
    assert "data.modular" in msg and "prime" in msg and "\n" not in msg
    parse_params({**raw, "data": {**raw["data"], "modular": {"p": 12, "op": "mul"}}})  # fine without div


def test_validate_names_the_keys_to_set_and_passes_once_set():
    ds = make_modular(ModularParams(p=11))
    digits = ValidateParams(value_min=0.0, value_max=16.0, labels=list(range(10)), sample_shape=[1, 8, 8])
    failed = validate_dataset(ds, digits)
    assert not failed.success
    message = failed.failure_message()
    assert "validate.sample_shape" in message and "validate.labels" in message
    ok = validate_dataset(ds, ValidateParams(value_min=0.0, value_max=10.0, labels=None, sample_shape=[2]))
    assert ok.success, ok.failure_message()


def test_the_default_split_takes_it():
    from dlrig.data.split import holdout_split
    from dlrig.params import SplitParams

    ds = make_modular(ModularParams(p=23, op="mul"))
    train, test, report = holdout_split(ds, SplitParams(), seed=0)
    assert len(train.y) + len(test.y) == 23 * 23 and report["n_test"] == len(test.y) > 0
    rows = {tuple(r) for r in train.X.tolist()}
    assert not rows & {tuple(r) for r in test.X.tolist()}  # a pair is on one side only
