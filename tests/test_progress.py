"""The progress bar: when it shows, that it counts fits across worker processes, and that it never
changes a result or an output file."""

from __future__ import annotations

import io
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from dlrig.data.dataset import Dataset
from dlrig.params import parse_params
from dlrig.progress import NO_PROGRESS, TICKS, JobCounter, Progress, Tally, show_progress
from dlrig.select.nested import NestedCV
from dlrig.select.run import select_config
from dlrig.select.scorers import TorchScorer
from dlrig.select.space import build_space


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("CI", "DLRIG_QUIET", "DLRIG_PROGRESS"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_shown_on_a_terminal_only_and_quiet_in_ci_or_on_request(clean_env):
    assert show_progress(stream=_Tty()) is True
    assert show_progress(stream=io.StringIO()) is False  # a log file, a pipe
    assert show_progress(quiet=True, stream=_Tty()) is False  # --quiet
    clean_env.setenv("CI", "true")
    assert show_progress(stream=_Tty()) is False
    clean_env.setenv("DLRIG_PROGRESS", "1")  # asked for explicitly: shown even in CI or a log
    assert show_progress(stream=io.StringIO()) is True
    clean_env.setenv("DLRIG_QUIET", "1")  # quiet wins
    assert show_progress(stream=_Tty()) is False


def test_off_means_no_tally_and_plain_print(capsys):
    with Progress(10, "x", enabled=False) as bar:
        assert bar.tally is NO_PROGRESS and not bar.tally and bar.tally.jobs([3]) is None
        bar.write("a line")
        bar.update(3)
    captured = capsys.readouterr()
    assert captured.out == "a line\n" and captured.err == ""


def _count(path: str, ticks: int) -> None:
    tally = pickle.loads(pickle.dumps(Tally(path)))  # as a worker receives it
    tally.advance(ticks)
    tally.flush()


def test_worker_processes_count_into_the_parent_bar(capsys):
    from joblib import Parallel, delayed

    with Progress(6, "fits", enabled=True, interval=0.05) as bar:
        Parallel(n_jobs=2, backend="loky")(delayed(_count)(bar.tally.path, TICKS) for _ in range(4))
        bar.update(2)  # and the parent itself
        path = bar.tally.path
    err = capsys.readouterr().err
    assert "6/6 fits" in err and "100%" in err
    assert not os.path.exists(path)  # the tally file is gone with the bar
    _count(path, TICKS)  # a late worker neither fails nor creates the file
    assert not os.path.exists(path)


def test_epochs_move_the_bar_and_each_fit_counts_once(tmp_path):
    path = tmp_path / "tally"
    path.touch()
    counter = JobCounter(Tally(str(path)), epochs=[4, 10])
    for epoch in (1, 2):
        counter.on_epoch(0, {"epoch": epoch})
        counter.on_epoch(1, {"epoch": epoch})
    counter.on_epoch(0, {"epoch": 1})  # the same fit trained again (a failed stack retried): no double count
    counter.tally.flush()
    assert path.stat().st_size == TICKS * 2 // 4 + TICKS * 2 // 10
    counter.done()  # early stopping ended both: topped up to whole fits
    assert path.stat().st_size == 2 * TICKS


def _tiny(n_jobs: int, **over) -> tuple:
    params = parse_params({
        "seed": 3,
        "cv": {"depth": 2, "outer_folds": 3, "inner_folds": 2},
        "search": {"strategy": "grid", "space": {"optim.lr": [0.003, 0.01]}},
        "model": {"hidden": 8, "depth": 1}, "train": {"epochs": 3, "batch_size": 32},
        "compute": {"n_jobs": n_jobs}, **over,
    })
    rng = np.random.default_rng(0)
    y = np.arange(90) % 3
    X = (rng.normal(size=(90, 5)) + y[:, None]).astype(np.float32)
    return params, Dataset(X, y, ["a", "b", "c"], "test")


def test_planned_fits_match_the_fits_trained():
    params, ds = _tiny(1)
    for cv, search, expected in (
        ({"depth": 2, "outer_folds": 3, "inner_folds": 2}, {}, 3 * (2 * 2 + 1) + 2 * 2),
        ({"depth": 1, "outer_folds": 3}, {}, 2 * 3),
        ({"depth": 2, "outer_folds": 3, "inner_folds": 2}, {"strategy": "random", "n_trials": 5,
                                                          "space": {"optim.lr": {"low": 1e-3, "high": 1e-1,
                                                                                 "log": True}}},
         3 * (5 * 2 + 1) + 5 * 2),
    ):
        p = parse_params({**params.model_dump(by_alias=True), "cv": cv,
                          "search": {**params.search.model_dump(), **search}})
        base = p.fit_config()
        dims = build_space(p.search.space, base)
        driver = NestedCV(TorchScorer(ds.X, ds.y, 3, base, "accuracy"), ds.y, None, dims, p.search, p.cv,
                          p.seed, start={})
        assert driver.planned_fits() == expected, (cv, search)


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_progress_on_or_off_gives_the_same_selection(tmp_path, capsys, n_jobs):
    params, ds = _tiny(n_jobs)
    reports = []
    for on in (False, True):
        params.compute.cache_dir = str(tmp_path / f"cache-{on}")
        report = select_config(params, ds, progress=on, log=lambda _line: None)
        reports.append(json.dumps([report.folds, report.summary, report.final.config, report.space]))
    assert reports[0] == reports[1]
    assert "19/19 fits" in capsys.readouterr().err  # 3 x (2 configs x 2 folds + 1 refit) + 2 x 2


def test_stages_write_the_same_bytes_with_progress_on_and_off(tmp_path, monkeypatch, capsys):
    """detect, train and compare on a tiny run, with the bar forced on (and two worker processes) and off."""
    from tests.stages.test_stages import TINY, stage, write_params

    params = {**TINY, "data": {"source": "synthetic", "synthetic": {"n_samples": 150, "n_classes": 3,
                                                                    "n_features": 6}},
              "train": {"epochs": 3, "batch_size": 32}}
    first = None
    for on in (True, False):
        monkeypatch.setenv("DLRIG_PROGRESS" if on else "DLRIG_QUIET", "1")
        monkeypatch.delenv("DLRIG_QUIET" if on else "DLRIG_PROGRESS", raising=False)
        tmp = tmp_path / str(on)
        tmp.mkdir()
        p = str(write_params(tmp / "params.yaml", {**params, "compute": {"n_jobs": 2, "cache_dir": None}}))
        raw, meta, train, test = (str(tmp / n) for n in ("raw.npz", "meta.json", "train.npz", "test.npz"))
        stage("prepare")(["--params", p, "--out", raw, "--meta", meta])
        (tmp / "validation.json").write_text(json.dumps({"success": True}))
        stage("split")(["--params", p, "--data", raw, "--meta", meta, "--validation", str(tmp / "validation.json"),
                        "--train", train, "--test", test, "--report", str(tmp / "out/split.json")])
        stage("detect")(["--params", p, "--train", train, "--meta", meta, "--out", str(tmp / "out/detect.json")])
        stage("train")(["--params", p, "--train", train, "--meta", meta, "--model", str(tmp / "out/model.pt"),
                        "--logdir", str(tmp / "out/train"), "--cvdir", str(tmp / "out/cv"),
                        "--run-info", str(tmp / "run.json")])
        stage("compare")(["--params", p, "--train", train, "--test", test, "--meta", meta,
                          "--model", str(tmp / "out/model.pt"), "--folds", str(tmp / "out/cv/folds.json"),
                          "--out", str(tmp / "out/compare.json"), "--table", str(tmp / "out/compare.md")])
        err, names = capsys.readouterr().err, ("detect: out-of-fold fits", "train: nested CV", "compare: baseline fits")
        assert [b for b in names if f"{b}: 100%" in err] == (list(names) if on else [])
        files = {f.relative_to(tmp / "out"): f.read_bytes() for f in sorted((tmp / "out").rglob("*")) if f.is_file()}
        assert Path("model.pt") in files and Path("cv/folds.json") in files
        if first is None:
            first = files
    assert files.keys() == first.keys()
    assert [name for name in files if files[name] != first[name]] == []
