"""The cost report's FLOP estimates: held to torch's own counter where it sees the ops, by formula where not."""

import subprocess
import sys

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from dlrig.models import build_model
from dlrig.params import FitConfig
from dlrig.train.work import forward_flops

SHAPE = (1, 8, 8)


def _model(**model):
    return build_model(FitConfig.model_validate({"model": model}).model, SHAPE, 10)


def _torch_count(model) -> int:
    """FlopCounterMode on one sample, an encoder layer on its slow path (its fast path hides its products)."""
    model.eval()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, *SHAPE))
    finally:
        torch.backends.mha.set_fastpath_enabled(True)
    return counter.get_total_flops()


@pytest.mark.parametrize("model", [
    {"name": "mlp"},
    {"name": "mlp", "hidden": 32, "depth": 4, "norm": "batch"},
    {"name": "cnn"},
    {"name": "cnn", "channels": [8], "kernel_size": 5, "padding": 2},
    {"name": "rnn", "cell": "gru", "bidirectional": True, "layers": 2},
    {"name": "rnn", "cell": "rnn", "sequence": "pixels"},
], ids=str)
def test_equals_torch_counter_where_it_sees_the_ops(model):
    assert forward_flops(_model(**model), SHAPE) == _torch_count(_model(**model)) > 0


def test_lstm_counts_its_gates_which_torchs_counter_misses():
    """aten.lstm is one fused op FlopCounterMode does not count: it sees only the head. 8 steps (rows) of
    8 features, 4 gates, 64 hidden: 2 x 4 x 64 x (8 + 64) per step."""
    model = _model(name="rnn", cell="lstm", hidden_size=64, layers=1)
    head = _torch_count(model)
    assert forward_flops(model, SHAPE) == head + 8 * 2 * 4 * 64 * (8 + 64)


def test_attention_adds_its_score_and_value_products():
    """torch's counter sees an encoder layer's projections (addmm) but not the attention kernel on CPU:
    the difference is 2 x 2 x T^2 x d_model per layer (q.k scores, weights @ v)."""
    model = _model(name="transformer", layers=2, d_model=32, pooling="mean")
    tokens = 8  # one token per image row, no cls token with mean pooling
    assert forward_flops(model, SHAPE) == _torch_count(model) + 2 * (2 * 2 * tokens * tokens * 32)


def test_the_model_is_left_as_it_was():
    model = _model(name="transformer", layers=1)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    forward_flops(model, SHAPE)
    assert model.training and torch.backends.mha.get_fastpath_enabled()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(m._forward_hooks for m in model.modules())


def test_counting_does_not_import_the_compiler():
    """torch.utils.flop_counter imported torch._dynamo: about 1 s of every stage that trained."""
    code = ("import sys; from dlrig.models import build_model; from dlrig.params import FitConfig; "
            "from dlrig.train.work import forward_flops; "
            "forward_flops(build_model(FitConfig().model, (1, 8, 8), 10), (1, 8, 8)); "
            "print('torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
