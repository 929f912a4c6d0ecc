"""Training hooks: every step visible (gradients, loss, lr), stopping at the asked step, the built-ins."""

from __future__ import annotations

import math

import pytest
import torch

from dlrig.train import fit
from dlrig.train.callbacks import Callback, DVCLiveLogger, FitState, overrides


class GradNorms(Callback):
    """The module docstring's example: per-layer gradient norms at every step."""

    def __init__(self):
        self.rows = []

    def on_after_backward(self, state):
        for name, p in state.model.named_parameters():
            if p.grad is not None:
                self.rows.append((state.epoch, state.step, state.global_step, name, float(p.grad.norm())))


class Events(Callback):
    """Records the order of events and what the state said at each."""

    def __init__(self):
        self.log = []

    def on_fit_start(self, state):
        self.log.append(("start", state.epoch, state.global_step))

    def on_after_backward(self, state):
        self.log.append(("backward", state.epoch, state.global_step, state.loss))

    def on_step_end(self, state):
        self.log.append(("step", state.epoch, state.global_step, state.lr))

    def on_epoch_end(self, state, record):
        self.log.append(("epoch", state.epoch, record["epoch"]))

    def on_fit_end(self, state):
        self.log.append(("end", state.stop_reason))


class StopAt(Callback):
    def __init__(self, event, global_step):
        self.event, self.at = event, global_step

    def on_after_backward(self, state):
        if self.event == "backward" and state.global_step == self.at:
            state.request_stop(f"asked at step {self.at}")

    def on_step_end(self, state):
        if self.event == "step" and state.global_step == self.at:
            state.stop, state.stop_reason = True, f"asked at step {self.at}"


@pytest.fixture
def no_es(fast_config):
    return fast_config.with_overrides({"train.early_stopping": None, "train.epochs": 2})


def test_gradient_norms_of_every_layer_at_every_step_of_a_two_epoch_fit(blobs, fast_config):
    X, y = blobs
    cfg = fast_config.with_overrides({"train.epochs": 2, "model.depth": 2})
    norms = GradNorms()
    result = fit(X, y, 3, cfg, seed=0, callbacks=[norms])
    steps = result.info["steps_per_epoch"]
    layers = [name for name, _ in result.model.named_parameters()]
    assert len(layers) == 6 and steps == 4  # 3 linear layers (weight, bias); 102 rows in batches of 32
    assert len(norms.rows) == 2 * steps * len(layers)  # one record per step per layer
    assert [r[2] for r in norms.rows[:: len(layers)]] == list(range(1, 2 * steps + 1))
    assert {(r[0], r[1]) for r in norms.rows} == {(e, s) for e in (1, 2) for s in range(steps)}
    for row in norms.rows:
        assert math.isfinite(row[4]) and row[4] > 0, row
    by_step = {}
    for _, _, _, name, value in norms.rows:
        by_step.setdefault(name, []).append(value)
    assert all(len(v) == 2 * steps for v in by_step.values())
    # Watching changed nothing: the same fit without the callback.
    assert fit(X, y, 3, cfg, seed=0).history == result.history


def test_events_come_in_order_with_the_loss_and_lr_of_each_step(blobs, no_es):
    X, y = blobs
    events = Events()
    cfg = no_es.with_overrides({"schedule.name": "onecycle"})
    result = fit(X, y, 3, cfg, seed=0, callbacks=[events])
    steps = result.info["steps_per_epoch"]
    kinds = [e[0] for e in events.log]
    assert kinds == ["start"] + (["backward", "step"] * steps + ["epoch"]) * 2 + ["end"]
    assert events.log[-1] == ("end", None) and result.info["stop_reason"] is None
    losses = [e[3] for e in events.log if e[0] == "backward"]
    lrs = [e[3] for e in events.log if e[0] == "step"]
    assert all(math.isfinite(v) and v > 0 for v in losses + lrs)
    assert len(set(lrs)) == len(lrs)  # onecycle: a new lr every step
    # The epoch's train_loss is the row-weighted mean of its batch losses (the last batch takes the rest).
    n = len(result.train_index)
    sizes = [32] * (steps - 1) + [n - 32 * (steps - 1)]
    first = sum(loss * n for loss, n in zip(losses[:steps], sizes, strict=True)) / sum(sizes)
    assert result.history[0]["train_loss"] == pytest.approx(first, rel=1e-12)


