"""compute.backend: dask -- the train stage on a real Dask cluster (a scheduler and two worker processes on
127.0.0.1) gives the same metrics as a local run; a killed worker loses nothing; a scheduler that does not
answer or a worker with other dlrig code is refused in one line."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from tests.stages.test_stages import TINY, complete, stage

from dlrig.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
DASK = str(Path(sys.executable).with_name("dask"))

PARAMS = {
    **TINY,
    "train": {"epochs": 20, "batch_size": 16, "early_stopping": None},
    "cv": {"depth": 2, "outer_folds": 2, "inner_folds": 2},
    "search": {"strategy": "grid", "space": {"optim.lr": [0.003, 0.03]}},
    "compute": {"n_jobs": 1},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    """End a process group we started (scheduler or worker + its nanny), however it is doing."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """`dask scheduler` + two `dask worker` processes (one thread each), started once, always stopped."""
    logs = tmp_path_factory.mktemp("dask-logs")
    address = f"tcp://127.0.0.1:{_free_port()}"
    procs: dict[str, subprocess.Popen] = {}
    files = []

    def start(name: str, *args: str) -> None:
        files.append(open(logs / f"{name}.log", "w"))
        procs[name] = subprocess.Popen([DASK, *args], stdout=files[-1], stderr=files[-1], cwd=ROOT,
                                       start_new_session=True)

    try:
        start("scheduler", "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1],
              "--no-dashboard")
        for i in range(2):
            start(f"worker{i}", "worker", address, "--nthreads", "1", "--nworkers", "1", "--no-dashboard",
                  "--name", f"w{i}", "--host", "127.0.0.1")
        from distributed import Client

        with Client(address, timeout=30) as client:
            client.wait_for_workers(2, timeout=40)
        yield address, procs
    finally:
        for proc in reversed(list(procs.values())):
            _stop(proc)
        for f in files:
            f.close()


def prepare(tmp: Path, compute: dict) -> list[str]:
    tmp.mkdir(parents=True)
    params = {**PARAMS, "compute": {**PARAMS["compute"], **compute, "cache_dir": str(tmp / "cache")}}
    (tmp / "params.yaml").write_text(yaml.safe_dump(complete(params)))
    p, raw, meta = str(tmp / "params.yaml"), str(tmp / "raw.npz"), str(tmp / "meta.json")
    stage("prepare")(["--params", p, "--out", raw, "--meta", meta])
    stage("validate")(["--params", p, "--data", raw, "--meta", meta, "--out", str(tmp / "v.json"),
                       "--summary", str(tmp / "v.md")])
    stage("split")(["--params", p, "--data", raw, "--meta", meta, "--validation", str(tmp / "v.json"),
                    "--train", str(tmp / "train.npz"), "--test", str(tmp / "test.npz"),
                    "--report", str(tmp / "split.json")])
    return [sys.executable, str(ROOT / "stages/train.py"), "--params", p, "--train", str(tmp / "train.npz"),
            "--meta", meta, "--model", str(tmp / "model.pt"), "--logdir", str(tmp / "train"),
            "--cvdir", str(tmp / "cv"), "--run-info", str(tmp / "run.json")]


@pytest.fixture(scope="module")
def local_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("local") / "run"
    subprocess.run(prepare(tmp, {"backend": "local"}), check=True, capture_output=True)
    return tmp


def _same_results(a: Path, b: Path) -> None:
    for name in ("cv/metrics.json", "cv/folds.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


@pytest.mark.slow
def test_train_on_a_dask_cluster_equals_the_local_run(cluster, local_run, tmp_path):
    address, _ = cluster
    cmd = prepare(tmp_path / "dask", {"backend": "dask", "scheduler": address})
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "dask: 2 workers" in done.stdout
    _same_results(local_run, tmp_path / "dask")
    assert (tmp_path / "dask/model.pt").exists()


@pytest.mark.slow
def test_a_worker_killed_mid_run_loses_nothing(cluster, local_run, tmp_path):
    """Runs last in the module: it leaves the cluster with one worker."""
    address, procs = cluster
    cmd = prepare(tmp_path / "kill", {"backend": "dask", "scheduler": address})
    run = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cache = tmp_path / "kill/cache"
    deadline = time.monotonic() + 60
    while run.poll() is None and time.monotonic() < deadline and not list(cache.rglob("*.json")):
        time.sleep(0.02)  # the workers are busy once the first fits are cached
    assert run.poll() is None, "the run ended before a worker could be killed"
    os.killpg(procs["worker0"].pid, signal.SIGKILL)
    out, err = run.communicate(timeout=120)
    assert run.returncode == 0, err
    _same_results(local_run, tmp_path / "kill")


def test_an_unreachable_scheduler_fails_in_one_line_before_any_work(tmp_path):
    address = f"tcp://127.0.0.1:{_free_port()}"  # nothing listens there
    cmd = prepare(tmp_path / "none", {"backend": "dask", "scheduler": address, "connect_timeout": 2})
    start = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: params.yaml: compute.scheduler {address}: no scheduler answered within 2 s")
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "none/cache").exists()  # nothing was trained
    assert time.monotonic() - start < 30


def test_a_worker_with_other_dlrig_code_is_refused_naming_it():
    from dlrig.select.cluster import check_workers, worker_identity

    class Client:  # what client.run answers for each worker
        def __init__(self, answers):
            self.answers = answers

        def run(self, fn, on_error):
            return self.answers

    here = worker_identity()
    check_workers(Client({"tcp://a:1": here}), "where")  # same code: accepted
    with pytest.raises(UserError, match=r"^where: worker tcp://b:2 runs dlrig 0\.0\.9 .*install the same"):
        check_workers(Client({"tcp://a:1": here, "tcp://b:2": ("0.0.9", here[1])}), "where")
    with pytest.raises(UserError, match=r"worker tcp://a:1 cannot run dlrig \(ModuleNotFoundError"):
        check_workers(Client({"tcp://a:1": ModuleNotFoundError("No module named 'dlrig'")}), "where")


def test_dask_needs_a_scheduler_address():
    from dlrig.params import ComputeParams

    with pytest.raises(ValueError, match="tcp://host:port"):
        ComputeParams(backend="dask")
    with pytest.raises(ValueError, match="tcp://host:port"):
        ComputeParams(backend="dask", scheduler="localhost")


def test_a_job_that_kills_every_worker_is_one_line(monkeypatch):
    """After dask's allowed failures a KilledWorker ends the run: one line of ours, not dask's traceback."""
    import distributed

    from dlrig.errors import UserError
    from dlrig.select import cluster

    class Future:
        def result(self):
            raise distributed.KilledWorker("outer-1", "tcp://10.0.0.9:4000", 3)

    class Client:
        def scatter(self, *a, **k):
            return "shared"

        def submit(self, *a, **k):
            return Future()

        def cancel(self, futures):
            pass

    monkeypatch.setattr(distributed, "as_completed", lambda futures: iter(futures))
    with pytest.raises(UserError, match=r"a Dask job \(outer-1\) killed every worker that ran it "
                                        r"\(tcp://10.0.0.9:4000 last\)") as err:
        list(cluster.run_jobs(Client(), print, None, ["job"]))
    assert "\n" not in str(err.value)


def test_study_jobs_on_the_cluster_equal_the_local_ones(cluster):
    """The studies' seeds go through map_jobs: the label study's fits, on the cluster and locally."""
    from dlrig.params import ComputeParams, FitConfig
    from dlrig.select.cluster import map_jobs
    from dlrig.studies.labels import _job

    address, _ = cluster
    rng = np.random.default_rng(0)
    X = rng.normal(size=(90, 4)).astype(np.float32)
    y = np.repeat(np.arange(3), 30)
    X[np.arange(90), y] += 3
    config = FitConfig.model_validate({"model": {"hidden": 8, "depth": 1}, "train": {"epochs": 3}})
    jobs = [(X, y, np.arange(60), X[60:], y[60:], 3, config, seed) for seed in (1, 2, 3)]
    local = map_jobs(ComputeParams(n_jobs=1), _job, jobs)
    remote = map_jobs(ComputeParams(backend="dask", scheduler=address), _job, jobs)
    assert remote == local and len({r["neg_log_loss"] for r in local}) == 3


def test_map_jobs_counts_the_fits_its_worker_processes_train():
    """A study's fits in loky workers reach its cost record: without the merge its augmentation and
    distillation rows said 0 fits."""
    from dlrig.params import ComputeParams, FitConfig
    from dlrig.select.cluster import map_jobs
    from dlrig.studies.labels import _job
    from dlrig.train import work

    rng = np.random.default_rng(0)
    X = rng.normal(size=(90, 4)).astype(np.float32)
    y = np.repeat(np.arange(3), 30)
    config = FitConfig.model_validate({"model": {"hidden": 8, "depth": 1}, "train": {"epochs": 2}})
    jobs = [(X, y, np.arange(60), X[60:], y[60:], 3, config, seed) for seed in (1, 2, 3)]
    before = work.snapshot()
    parallel = map_jobs(ComputeParams(n_jobs=2), _job, jobs)
    counted = work.since(before)
    assert counted["fits"] == 3 and counted["flops"] > 0
    assert parallel == map_jobs(ComputeParams(n_jobs=1), _job, jobs)
