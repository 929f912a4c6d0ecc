"""The transfer study (dlrig.studies.transfer): its verdict follows the numbers, a tiny real run gives sane
accuracies without opening a single network connection, and bad settings stop in one line."""

from __future__ import annotations

import socket

import numpy as np
import pytest
from sklearn.datasets import load_digits

from dlrig.data.dataset import Dataset
from dlrig.errors import UserError
from dlrig.params import ReportParams, parse_params
from dlrig.report.studies import render_page
from dlrig.studies import transfer
from dlrig.train.checkpoint import save_model


def fake(diffs: dict[str, list[float]], sizes=("5", "10", "50", "all")) -> dict:
    return {"sizes": list(sizes), "per_class": [5, 10, 50, 139][: len(sizes)], "margin": 0.01, "seeds": 3,
            "uses_checkpoint": list(diffs),
            "vs_scratch": {m: [{"diff": d, "ci_low": d - 0.02, "ci_high": d + 0.02} for d in ds]
                           for m, ds in diffs.items()}}


def test_the_verdict_follows_the_numbers():
    pays = transfer.verdict(fake({"finetune": [0.20, 0.10, 0.005, 0.0], "linear_probe": [0.15, 0.0, -0.1, -0.2]}))
    assert pays.startswith("Transfer pays with few labels: at 5 per class, finetune beats scratch by +20.0")
    assert "scratch catches up at 50 per class" in pays
    never = transfer.verdict(fake({"finetune": [0.20, 0.10, 0.05, 0.03]}))
    assert "scratch does not catch up within the sizes tried" in never and "139 per class (all)" in never
    nothing = transfer.verdict(fake({"finetune": [-0.05, -0.01, 0.0, 0.0]}))
    assert nothing.startswith("Transfer did not pay at these settings: at 5 per class")


def data():
    d = load_digits()
    X, y = d.images[:, None].astype(np.float32), d.target
    classes = [str(c) for c in range(10)]
    return (Dataset(X[:700], y[:700], classes, "digits"), Dataset(X[700:1000], y[700:1000], classes, "digits"))


def tiny(**study) -> object:
    return parse_params({
        "model": {"hidden": 16, "depth": 2}, "train": {"epochs": 12, "batch_size": 32},
        "compute": {"n_jobs": 1},
        "studies": {"transfer": {"source_classes": [0, 1, 2, 3, 4], "samples_per_class": [3, "all"], "seeds": 3,
                                 "target_overrides": {"train.early_stopping": None, "optim.lr": 0.01},
                                 "min_steps": 20, "pca_components": 5, **study}}})


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the transfer study opened a network connection")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def pretrained(params, train, path):
    result, config, classes = transfer.pretrain(params, train)
    save_model(path, result.model, config, sample_shape=train.sample_shape, classes=classes, seed=params.seed,
               extra={"source_classes": list(params.studies.transfer.source_classes)})
    return path


def test_a_tiny_run_is_sane_offline_and_renders(tmp_path, no_network):
    params = tiny()
    train, test = data()
    results = transfer.run(params, train, test, str(pretrained(params, train, tmp_path / "s.pt")))
    assert results["methods"] == ["scratch", "linear_probe", "finetune", "finetune_top", "gradual",
                                  "pretrained + logreg", "pca + logreg", "hog + logreg"]
    assert results["per_class"][0] == 3 and results["per_class"][1] >= 60
    assert results["source"]["test_accuracy"] > 0.6  # chance: 0.2
    for method, cells in results["curves"].items():
        assert all(0 <= c["min"] <= c["mean"] <= c["max"] <= 1 for c in cells), method
        assert len(cells[0]["scores"]) == 3
    assert results["curves"]["pca + logreg"][1]["mean"] > 0.8  # every target row: an easy task
    assert len({results["curves"][m][0]["mean"] for m in results["methods"][:5]}) >= 4  # modes differ
    d = results["vs_scratch"]["finetune"][0]
    assert d["ci_low"] <= d["diff"] <= d["ci_high"]
    assert results["verdict"] == transfer.verdict(results)
    html = render_page({"transfer": ("transfer.json", results)}, tmp_path / "fig", ReportParams())
    assert "Difference to scratch" in html and results["verdict"][:40] in html
    assert (tmp_path / "fig" / "transfer" / "curves.png").stat().st_size > 10_000


def test_bad_settings_stop_in_one_line(tmp_path):
    train, test = data()
    params = tiny()
    path = str(pretrained(params, train, tmp_path / "s.pt"))
    with pytest.raises(UserError, match=r"^studies.transfer.source_classes: \[12\] not among"):
        transfer.run(tiny(source_classes=[0, 12]), train, test, path)
    with pytest.raises(UserError, match=r"s.pt: pretrained on classes \[0, 1, 2, 3, 4\], but studies.transfer"):
        transfer.run(tiny(source_classes=[0, 1, 2]), train, test, path)
    with pytest.raises(UserError, match=r"^studies.transfer.samples_per_class: 500 asked but a target class"):
        transfer.run(tiny(samples_per_class=[500]), train, test, path)
    with pytest.raises(UserError, match=r"layer '2.weight' has shape \[16, 64\] in the checkpoint but \[8, 64\]"):
        transfer.run(tiny(target_overrides={"model.hidden": 8}), train, test, path)
    with pytest.raises(UserError, match=r"^params.yaml: studies.transfer.modes must include scratch"):
        tiny(modes=["finetune"])
