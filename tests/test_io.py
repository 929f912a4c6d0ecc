import numpy as np
import pytest
import torch

from dlrig.errors import UserError
from dlrig.io import atomic_path, load_checkpoint, load_json, load_npz, save_checkpoint, save_json, save_npz


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
    with pytest.raises(UserError, match="evil.pt: not a readable dlrig checkpoint"):
        load_checkpoint(tmp_path / "evil.pt")
