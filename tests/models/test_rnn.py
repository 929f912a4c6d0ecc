"""The recurrent family (model.name: rnn): how samples become sequences, the read-out, every key's effect."""

import warnings

import numpy as np
import pytest
import torch

from dlrig.errors import UserError
from dlrig.models import build_model, count_parameters
from dlrig.models.rnn import Recurrent, sequence_shape
from dlrig.params import FitConfig, RnnParams, parse_params


def rnn(**kw) -> RnnParams:
    return RnnParams(**{"hidden_size": 8, "dropout": 0.0, **kw})


def lstm_params(inputs: int, hidden: int) -> int:
    return 4 * hidden * (inputs + hidden) + 2 * 4 * hidden  # W_ih, W_hh, b_ih, b_hh for 4 gates


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("sequence", ["rows", "pixels"])
@pytest.mark.parametrize("readout", ["last", "mean"])
def test_images_and_tables_give_logits(cell, sequence, readout):
    cfg = rnn(cell=cell, sequence=sequence, readout=readout, bidirectional=cell == "gru", layers=2)
    for shape in ([1, 8, 8], [3, 4, 5], [6]):
        out = build_model(cfg, shape, n_classes=10)(torch.randn(5, *shape))
        assert out.shape == (5, 10) and torch.isfinite(out).all()


def test_sequence_shapes():
    assert sequence_shape([1, 8, 8], "rows") == (8, 8)  # row MNIST: H steps of W
    assert sequence_shape([3, 4, 5], "rows") == (4, 15)  # H steps of C*W
    assert sequence_shape([3, 4, 5], "pixels") == (20, 3)  # H*W steps of C
    assert sequence_shape([1, 50, 2], "rows") == (50, 2)  # the adding problem: T steps of (value, marker)
    assert sequence_shape([7], "rows") == sequence_shape([7], "pixels") == (7, 1)
    with pytest.raises(UserError, match=r"model.name=rnn reads tables \[F\] and images \[C, H, W\]"):
        build_model(rnn(), [2, 3, 4, 5], n_classes=2)


def test_rows_are_read_row_by_row_and_pixels_pixel_by_pixel():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)  # [N, C, H, W]
    rows = Recurrent(rnn(sequence="rows"), [3, 4, 5]).sequence(x)
    pixels = Recurrent(rnn(sequence="pixels"), [3, 4, 5]).sequence(x)
    assert rows.shape == (2, 4, 15) and pixels.shape == (2, 20, 3)
    for h in range(4):
        assert torch.equal(rows[1, h], x[1, :, h, :].reshape(-1))  # step h = row h of every channel
        for w in range(5):
            assert torch.equal(pixels[1, h * 5 + w], x[1, :, h, w])  # step h*W+w = pixel (h, w)


def test_parameter_count_follows_the_keys():
    def count(**kw):
        return count_parameters(build_model(rnn(**kw), [1, 8, 8], n_classes=10))

    head = 8 * 10 + 10
    assert count() == lstm_params(8, 8) + head  # lstm, rows: 8 steps of 8 features
    assert count(hidden_size=16) == lstm_params(8, 16) + 16 * 10 + 10
    assert count(layers=2) == lstm_params(8, 8) + lstm_params(8, 8) + head
    assert count(bidirectional=True) == 2 * lstm_params(8, 8) + 16 * 10 + 10
    assert count(sequence="pixels") == lstm_params(1, 8) + head  # 64 steps of 1 feature
    assert count(cell="gru") == 3 * 8 * (8 + 8) + 2 * 3 * 8 + head
    assert count(cell="rnn") == 8 * (8 + 8) + 2 * 8 + head
    assert count(norm="layer") == count() + 2 * 8  # the read-out's gain and bias


