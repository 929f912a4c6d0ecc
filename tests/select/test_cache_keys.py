"""The fit cache is keyed by everything a result depends on, derived from the config the fit receives.

A key computed from the searched overrides alone once served the baseline MLP's scores to
`dvc exp run -S model.name=cnn`. These tests change each input in turn and require a miss.
"""

from __future__ import annotations

import json
import typing
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import BaseModel

from dlrig.errors import UserError
from dlrig.params import FitConfig
from dlrig.select.scorers import ResultCache, TorchScorer


def leaves(model: type[BaseModel], value: BaseModel, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, current value, annotation) of every leaf field of a params model."""
    out = []
    for name, field in type(value).model_fields.items():
        current = getattr(value, name)
        if isinstance(current, BaseModel):
            out += leaves(type(current), current, f"{prefix}{name}.")
            if type(None) in typing.get_args(field.annotation):  # an optional section: switched off
                out.append((f"{prefix}{name}", current, field.annotation))
        else:
            out.append((f"{prefix}{name}", current, field.annotation))
    return out


def literal_options(annotation: Any) -> list[Any]:
    for arg in [annotation, *typing.get_args(annotation)]:
        if typing.get_origin(arg) is typing.Literal:
            return list(typing.get_args(arg))
    return []


def other_value(base: FitConfig, key: str, current: Any, annotation: Any, file: str = "") -> FitConfig:
    """A valid config that differs from ``base`` in ``key`` only (``file``: a path for the path keys)."""
    if key in FILE_KEYS:  # a checkpoint path (its content is keyed too: test_checkpoint_content_...)
        candidates: list[Any] = [file]
    elif isinstance(current, BaseModel):
        candidates = [None]
    elif isinstance(current, bool):
        candidates = [not current]
    elif isinstance(current, int):
        candidates = [current + 2, current + 1, max(current - 1, 0)]
    elif isinstance(current, float):
        candidates = [current * 0.5, current + 0.1, 0.5, 0.05, 1.0]
    elif key == "model.name":  # the union's tag: another family
        from dlrig.params import MODEL_FAMILIES

        candidates = [name for name in MODEL_FAMILIES if name != current]
    elif isinstance(current, str):
        candidates = [o for o in literal_options(annotation) if o != current]
    elif isinstance(current, list):
        candidates = [[8], [4, 4]]
    elif current is None:
        candidates = [1.0, 1, 0.5]
    else:
        raise AssertionError(f"{key}: no alternative value for {current!r}")
    for candidate in candidates:
        try:
            changed = base.with_overrides({key: candidate})
        except UserError:
            continue
        if changed.model_dump() != base.model_dump():
            return changed
    raise AssertionError(f"{key}: found no valid different value among {candidates}")


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4)).astype(np.float32)
    y = np.repeat(np.arange(3), 20)
    return X, y


FILE_KEYS = {"train.distill.teacher", "train.transfer.pretrained"}


def test_every_training_key_changes_the_key(data, tmp_path):
    """Each leaf of FitConfig (searched or not) changed in turn gives another cache key."""
    X, y = data
    file = tmp_path / "model.pt"
    file.write_bytes(b"a checkpoint")  # only hashed here, never loaded
    base = FitConfig()
    jobs = [({}, np.arange(40), np.arange(40, 60), 0)]
    reference = TorchScorer(X, y, 3, base, "accuracy").jobs_key("cv", jobs)
    checked = []
    for key, current, annotation in leaves(FitConfig, base):
        if key == "train.transfer.mode":  # any mode but scratch needs a checkpoint: compare with one given
            start = base.with_overrides({"train.transfer.pretrained": str(file)})
            changed = other_value(start, key, current, annotation, str(file))
            assert (TorchScorer(X, y, 3, changed, "accuracy").jobs_key("cv", jobs)
                    != TorchScorer(X, y, 3, start, "accuracy").jobs_key("cv", jobs)), key
            checked.append(key)
            continue
        changed = other_value(base, key, current, annotation, str(file))
        assert TorchScorer(X, y, 3, changed, "accuracy").jobs_key("cv", jobs) != reference, key
        checked.append(key)
    assert len(checked) > 40 and "model.name" in checked and "train.early_stopping" in checked
    assert FILE_KEYS <= set(checked)


@pytest.mark.parametrize("overrides", [
    {"train.distill.teacher": "{file}"},
    {"train.transfer.pretrained": "{file}", "train.transfer.mode": "finetune"},
])
def test_checkpoint_content_not_only_its_path_is_in_the_key(data, tmp_path, overrides):
    """A checkpoint rewritten at the same path (same size) is another fit: its bytes are in the key."""
    X, y = data
    file = tmp_path / "model.pt"
    file.write_bytes(b"weights A")
    config = FitConfig().with_overrides({k: v.format(file=file) for k, v in overrides.items()})
    jobs = [({}, np.arange(40), np.arange(40, 60), 0)]
    before = TorchScorer(X, y, 3, config, "accuracy").jobs_key("cv", jobs)
    assert TorchScorer(X, y, 3, config, "accuracy").jobs_key("cv", jobs) == before
    file.write_bytes(b"weights B")
    assert TorchScorer(X, y, 3, config, "accuracy").jobs_key("cv", jobs) != before


def test_rows_seed_data_device_threads_and_overrides_change_the_key(data, monkeypatch):
    X, y = data
    scorer = TorchScorer(X, y, 3, FitConfig(), "accuracy")
    job = ({}, np.arange(40), np.arange(40, 60), 0)
    ref = scorer.jobs_key("cv", [job])
    variants = {
        "train rows": [({}, np.arange(1, 41), job[2], 0)],
        "eval rows": [({}, job[1], np.arange(41, 60), 0)],
        "seed": [({}, job[1], job[2], 1)],
        "override": [({"optim.lr": 0.01}, job[1], job[2], 0)],
        "kind": None,
    }
    for name, jobs in variants.items():
        key = scorer.jobs_key("holdout", [job]) if jobs is None else scorer.jobs_key("cv", jobs)
        assert key != ref, name
    X2 = X.copy()
    X2[0, 0] += 1
    assert TorchScorer(X2, y, 3, FitConfig(), "accuracy").jobs_key("cv", [job]) != ref
    assert TorchScorer(X, y[::-1].copy(), 3, FitConfig(), "accuracy").jobs_key("cv", [job]) != ref
    assert TorchScorer(X, y, 4, FitConfig(), "accuracy").jobs_key("cv", [job]) != ref
    # The device a fit runs on: auto is the one it resolves to here (cpu on a machine without a GPU); a GPU
    # result differs from the CPU's in its last bits, and from another GPU model's.
    if not torch.cuda.is_available():
        assert TorchScorer(X, y, 3, FitConfig(), "accuracy", device="auto").jobs_key("cv", [job]) == ref
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU 1")
    gpu = TorchScorer(X, y, 3, FitConfig(), "accuracy", device="cuda").jobs_key("cv", [job])
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU 2")
    assert len({gpu, ref, TorchScorer(X, y, 3, FitConfig(), "accuracy", device="cuda").jobs_key("cv", [job])}) == 3
    # The torch threads the fits run with: two threads give other last bits than one (fit and fit_many).
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert scorer.jobs_key("cv", [job]) != ref
    monkeypatch.undo()
    assert scorer.jobs_key("cv", [job]) == ref
    # An override equal to the base value resolves to the same config: the same fit, the same key.
    assert scorer.jobs_key("cv", [({"optim.lr": FitConfig().optim.lr}, *job[1:])]) == ref


def small_config(**model: Any) -> FitConfig:
    return FitConfig.model_validate({
        "model": {"hidden": 8, "depth": 1, **model}, "train": {"epochs": 3, "batch_size": 16, "early_stopping": None},
    })


def test_a_non_searched_change_misses_the_real_cache(data, tmp_path):
    """The bug as a user met it: the same searched space, another model, and every result from the cache."""
    X, y = data
    folds = [(np.arange(0, 60, 2), np.arange(1, 60, 2)), (np.arange(1, 60, 2), np.arange(0, 60, 2))]
    configs = [{"optim.lr": 0.01}, {"optim.lr": 0.1}]

    def run(base: FitConfig) -> tuple[list[list[float]], ResultCache]:
        cache = ResultCache(tmp_path / "cache")
        trials = TorchScorer(X, y, 3, base, "accuracy", cache=cache).cv_trials(configs, folds, None, seed=0)
        return [t.metrics["neg_log_loss"] for t in trials], cache

    first, cache = run(small_config())
    assert (cache.hits, cache.misses) == (0, 1)
    again, cache = run(small_config())
    assert (cache.hits, cache.misses) == (1, 0) and again == first
    wider, cache = run(small_config(hidden=32))
    assert (cache.hits, cache.misses) == (0, 1) and wider != first


def test_a_damaged_entry_is_recomputed_and_overwritten(data, tmp_path):
    X, y = data
    lines: list[str] = []
    jobs_rows = (np.arange(0, 60, 2), np.arange(1, 60, 2))

    def holdout() -> tuple[dict[str, float], ResultCache]:
        cache = ResultCache(tmp_path / "cache", log=lines.append)
        scorer = TorchScorer(X, y, 3, small_config(), "accuracy", cache=cache)
        return scorer.holdout({}, *jobs_rows, seed=0), cache

    clean, _ = holdout()
    (entry,) = (tmp_path / "cache").rglob("*.json")
    entry.write_text(entry.read_text()[:40])  # truncated, as by a full disk or a killed copy
    result, cache = holdout()
    assert result == clean and (cache.hits, cache.misses) == (0, 1)
    assert len(lines) == 1 and lines[0].startswith(f"cache: {entry} is damaged (unreadable")
    assert json.loads(entry.read_text())["value"]["metrics"] == clean  # overwritten with the good result
    _, cache = holdout()
    assert (cache.hits, cache.misses) == (1, 0) and len(lines) == 1


def test_an_entry_under_another_name_is_never_used(data, tmp_path):
    """Entries carry their own key: one copied or edited under another name (a shared cache) is a miss."""
    X, y = data
    lines: list[str] = []
    cache = ResultCache(tmp_path / "cache", log=lines.append)
    scorer = TorchScorer(X, y, 3, small_config(), "accuracy", cache=cache)
    rows = (np.arange(0, 60, 2), np.arange(1, 60, 2))
    scorer.holdout({}, *rows, seed=0)
    key = scorer.jobs_key("holdout", [({"optim.lr": 0.5}, *rows, 0)], False)
    (entry,) = (tmp_path / "cache").rglob("*.json")
    target = tmp_path / "cache" / key[:2] / f"{key}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(entry.read_text())  # a result for lr 0.001, planted under lr 0.5's key
    assert cache.get(key) is None and "stored key does not match" in lines[-1]
