"""Checkpoints: a round trip rebuilds the same network; every way a file can fail to fit is one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dlrig.errors import UserError
from dlrig.models import build_model
from dlrig.params import FitConfig
from dlrig.train.checkpoint import check_state_dict, load_model, save_model

CLASSES = ["a", "b", "c"]


def save(path, weights: dict | None = None, config: dict | None = None, shape=(6,)):
    base = FitConfig()
    torch.manual_seed(0)
    model = build_model(base.with_overrides(weights or {}).model, list(shape), len(CLASSES))
    save_model(path, model, base.with_overrides(config or weights or {}), sample_shape=list(shape),
               classes=CLASSES, seed=0, extra={"best_epoch": 1})
    return model


def test_round_trip_gives_the_same_outputs(tmp_path):
    model = save(tmp_path / "m.pt", {"model.hidden": 8, "model.norm": "batch"}).eval()
    loaded, ckpt = load_model(tmp_path / "m.pt", sample_shape=[6], classes=CLASSES)
    x = torch.randn(5, 6)
    torch.testing.assert_close(loaded(x), model(x))
    assert not loaded.training and ckpt["extra"] == {"best_epoch": 1}


@pytest.mark.parametrize(
    ("weights", "config", "expected"),
    [
        ({"model.hidden": 128}, {"model.hidden": 64},
         "m.pt: layer '2.weight' has shape [128, 6] in the checkpoint but [64, 6] in its config "
         "(model.name=mlp, model.hidden=64, model.depth=2); the weights come from another architecture: "
         "rerun train"),
        ({"model.norm": "none"}, {"model.norm": "batch"},
         "m.pt: layer '3.weight' of its config (model.name=mlp, model.hidden=256, model.depth=2) is missing "
         "from the checkpoint; the weights come from another architecture: rerun train"),
        ({"model.norm": "layer"}, {"model.norm": "none"},
         "m.pt: the checkpoint holds layer '3.weight', which its config (model.name=mlp, model.hidden=256, "
         "model.depth=2) does not build (4 such tensor(s)); the weights come from another architecture: "
         "rerun train"),
    ],
)
def test_weights_of_another_architecture_name_the_first_layer(tmp_path, weights, config, expected):
    save(tmp_path / "m.pt", weights, config)
    with pytest.raises(UserError) as err:
        load_model(tmp_path / "m.pt")
    assert str(err.value) == f"{tmp_path}/{expected}"


def test_a_cnn_config_over_mlp_weights(tmp_path):
    save(tmp_path / "m.pt", {"model.name": "mlp"}, {"model.name": "cnn"}, shape=(1, 4, 4))
    with pytest.raises(UserError, match="layer '1.weight' of its config \\(model.name=cnn.*channels=\\[16, 32\\].*\\) "
                                        "is missing from the checkpoint, which holds '2.weight' instead"):
        load_model(tmp_path / "m.pt")


def test_data_of_another_shape_or_other_classes(tmp_path):
    save(tmp_path / "m.pt")
    path = tmp_path / "m.pt"
    with pytest.raises(UserError, match=r"m.pt: trained on samples of shape \[6\], but test.npz has samples of "
                                        r"shape \[1, 8, 8\]; rerun train on this data"):
        load_model(path, sample_shape=[1, 8, 8], data="test.npz")
    with pytest.raises(UserError, match=r"trained on 3 classes, but the data has 2; rerun train"):
        load_model(path, classes=["a", "b"])
    with pytest.raises(UserError, match=r"trained on classes \['a', 'b', 'c'\], but x.npz has \['a', 'b', 'z'\]"):
        load_model(path, classes=["a", "b", "z"], data="x.npz")


def test_not_a_checkpoint_damaged_or_unreadable_config(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="other.pt: not a dlrig checkpoint"):
        load_model(tmp_path / "other.pt")

    save(tmp_path / "m.pt")
    ckpt = torch.load(tmp_path / "m.pt", weights_only=True)
    torch.save({k: v for k, v in ckpt.items() if k != "classes"}, tmp_path / "damaged.pt")
    with pytest.raises(UserError, match="damaged.pt: a damaged dlrig checkpoint \\(no classes\\); rerun train"):
        load_model(tmp_path / "damaged.pt")

    ckpt["config"]["model"]["hiden"] = 3  # a key this version does not know
    torch.save(ckpt, tmp_path / "future.pt")
    with pytest.raises(UserError, match="future.pt: its config: model.hiden is not a key of model.name=mlp .*rerun train"):
        load_model(tmp_path / "future.pt")


def test_check_state_dict_refuses_non_tensors(tmp_path):
    model = build_model(FitConfig().model, [6], 3)
    with pytest.raises(UserError, match="m.pt: the checkpoint's state_dict is not a mapping of tensors"):
        check_state_dict("m.pt", model, {"0.mean": [1, 2]})
    check_state_dict("m.pt", model, model.state_dict())  # fits: no error


def test_a_checkpoint_that_saw_held_out_rows_is_refused(tmp_path):
    """Leakage: a checkpoint records digests of the samples it saw; check_unseen refuses it when rows held out
    are among them (one line naming the key), and passes disjoint rows or a checkpoint without the record."""
    from dlrig.data.dataset import row_digests
    from dlrig.train.checkpoint import check_unseen

    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 6)).astype(np.float32)
    config = FitConfig().with_overrides({"model.hidden": 4, "model.depth": 1})
    model = build_model(config.model, [6], 3)
    seen, unseen = tmp_path / "seen.pt", tmp_path / "old.pt"
    save_model(seen, model, config, sample_shape=[6], classes=["a", "b", "c"], seed=0, rows=X[:30])
    save_model(unseen, model, config, sample_shape=[6], classes=["a", "b", "c"], seed=0)  # no record
    check_unseen(seen, "train.distill.teacher", (X[30:], "the test split"))  # disjoint: passes
    check_unseen(unseen, "train.distill.teacher", (X, "the test split"))  # cannot tell: passes
    poisoned = np.concatenate([X[30:], X[[4, 9]]])  # two rows the checkpoint was trained on, held out
    with pytest.raises(UserError, match=r"^train.distill.teacher: .*seen.pt was trained on 2 of the 12 rows of "
                                        r"the test split: its estimate would leak"):
        check_unseen(seen, "train.distill.teacher", (poisoned, "the test split"))
    # a digest is the sample's, not its index: a copy of a seen row elsewhere is caught too
    assert np.array_equal(row_digests(X[[4]].copy()), row_digests(X)[[4]])
    assert len(set(row_digests(X).tolist())) == 40