@pytest.mark.parametrize("at", [3, 6])
def test_a_callback_stops_the_run_at_the_step_it_asks(blobs, no_es, at):
    X, y = blobs
    events = Events()
    result = fit(X, y, 3, no_es, seed=0, callbacks=[StopAt("step", at), events])
    steps_taken = [e for e in events.log if e[0] == "step"]
    assert len(steps_taken) == at and steps_taken[-1][2] == at  # the other callback saw the step too
    assert result.stopped_early and result.info["stop_reason"] == f"asked at step {at}"
    assert not result.info["pruned"] and not result.info["diverged"]
    # The epoch cut short has no record: step 3 is inside epoch 1 (4 steps), step 6 inside epoch 2.
    assert len(result.history) == (at - 1) // result.info["steps_per_epoch"]
    assert events.log[-1] == ("end", f"asked at step {at}")
    assert result.model.training is False


def test_stopping_after_backward_skips_that_step(blobs, no_es):
    """Stopped in on_after_backward at step 6: the weights are those after step 5."""
    X, y = blobs
    before = fit(X, y, 3, no_es, seed=0, callbacks=[StopAt("backward", 6)])
    after5 = fit(X, y, 3, no_es, seed=0, callbacks=[StopAt("step", 5)])
    after6 = fit(X, y, 3, no_es, seed=0, callbacks=[StopAt("step", 6)])
    for key, value in after5.model.state_dict().items():
        assert torch.equal(before.model.state_dict()[key], value), key
    assert not torch.equal(after6.model[2].weight, after5.model[2].weight)


def test_stopping_at_epoch_end_keeps_that_epoch_and_restores_the_best_state(blobs, fast_config):
    X, y = blobs

    class StopAfter(Callback):
        def on_epoch_end(self, state, record):
            if state.epoch == 3:
                state.request_stop("enough", pruned=True)

    result = fit(X, y, 3, fast_config, seed=0, callbacks=[StopAfter()])
    assert len(result.history) == 3 and result.info["pruned"] and result.info["stop_reason"] == "enough"
    # Early stopping ignores the epoch the run was stopped on (as for a pruned run before callbacks).
    assert result.best_epoch == 2


def test_stop_at_fit_start_trains_nothing(blobs, no_es):
    X, y = blobs

    class Never(Callback):
        def on_fit_start(self, state):
            state.request_stop("not today")

    result = fit(X, y, 3, no_es, seed=0, callbacks=[Never()])
    assert result.history == [] and result.info["stop_reason"] == "not today" and result.stopped_early


def test_the_first_stop_reason_is_kept():
    state = FitState(model=torch.nn.Linear(1, 1), optimizer=None, scheduler=None, config=None, steps_per_epoch=1)
    state.request_stop("first")
    state.request_stop("second", pruned=True)
    assert (state.stop, state.stop_reason, state.pruned) == (True, "first", True)


def test_only_overridden_step_events_are_dispatched():
    class EpochOnly(Callback):
        def on_epoch_end(self, state, record):
            pass

    assert overrides(EpochOnly(), "on_epoch_end")
    assert not overrides(EpochOnly(), "on_after_backward") and not overrides(EpochOnly(), "on_step_end")
    assert overrides(GradNorms(), "on_after_backward")


def test_divergence_ends_the_run_and_says_why(blobs, fast_config):
    from dlrig.train.fit import failure_reason

    X, y = blobs
    cfg = fast_config.with_overrides({"optim.name": "sgd", "optim.lr": 1e6, "optim.momentum": 0.0,
                                      "train.early_stopping": None})
    events = Events()
    result = fit(X * 1e3, y, 3, cfg, seed=0, callbacks=[events])
    epoch = len(result.history)
    assert result.info["diverged"] and math.isnan(result.history[-1]["train_loss"])
    assert result.info["stop_reason"] == f"diverged: non-finite training loss in epoch {epoch}"
    assert failure_reason(result, 3) == f"diverged: non-finite training loss in epoch {epoch}"
    assert ("epoch", epoch, epoch) not in events.log  # no on_epoch_end for the diverged epoch
    assert events.log[-1][0] == "end"
    assert failure_reason(fit(X, y, 3, fast_config, seed=0), 3) is None


def test_dvclive_logger_logs_every_epoch_record():
    class FakeLive:
        def __init__(self):
            self.metrics, self.steps = [], 0

        def log_metric(self, name, value):
            self.metrics.append((self.steps, name, value))

        def next_step(self):
            self.steps += 1

    live = FakeLive()
    logger = DVCLiveLogger(live)
    state = FitState(model=torch.nn.Linear(1, 1), optimizer=None, scheduler=None, config=None, steps_per_epoch=1)
    logger.on_epoch_end(state, {"epoch": 1, "lr": 0.1, "train_loss": 0.5, "val_accuracy": 0.9})
    logger.on_epoch_end(state, {"epoch": 2, "lr": 0.05, "train_loss": 0.4, "val_accuracy": 0.95})
    assert live.steps == 2
    assert live.metrics[:3] == [(0, "lr", 0.1), (0, "train/loss", 0.5), (0, "val/accuracy", 0.9)]
