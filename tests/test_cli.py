"""The `dlrig` console script and the error handling every stage shares."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dlrig.cli import main
from dlrig.errors import UserError
from dlrig.io import save_json
from dlrig.stage import run_stage

ROOT = Path(__file__).resolve().parents[1]


def folds(scores: list[float], config: dict | None = None) -> list[dict]:
    return [{"fold": k, "train_index": list(range(k, 40 + k)), "test_index": [100 + k],
             "best_config": config or {"optim.lr": 0.01}, "outer_score": s,
             "outer_metrics": {"accuracy": s}} for k, s in enumerate(scores)]


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
        raise SystemExit(0)
    out = capsys.readouterr()
    return exit_.value.code, out.out, out.err


def test_compare_refuses_a_file_that_is_not_a_folds_record(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save_json("metrics.json", {"test": {"accuracy": 0.97}})
    code, out, err = run(["compare", "workspace", "workspace", "--folds", "metrics.json"], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: metrics.json at 'workspace': not a folds record")


def test_compare_warns_when_a_run_is_compared_with_itself(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save_json("reports/cv/folds.json", folds([0.9, 0.92, 0.95]))
    code, out, err = run(["compare", "workspace", "workspace"], capsys)
    assert code == 0 and "identical fold records" in err and "compares a run with itself" in err
    assert "corrected resampled t-test" in out


def test_compare_says_nothing_extra_for_two_different_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save_json("a.json", folds([0.9, 0.92, 0.95]))
    save_json("b.json", folds([0.8, 0.85, 0.83], {"optim.lr": 0.1}))
    monkeypatch.setattr("dlrig.cli._read_rev", lambda path, rev: json.loads(Path(f"{rev}.json").read_text()))
    code, out, err = run(["compare", "a", "b"], capsys)
    assert code == 0 and err == "" and "a 0.9233, b 0.8267" in out


def test_ctrl_c_is_one_line_and_exit_130(capsys):
    def interrupted(_argv):
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as exit_:
        run_stage(interrupted)
    err = capsys.readouterr().err
    assert exit_.value.code == 130 and err.count("\n") == 1 and err.startswith("interrupted:")


def test_a_failed_stage_changes_none_of_its_outputs(tmp_path):
    """Every stage runs in one output set: an error after some outputs were written leaves the old set."""
    save_json(tmp_path / "a.json", {"old": True})

    def stage(_argv):
        save_json(tmp_path / "a.json", {"old": False})
        save_json(tmp_path / "b.json", {"new": True})
        raise UserError("data/x.npz: something is wrong")

    with pytest.raises(SystemExit):
        run_stage(stage)
    assert json.loads((tmp_path / "a.json").read_text()) == {"old": True} and not (tmp_path / "b.json").exists()


def test_ctrl_c_in_a_real_process_prints_one_line(tmp_path):
    """SIGINT while a stage works: one line on stderr, exit 130, no traceback, nothing written."""
    script = tmp_path / "stage.py"
    script.write_text(
        "import sys, time\n"
        "from dlrig.stage import run_stage\n"
        "from dlrig.io import save_json\n"
        "def main(argv):\n"
        f"    save_json({str(tmp_path / 'out.json')!r}, {{'x': 1}})\n"
        "    print('ready', flush=True)\n"
        "    time.sleep(30)\n"
        "run_stage(main)\n"
    )
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline() == "ready\n"
    proc.send_signal(subprocess.signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130 and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "out.json").exists()


@pytest.mark.parametrize("text", ["", "seed: 42\n"])
def test_train_with_an_empty_or_partial_params_file_changes_nothing(tmp_path, text):
    """An empty params.yaml once trained a 5x3 nested CV on built-in defaults over the real outputs."""
    (tmp_path / "params.yaml").write_text(text)
    model, cv = tmp_path / "models/model.pt", tmp_path / "reports/cv/summary.json"
    for path in (model, cv):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("the previous run's")
    proc = subprocess.run([sys.executable, str(ROOT / "stages/train.py")], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: params.yaml: " + ("is empty" if not text else "missing section(s) data"))
    assert model.read_text() == cv.read_text() == "the previous run's"


def test_lr_range_prints_a_search_range_and_refuses_a_bad_option_in_one_line(tmp_path, capsys, monkeypatch):
    import numpy as np
    import yaml

    from dlrig.data.dataset import Dataset
    from dlrig.params import Params, dump_params

    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    X = np.concatenate([c + rng.normal(0, 1, (60, 4)) for c in rng.normal(0, 2, (3, 4))]).astype(np.float32)
    Dataset(X=X, y=np.repeat(np.arange(3), 60), classes=["a", "b", "c"], source="synthetic").save(
        "train.npz", "meta.json")
    params = {**dump_params(Params()), "model": {"name": "mlp", "hidden": 16, "depth": 1},
              "train": {"batch_size": 32}}
    Path("params.yaml").write_text(yaml.safe_dump(params))
    before = Path("params.yaml").read_text()
    argv = ["lr-range", "--train", "train.npz", "--meta", "meta.json", "--steps", "60", "--start", "1e-4",
            "--end", "100", "--out", "lr.json", "--plot", "lr.png"]
    code, out, err = run(argv, capsys)
    assert code == 0 and ("ran every step" in out or "diverged" in out)
    assert "\nsearch:\n  space:\n    optim.lr: {low: " in out and ", log: true, count: 4}" in out
    record = json.loads(Path("lr.json").read_text())
    assert len(record["lrs"]) == len(record["smoothed"]) <= 60 and record["lrs"][0] == 1e-4
    assert Path("lr.png").stat().st_size > 5000 and Path("params.yaml").read_text() == before  # printed only
    code, out, err = run([*argv[:-4], "--start", "0"], capsys)
    assert code == 2 and out == "" and err == "error: --start must be a learning rate > 0 (got 0)\n"
