"""Transfer learning (dlrig.train.transfer): the checkpoint's body is loaded or refused in one line, frozen
layers provably do not move, each mode trains what it says, and the cache key sees the weights' bytes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from dlrig.errors import UserError
from dlrig.params import FitConfig, parse_params
from dlrig.train import fit
from dlrig.train.batched import FitJob, batch_key, fit_many
from dlrig.train.callbacks import Callback
from dlrig.train.checkpoint import save_model
from dlrig.train.transfer import body_blocks

MLP = {"model.hidden": 16, "model.depth": 2, "model.dropout": 0.2, "model.norm": "batch",
       "train.early_stopping": None, "train.epochs": 3, "train.batch_size": 16, "optim.lr": 0.01}


def digits(classes):
    d = load_digits()
    keep = np.isin(d.target, classes)
    X = d.images[keep][:, None].astype(np.float32)[:120]
    y = np.searchsorted(classes, d.target[keep])[:120]
    return X, y


@pytest.fixture
def source(tmp_path):
    """A small mlp pretrained on digits 0-2; returns (path, config)."""
    X, y = digits([0, 1, 2])
    config = FitConfig().with_overrides(MLP)
    model = fit(X, y, 3, config, 0).model
    path = tmp_path / "source.pt"
    save_model(path, model, config, sample_shape=[1, 8, 8], classes=["0", "1", "2"], seed=0)
    return path, config


def target(config: FitConfig, path, mode: str, **extra) -> FitConfig:
    return config.with_overrides({"train.transfer.pretrained": str(path), "train.transfer.mode": mode,
                                  **{f"train.transfer.{k}": v for k, v in extra.items()}})


def body_state(model) -> dict[str, torch.Tensor]:
    head = len(model) - 1
    return {k: v.clone() for k, v in model.state_dict().items() if int(k.split(".")[0]) < head}


class Started(Callback):
    def __init__(self):
        self.started = False

    def on_fit_start(self, state):
        self.started = True


def test_a_checkpoint_of_another_architecture_is_one_line_before_any_training(source):
    path, config = source
    X, y = digits([3, 4, 5])
    watch = Started()
    wider = target(config.with_overrides({"model.hidden": 32}), path, "finetune")
    with pytest.raises(UserError) as err:
        fit(X, y, 3, wider, 0, callbacks=[watch])
    msg = str(err.value)
    assert "\n" not in msg and "layer '2.weight' has shape [16, 64] in the checkpoint but [32, 64]" in msg
    assert "train.transfer.pretrained" in msg and not watch.started
    cnn = target(config.with_overrides({"model.name": "cnn", "model.channels": [4]}), path, "linear_probe")
    with pytest.raises(UserError, match=r"^\S*source.pt: layer '1.weight' of its config \(model.name=cnn.*\) "
                                        r"is missing from the checkpoint, which holds '\d+.weight' instead"):
        fit(X, y, 3, cnn, 0)


def test_linear_probe_leaves_the_body_exactly_as_pretrained(source):
    path, config = source
    X, y = digits([3, 4, 5])
    pretrained = torch.load(path, weights_only=True)["state_dict"]
    model = fit(X, y, 3, target(config, path, "linear_probe"), 1).model
    after = body_state(model)
    for key, value in after.items():  # weights, biases and batch-norm running statistics alike
        assert torch.equal(value, pretrained[key]), key
    assert not torch.equal(model[-1].weight, torch.zeros_like(model[-1].weight))
    assert all(p.requires_grad for p in model.parameters())  # an ordinary model again after fit


def test_finetune_top_trains_only_the_last_blocks(source):
    path, config = source
    X, y = digits([3, 4, 5])
    pretrained = torch.load(path, weights_only=True)["state_dict"]
    model = fit(X, y, 3, target(config, path, "finetune_top", unfreeze=1), 1).model
    first, second = body_blocks(model)
    for key, value in body_state(model).items():
        layer = int(key.split(".")[0])
        moved = not torch.equal(value, pretrained[key])
        if layer in first or layer == 0:
            assert not moved, key  # frozen block (and the scaler): bit for bit
        elif key.endswith("weight") and layer == second[0]:
            assert moved, key


def test_finetune_puts_the_body_at_the_scaled_rate(source):
    path, config = source
    X, y = digits([3, 4, 5])

    class Groups(Callback):
        def on_fit_start(self, state):
            self.lrs = sorted({g["lr"] for g in state.optimizer.param_groups})

    for schedule in ("cosine", "onecycle"):
        groups = Groups()
        cfg = target(config.with_overrides({"schedule.name": schedule}), path, "finetune", body_lr_scale=0.1)
        model = fit(X, y, 3, cfg, 1, callbacks=[groups]).model
        head = groups.lrs[-1]
        assert groups.lrs[0] == pytest.approx(head * 0.1), schedule
        assert not torch.equal(model[2].weight, torch.load(path, weights_only=True)["state_dict"]["2.weight"])


def test_gradual_unfreezing_opens_blocks_from_the_top(source):
    path, config = source
    X, y = digits([3, 4, 5])
    pretrained = torch.load(path, weights_only=True)["state_dict"]

    class Trainable(Callback):
        def __init__(self):
            self.rows = []

        def on_epoch_end(self, state, record):
            self.rows.append([all(p.requires_grad for p in state.model[b[0]].parameters())
                              for b in body_blocks(state.model)])

        def on_fit_end(self, state):  # Adam keeps state only for parameters that had a gradient
            self.has_state = [state.model[b[0]].weight in state.optimizer.state for b in body_blocks(state.model)]

    watch = Trainable()
    cfg = target(config.with_overrides({"train.epochs": 3}), path, "gradual", unfreeze_every=2)
    model = fit(X, y, 3, cfg, 1, callbacks=[watch]).model
    # list order: the watcher runs before the unfreezing callback of the same epoch
    assert watch.rows == [[False, False], [False, False], [False, True]]
    assert watch.has_state == [False, True]  # in the optimizer from the start, moments only once unfrozen
    first, second = body_blocks(model)
    assert torch.equal(model[first[0]].weight, pretrained[f"{first[0]}.weight"])  # never unfrozen
    assert not torch.equal(model[second[0]].weight, pretrained[f"{second[0]}.weight"])


def test_each_mode_changes_the_result_and_scratch_ignores_the_checkpoint(source):
    path, config = source
    X, y = digits([3, 4, 5])
    heads = {}
    for mode in ("scratch", "linear_probe", "finetune", "finetune_top", "gradual"):
        model = fit(X, y, 3, target(config.with_overrides({"train.epochs": 6}), path, mode,
                                    unfreeze_every=2), 1).model
        heads[mode] = model[-1].weight.detach().clone()
    modes = list(heads)
    assert all(not torch.equal(heads[a], heads[b]) for i, a in enumerate(modes) for b in modes[i + 1:])
    plain = fit(X, y, 3, config.with_overrides({"train.epochs": 6}), 1).model
    assert torch.equal(plain[-1].weight, heads["scratch"])


def test_the_cnn_family_transfers_too(tmp_path):
    X, y = digits([0, 1, 2])
    config = FitConfig().with_overrides({**MLP, "model.name": "cnn", "model.channels": [4, 8]})
    model = fit(X, y, 3, config, 0).model
    save_model(tmp_path / "c.pt", model, config, sample_shape=[1, 8, 8], classes=["0", "1", "2"], seed=0)
    Xt, yt = digits([3, 4, 5, 6])
    tuned = fit(Xt, yt, 4, target(config, tmp_path / "c.pt", "finetune_top", unfreeze=1), 1).model
    assert tuned[-1].out_features == 4 and len(body_blocks(tuned)) == 3  # 2 conv blocks + 1 dense
    assert torch.equal(tuned[1].weight, model[1].weight)  # the first conv block stayed frozen


def test_bad_transfer_values_are_one_line(source):
    path, config = source
    X, y = digits([3, 4, 5, 6])
    with pytest.raises(UserError, match=r"^params.yaml: train.transfer.mode linear_probe needs pretrained"):
        parse_params({"train": {"transfer": {"mode": "linear_probe"}}})
    with pytest.raises(UserError, match=r"^params.yaml: train.transfer.body_lr_scale must be > 0"):
        parse_params({"train": {"transfer": {"body_lr_scale": 0}}})
    with pytest.raises(UserError, match=r"^train.transfer.unfreeze: 3 blocks asked but the model's body has 2"):
        fit(X, y, 4, target(config, path, "finetune_top", unfreeze=3), 0)
    with pytest.raises(UserError, match=r"^train.transfer.head: keep needs the checkpoint's number of classes"):
        fit(X, y, 4, target(config, path, "finetune", head="keep"), 0)
    with pytest.raises(UserError, match=r"^train.transfer.pretrained: \S*nope.pt: file not found"):
        fit(X, y, 4, target(config, path.parent / "nope.pt", "finetune"), 0)


def test_keep_head_and_source_scaler_come_from_the_checkpoint(source):
    path, config = source
    X, y = digits([0, 1, 2])
    pretrained = torch.load(path, weights_only=True)["state_dict"]
    model = fit(X[:30], y[:30], 3, target(config, path, "linear_probe", head="keep"), 1).model
    assert torch.equal(model[0].mean, pretrained["0.mean"])
    refit = fit(X[:30], y[:30], 3, target(config, path, "linear_probe", scaler="refit"), 1).model
    assert not torch.equal(refit[0].mean, pretrained["0.mean"])
    assert torch.equal(refit[2].weight, pretrained["2.weight"])


def test_the_cache_key_sees_the_weights_bytes_not_the_path(source):
    from dlrig.select.scorers import TorchScorer

    path, config = source
    X, y = digits([3, 4, 5])
    rows = np.arange(len(y))
    jobs = [({}, rows[:60], rows[60:], 0)]
    key = lambda cfg: TorchScorer(X, y, 3, cfg, "accuracy").jobs_key("cv", jobs)  # noqa: E731
    tuned, scratch = target(config, path, "finetune"), target(config, path, "scratch")
    before, before_scratch = key(tuned), key(scratch)
    data = bytearray(path.read_bytes())
    data[-100] ^= 1  # same path, same size, other bytes
    path.write_bytes(bytes(data))
    assert key(tuned) != before
    assert key(scratch) == before_scratch  # scratch ignores the file


def test_the_stacked_trainer_routes_transfer_configs_to_fit(tmp_path):
    X, y = digits([3, 4, 5])
    plain = FitConfig().with_overrides({**MLP, "model.norm": "none", "model.dropout": 0.0})
    path = tmp_path / "plain.pt"
    save_model(path, fit(X, y, 3, plain, 0).model, plain, sample_shape=[1, 8, 8], classes=["a", "b", "c"], seed=0)
    assert batch_key(plain) is not None
    for mode in ("linear_probe", "finetune", "gradual"):
        assert batch_key(target(plain, path, mode)) is None, mode
    (result,) = fit_many(X, y, 3, [FitJob(np.arange(len(y)), target(plain, path, "linear_probe"), 1)])
    assert result.info.get("batched") is False
