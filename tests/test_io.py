import hashlib

import numpy as np
import pytest
import torch

from dlrig.errors import UserError
from dlrig.io import (
    adopt_tree,
    atomic_path,
    immediate,
    load_checkpoint,
    load_json,
    load_npz,
    output_set,
    resolve,
    save_checkpoint,
    save_json,
    save_npz,
    save_text,
)


def test_atomic_write_leaves_old_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "metrics.json"
    save_json(target, {"accuracy": 0.9})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text('{"accuracy": 0.')  # half a file ...
        raise RuntimeError("crash")  # ... then the process dies
    assert load_json(target) == {"accuracy": 0.9}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temp file left behind


def test_npz_roundtrip_and_errors(tmp_path):
    save_npz(tmp_path / "d.npz", X=np.ones((2, 3), np.float32), y=np.array([0, 1]))
    data = load_npz(tmp_path / "d.npz")
    assert data["X"].shape == (2, 3) and data["y"].tolist() == [0, 1]
    with pytest.raises(UserError, match="missing array"):
        load_npz(tmp_path / "d.npz", required=("X", "groups"))
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="bad.npz: not a readable .npz"):
        load_npz(tmp_path / "bad.npz")
    with pytest.raises(UserError, match="file not found"):
        load_npz(tmp_path / "absent.npz")


def test_checkpoint_loads_with_weights_only(tmp_path):
    save_checkpoint(tmp_path / "m.pt", {"w": torch.ones(2), "config": {"a": 1}})
    assert load_checkpoint(tmp_path / "m.pt")["config"] == {"a": 1}
    # A checkpoint holding an arbitrary object would need pickle code execution: refused.
    torch.save({"obj": object()}, tmp_path / "evil.pt")
    with pytest.raises(UserError) as err:
        load_checkpoint(tmp_path / "evil.pt")
    # One line of ours, not torch's multi-line text with its advice to load with weights_only=False.
    message = str(err.value)
    assert "\n" not in message and "weights_only=False" not in message
    assert message.startswith(f"{tmp_path / 'evil.pt'}: holds objects other than tensors")


def test_a_truncated_checkpoint_is_one_line(tmp_path):
    save_checkpoint(tmp_path / "m.pt", {"w": torch.ones(200)})
    (tmp_path / "cut.pt").write_bytes((tmp_path / "m.pt").read_bytes()[:300])
    with pytest.raises(UserError, match="cut.pt: not a readable dlrig checkpoint") as err:
        load_checkpoint(tmp_path / "cut.pt")
    assert "\n" not in str(err.value)


def test_the_same_checkpoint_gives_the_same_bytes(tmp_path):
    """Written to a path, torch names the zip's inner folder after the random temp file: DVC saw a new
    models/model.pt hash on every run."""
    state = {"w": torch.arange(6.0).reshape(2, 3), "config": {"hidden": 8}}
    save_checkpoint(tmp_path / "a.pt", state)
    save_checkpoint(tmp_path / "b.pt", state)
    digest = [hashlib.sha256((tmp_path / n).read_bytes()).hexdigest() for n in ("a.pt", "b.pt")]
    assert digest[0] == digest[1]


def test_an_output_set_appears_whole_or_not_at_all(tmp_path):
    save_json(tmp_path / "cv.json", {"v": 1})
    save_text(tmp_path / "model.txt", "old")
    with pytest.raises(RuntimeError), output_set():
        save_json(tmp_path / "cv.json", {"v": 2})
        assert load_json(tmp_path / "cv.json") == {"v": 2}  # the set reads its own writes ...
        assert (tmp_path / "model.txt").read_text() == "old"  # ... others still see the old set
        raise RuntimeError("killed before the model was written")
    assert load_json(tmp_path / "cv.json") == {"v": 1} and (tmp_path / "model.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cv.json", "model.txt"]  # no temp files left

    with output_set():
        save_json(tmp_path / "cv.json", {"v": 2})
        save_json(tmp_path / "cv.json", {"v": 3})  # written twice: the last content wins
        save_text(tmp_path / "sub/model.txt", "new")
        assert not (tmp_path / "sub").exists() or not (tmp_path / "sub/model.txt").exists()
        assert resolve(tmp_path / "sub/model.txt").read_text() == "new"
    assert load_json(tmp_path / "cv.json") == {"v": 3} and (tmp_path / "sub/model.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["cv.json", "model.txt", "model.txt", "sub"]


def test_immediate_writes_survive_a_failed_set(tmp_path):
    with pytest.raises(RuntimeError), output_set():
        with immediate():
            save_json(tmp_path / "cache.json", {"fit": 1})  # a finished fit: kept for the resume
        save_json(tmp_path / "out.json", {"v": 1})
        raise RuntimeError("crash")
    assert load_json(tmp_path / "cache.json") == {"fit": 1} and not (tmp_path / "out.json").exists()


def test_adopt_tree_moves_a_library_s_files_into_the_set(tmp_path):
    (tmp_path / "live/plots").mkdir(parents=True)
    (tmp_path / "live/metrics.json").write_text("{}")
    (tmp_path / "live/plots/loss.tsv").write_text("step\tloss\n")
    with output_set():
        adopt_tree(tmp_path / "live", tmp_path / "train")
        assert not (tmp_path / "train/metrics.json").exists()  # staged beside it, renamed at the end
    assert (tmp_path / "train/plots/loss.tsv").read_text() == "step\tloss\n"
    assert not (tmp_path / "live").exists()


def test_a_set_leaves_no_temp_file_a_killed_run_left(tmp_path):
    """Inside a set the temp file of a target has one fixed name: a killed run's leftover is overwritten and
    renamed away (no directory listing, so a stage reads no folder it does not depend on)."""
    (tmp_path / ".metrics.json.partial").write_text('{"half": ')  # SIGKILL: no finally ran
    (tmp_path / ".other.json.partial").write_text("not ours")
    with output_set():
        save_json(tmp_path / "metrics.json", {"v": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.json.partial", "metrics.json"]
    assert load_json(tmp_path / "metrics.json") == {"v": 1}