def test_readout_last_is_the_final_state_and_mean_averages_over_time():
    torch.manual_seed(0)
    x = torch.randn(4, 1, 6, 3)
    last = Recurrent(rnn(readout="last"), [1, 6, 3])
    out, _ = last.rnn(last.sequence(x))
    assert torch.allclose(last(x), out[:, -1])
    mean = Recurrent(rnn(readout="mean"), [1, 6, 3])
    mean.load_state_dict(last.state_dict())
    assert torch.allclose(mean(x), out.mean(1)) and not torch.allclose(mean(x), last(x))
    # bidirectional: the forward direction after the last step, the backward one after the first
    bi = Recurrent(rnn(cell="gru", bidirectional=True, layers=2), [1, 6, 3])
    out, _ = bi.rnn(bi.sequence(x))
    assert torch.allclose(bi(x), torch.cat([out[:, -1, :8], out[:, 0, 8:]], dim=1), atol=1e-6)


def test_dropout_acts_between_layers_and_on_the_readout_without_torch_s_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns when given dropout with one layer: we do not pass it
        one = build_model(rnn(dropout=0.5), [1, 8, 8], n_classes=3)
    assert one[1].rnn.dropout == 0.0 and one[3].p == 0.5
    two = build_model(rnn(dropout=0.5, layers=2), [1, 8, 8], n_classes=3)
    assert two[1].rnn.dropout == 0.5
    x = torch.randn(6, 1, 8, 8)
    one.train()
    assert not torch.equal(one(x), one(x))  # dropout draws differ in training
    one.eval()
    assert torch.equal(one(x), one(x))


def test_activation_is_the_plain_cell_s_nonlinearity():
    torch.manual_seed(0)
    tanh = build_model(rnn(cell="rnn", activation="tanh"), [1, 8, 8], 3)
    torch.manual_seed(0)
    relu = build_model(rnn(cell="rnn", activation="relu"), [1, 8, 8], 3)
    assert tanh[1].rnn.nonlinearity == "tanh" and relu[1].rnn.nonlinearity == "relu"
    x = torch.randn(4, 1, 8, 8)
    assert not torch.allclose(tanh(x), relu(x))
    with pytest.raises(UserError) as err:
        parse_params({"model": {"name": "rnn", "cell": "rnn", "activation": "gelu"}})
    assert str(err.value) == ("params.yaml: model.activation must be 'tanh' or 'relu' with cell=rnn "
                              "(torch.nn.RNN's nonlinearity; got 'gelu')")
    parse_params({"model": {"name": "rnn", "cell": "lstm", "activation": "gelu"}})  # unused by lstm gates


def test_orthogonal_init_applies_per_gate_and_zeroes_biases():
    model = build_model(rnn(init="orthogonal", hidden_size=6), [1, 6, 6], 2)
    lstm = model[1].rnn
    gain = torch.nn.init.calculate_gain("tanh")
    for block in lstm.weight_hh_l0.chunk(4):
        assert torch.allclose(block @ block.T / gain**2, torch.eye(6), atol=1e-5)
    assert torch.all(lstm.bias_ih_l0 == 0) and torch.all(lstm.bias_hh_l0 == 0)
    default = build_model(rnn(hidden_size=6), [1, 6, 6], 2)[1].rnn
    assert default.bias_ih_l0.abs().sum() > 0  # default keeps torch's uniform init


@pytest.mark.parametrize(("raw", "line"), [
    ({"cell": "transformer"}, "params.yaml: model.cell must be one of 'rnn', 'lstm' or 'gru' (got 'transformer')"),
    ({"hidden_size": 0}, "params.yaml: model.hidden_size must be >= 1 (got 0)"),
    ({"layers": 0}, "params.yaml: model.layers must be >= 1 (got 0)"),
    ({"bidirectional": "yes"}, "params.yaml: model.bidirectional must be true or false (got 'yes')"),
    ({"sequence": "columns"}, "params.yaml: model.sequence must be one of 'rows' or 'pixels' (got 'columns')"),
    ({"readout": "max"}, "params.yaml: model.readout must be one of 'last' or 'mean' (got 'max')"),
    ({"dropout": 1.0}, "params.yaml: model.dropout must be < 1 (got 1.0)"),
    ({"channels": [8]}, "params.yaml: model.channels is not a key of model.name=rnn (rnn keys: name, "),
])
def test_bad_rnn_keys_give_one_line(raw, line):
    with pytest.raises(UserError) as err:
        parse_params({"model": {"name": "rnn", **raw}})
    assert str(err.value).startswith(line) and "\n" not in str(err.value)


