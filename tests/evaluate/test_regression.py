"""The CI gate: tolerances, directions, missing/new metrics, the thresholds file and the git baseline."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest

from dlrig.errors import UserError
from dlrig.evaluate.regression import (
    baseline_from_git,
    check_regression,
    load_thresholds,
    parse_thresholds,
    read_metrics_files,
)

F = "reports/metrics.json"
THRESHOLDS = {
    "metrics": [
        {"path": "test.accuracy", "file": F, "direction": "higher", "abs_tol": 0.01},
        {"path": "test.log_loss", "file": F, "direction": "lower", "rel_tol": 0.1},
    ]
}
BASE = {F: {"test": {"accuracy": 0.95, "log_loss": 0.20, "n": 360}}}


def _current(**test):
    return {F: {"test": {**BASE[F]["test"], **test}}}


def _status(result):
    return {r.metric: r.status for r in result.rows}


def test_unchanged_metrics_pass():
    result = check_regression(BASE, BASE, THRESHOLDS)
    assert result.ok and _status(result) == {"test.accuracy": "ok", "test.log_loss": "ok"}
    assert result.markdown().startswith("**Metrics check passed**")


def test_worse_accuracy_beyond_tolerance_fails_and_is_named():
    result = check_regression(_current(accuracy=0.93), BASE, THRESHOLDS)
    assert not result.ok
    assert _status(result) == {"test.accuracy": "REGRESSED", "test.log_loss": "ok"}
    row = result.rows[0]
    assert row.change == pytest.approx(-0.02) and row.allowed == 0.01 and row.limit == pytest.approx(0.94)
    md = result.markdown()
    assert md.startswith("**Metrics check FAILED**: `test.accuracy` (regressed)")
    assert "| `test.accuracy` | reports/metrics.json | 0.95 | 0.93 | -0.02 | ≥ 0.94 | **REGRESSED** |" in md


def test_worsening_within_or_exactly_at_tolerance_passes():
    assert check_regression(_current(accuracy=0.945), BASE, THRESHOLDS).ok
    assert check_regression(_current(accuracy=0.94), BASE, THRESHOLDS).ok  # 0.95 - 0.94 is 0.01 + float noise
    assert check_regression(_current(accuracy=0.99), BASE, THRESHOLDS).ok  # better is always fine


def test_lower_is_better_direction_with_relative_tolerance():
    # log_loss baseline 0.20, rel_tol 0.1 -> may rise by 0.02 to 0.22.
    assert check_regression(_current(log_loss=0.15), BASE, THRESHOLDS).ok
    assert check_regression(_current(log_loss=0.215), BASE, THRESHOLDS).ok
    result = check_regression(_current(log_loss=0.25), BASE, THRESHOLDS)
    assert _status(result)["test.log_loss"] == "REGRESSED"
    assert "≤ 0.22" in result.markdown() and "`test.log_loss` (regressed)" in result.markdown()


def test_the_looser_of_abs_and_rel_tolerance_applies():
    th = {"metrics": [{"path": "test.accuracy", "file": F, "direction": "higher", "abs_tol": 0.01, "rel_tol": 0.05}]}
    # rel: 0.05 * 0.95 = 0.0475 > abs 0.01
    assert check_regression(_current(accuracy=0.91), BASE, th).ok
    assert not check_regression(_current(accuracy=0.90), BASE, th).ok


def test_missing_in_current_fails_new_in_baseline_passes():
    th = {"metrics": [*THRESHOLDS["metrics"], {"path": "test.ece", "file": F, "direction": "lower"}]}
    cur = {F: {"test": {"accuracy": 0.95, "ece": 0.03}}}
    result = check_regression(cur, BASE, th)
    assert _status(result) == {"test.accuracy": "ok", "test.log_loss": "missing", "test.ece": "new"}
    assert not result.ok and "`test.log_loss` (missing)" in result.markdown()
    # A whole file missing from the current run: every metric in it is missing.
    assert _status(check_regression({}, BASE, THRESHOLDS)) == {"test.accuracy": "missing", "test.log_loss": "missing"}
    # New metrics alone never fail the gate (no baseline file at all: everything is new).
    assert _status(check_regression(_current(ece=0.03), {}, th)) == dict.fromkeys(_status(result), "new")
    assert check_regression(_current(ece=0.03), {}, th).ok


def test_nan_current_value_is_a_regression_and_json_stays_valid():
    result = check_regression(_current(accuracy=None), BASE, THRESHOLDS)
    assert _status(result)["test.accuracy"] == "REGRESSED"
    out = result.to_dict()
    json.dumps(out, allow_nan=False)
    assert out["ok"] is False and out["rows"][0]["current"] is None


def test_path_at_a_non_number_is_a_user_error():
    th = {"metrics": [{"path": "test", "file": F, "direction": "higher"}]}
    with pytest.raises(UserError, match="reports/metrics.json: test: must point at a number"):
        check_regression(BASE, BASE, th)


def test_list_indices_in_paths():
    th = {"metrics": [{"path": "folds.1.accuracy", "file": F, "direction": "higher"}]}
    cur = {F: {"folds": [{"accuracy": 0.9}, {"accuracy": 0.8}]}}
    base = {F: {"folds": [{"accuracy": 0.9}, {"accuracy": 0.85}]}}
    assert _status(check_regression(cur, base, th)) == {"folds.1.accuracy": "REGRESSED"}


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("metrics:\n  - {path: test.accuracy, file: m.json, direction: up}\n",
         "t.yaml: metrics.0.direction must be one of 'higher' or 'lower' (got 'up')"),
        ("metrics:\n  - {path: a, file: m.json, direction: higher, abs_tolerance: 0.1}\n",
         "t.yaml: metrics.0.abs_tolerance is not a known key"),
        ("metrics:\n  - {path: a, file: m.json, direction: lower, rel_tol: -0.1}\n",
         "t.yaml: metrics.0.rel_tol must be >= 0 (got -0.1)"),
        ("metrics:\n  - {path: a, file: m.json}\n", "t.yaml: metrics.0.direction is required"),
        ("metric: []\n", "t.yaml: metrics is required"),
        ("- just a list\n", "t.yaml: must be a mapping"),
    ],
)
def test_bad_thresholds_file_names_the_key(tmp_path, yaml_text, message):
    path = tmp_path / "t.yaml"
    path.write_text(yaml_text)
    with pytest.raises(UserError) as err:
        load_thresholds(path)
    assert message in str(err.value)


def test_good_thresholds_file_loads(tmp_path):
    path = tmp_path / "thresholds.yaml"
    path.write_text(
        "# what CI guards\n"
        "metrics:\n"
        "  - path: test.accuracy   # dotted path\n"
        f"    file: {F}\n"
        "    direction: higher\n"
        "    abs_tol: 1e-2\n"
    )
    th = load_thresholds(path)
    assert th.metrics[0].abs_tol == 0.01 and th.metrics[0].rel_tol == 0.0 and th.files == [F]
    assert parse_thresholds(THRESHOLDS).files == [F]


# ------------------------------------------------------------------------------------ git baseline
def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false", *args],
        cwd=repo, check=True, capture_output=True,
    )


@pytest.fixture
def repo(tmp_path):
    _git(tmp_path, "init", "-q")
    (tmp_path / "reports").mkdir()
    (tmp_path / F).write_text(json.dumps(BASE[F]))
    _git(tmp_path, "add", F)
    _git(tmp_path, "commit", "-q", "-m", "baseline")
    return tmp_path


def test_baseline_from_git_reads_the_committed_version(repo):
    (repo / F).write_text(json.dumps(_current(accuracy=0.90)[F]))  # working copy changed, not committed
    baseline = baseline_from_git([F], cwd=repo)
    assert baseline == BASE
    current = read_metrics_files([F], root=repo)
    result = check_regression(current, baseline, THRESHOLDS)
    assert not result.ok and "`test.accuracy`" in result.markdown()
    # Works from a subdirectory too, with the path relative to it.
    assert baseline_from_git(["metrics.json"], cwd=repo / "reports") == {"metrics.json": BASE[F]}


def test_baseline_from_git_errors_name_the_file_or_revision(repo, tmp_path_factory):
    with pytest.raises(UserError, match="reports/other.json: not found at git revision 'HEAD'"):
        baseline_from_git([F, "reports/other.json"], cwd=repo)
    assert baseline_from_git([F, "reports/other.json"], cwd=repo, missing_ok=True) == BASE
    with pytest.raises(UserError, match="git revision 'nope': not found"):
        baseline_from_git([F], rev="nope", cwd=repo, missing_ok=True)
    with pytest.raises(UserError, match="git revision 'HEAD': not found"):
        baseline_from_git([F], cwd=tmp_path_factory.mktemp("not_a_repo"))
    (repo / "reports" / "bad.json").write_text("{not json")
    _git(repo, "add", "reports/bad.json")
    _git(repo, "commit", "-q", "-m", "bad")
    with pytest.raises(UserError, match="reports/bad.json: not valid JSON at git revision 'HEAD'"):
        baseline_from_git(["reports/bad.json"], cwd=repo)
    # The previous commit still has the good file only.
    assert baseline_from_git([F], rev="HEAD~1", cwd=repo) == BASE


def test_missing_git_binary_is_a_user_error(repo, monkeypatch):
    monkeypatch.setenv("PATH", str(repo))  # no git on this PATH
    with pytest.raises(UserError, match="git: not found"):
        baseline_from_git([F], cwd=repo)


def test_rows_are_floats_not_strings():
    row = check_regression(_current(accuracy=0.93), BASE, THRESHOLDS).rows[0]
    assert all(isinstance(v, float) and math.isfinite(v) for v in (row.baseline, row.current, row.change))


def test_the_repos_thresholds_watch_headline_metrics_that_exist():
    """thresholds.yaml parses, each watched metric is a headline number (reports/headline.json lists it),
    and the committed results hold every one: the gate cannot pass by watching nothing."""
    from dlrig.evaluate.holdout import HEADLINE_KEYS

    root = Path(__file__).resolve().parents[2]
    thresholds = load_thresholds(root / "thresholds.yaml")
    assert {m.path for m in thresholds.metrics} <= set(HEADLINE_KEYS.values())
    current = read_metrics_files(thresholds.files, root=root)
    result = check_regression(current, current, thresholds)
    assert [r.status for r in result.rows] == ["ok"] * len(thresholds.metrics), result.markdown()