def test_rnn_keys_are_searchable_and_families_switch():
    params = parse_params({"model": {"name": "rnn"}, "search": {"space": {
        "model.hidden_size": [8, 16], "model.cell": ["lstm", "gru"], "model.layers": [1, 2],
        "model.sequence": ["rows", "pixels"], "model.readout": ["last", "mean"],
        "model.bidirectional": [False, True]}}})
    assert params.model.name == "rnn"
    with pytest.raises(UserError, match="search.space.model.hidden_size: model.hidden_size is not a key of "
                                        "model.name=mlp"):
        parse_params({"search": {"space": {"model.hidden_size": [8, 16]}}})
    with pytest.raises(UserError, match="search.space.model.hidden_size: .*must be >= 1"):
        parse_params({"model": {"name": "rnn"}, "search": {"space": {"model.hidden_size": [0, 16]}}})
    # cv.candidates / a baseline switch the family: the shared keys (dropout) carry over
    config = FitConfig().with_overrides({"model.dropout": 0.3})
    switched = config.with_overrides({"model.name": "rnn", "model.cell": "gru", "model.hidden_size": 12})
    assert (switched.model.name, switched.model.cell, switched.model.dropout) == ("rnn", "gru", 0.3)
    assert switched.with_overrides({"model.name": "mlp"}).model == config.model


def test_fit_trains_an_lstm_reproducibly():
    """The whole fit() path: an LSTM learns which half of a sequence holds a spike, byte-identically."""
    from dlrig.train import fit, predict_proba

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 160)
    X = rng.normal(0, 0.3, (160, 1, 10, 2)).astype(np.float32)
    X[np.arange(160), 0, np.where(y == 1, 2, 7), 0] += 3.0
    config = FitConfig().with_overrides({
        "model.name": "rnn", "model.hidden_size": 8, "model.depth": 1, "model.dropout": 0.0, "optim.lr": 0.05,
        "train.epochs": 6, "train.batch_size": 32, "train.early_stopping": None, "train.grad_clip": 1.0})
    a = fit(X, y, 2, config, seed=3)
    b = fit(X, y, 2, config, seed=3)
    assert (predict_proba(a.model, X).argmax(1) == y).mean() > 0.9  # chance: 0.5
    assert all(torch.equal(p, q) for p, q in zip(a.model.state_dict().values(), b.model.state_dict().values(),
                                                  strict=True))


def test_a_checkpoint_rebuilds_the_same_rnn(tmp_path):
    from dlrig.train.checkpoint import load_model, save_model

    config = FitConfig().with_overrides({"model.name": "rnn", "model.cell": "gru", "model.hidden_size": 6,
                                         "model.bidirectional": True, "model.norm": "batch",
                                         "model.norm_momentum": 0.3})
    model = build_model(config.model, [1, 5, 4], 3).eval()
    save_model(tmp_path / "m.pt", model, config, sample_shape=[1, 5, 4], classes=["a", "b", "c"], seed=0)
    loaded, _ = load_model(tmp_path / "m.pt")
    x = torch.randn(7, 1, 5, 4)
    assert torch.equal(loaded(x), model(x)) and loaded[2].momentum == 0.3


def test_the_stacked_trainer_leaves_rnns_to_fit():
    from dlrig.train.batched import batch_key

    assert batch_key(FitConfig().with_overrides({"model.name": "rnn"})) is None


def test_every_init_scheme_builds_an_rnn():
    from typing import get_args

    from dlrig.params import Init

    for scheme in get_args(Init):
        out = build_model(rnn(cell="gru", init=scheme), [1, 4, 3], 2)(torch.randn(2, 1, 4, 3))
        assert out.shape == (2, 2), scheme
