import numpy as np
import pytest
import torch

from dlrig.errors import UserError
from dlrig.models import build_model, count_parameters
from dlrig.models.transformer import sinusoidal
from dlrig.params import FitConfig, TransformerParams

SMALL = {"d_model": 16, "heads": 2, "layers": 1, "ff_size": 32}


def tiny(**kw):
    return TransformerParams(**{**SMALL, **kw})


def n_params(shape=(1, 8, 8), **kw):
    return count_parameters(build_model(tiny(**kw), list(shape), n_classes=10))


def output(x, seed=0, train=False, shape=(1, 8, 8), **kw):
    torch.manual_seed(seed)
    model = build_model(tiny(**kw), list(shape), n_classes=10)
    model.train(train)
    torch.manual_seed(123)  # the same dropout masks for both calls
    return model(x)


@pytest.mark.parametrize(
    ("shape", "kw"),
    [
        ([1, 8, 8], {"tokens": "rows"}),
        ([3, 8, 8], {"tokens": "patches", "patch_size": 4, "pooling": "cls"}),
        ([20], {"tokens": "rows", "positional": "sinusoidal"}),
        ([2], {"tokens": "embed", "vocab_size": 7, "positional": "none"}),
    ],
)
def test_every_tokenisation_gives_logits(shape, kw):
    x = torch.randint(0, 7, (5, *shape)).float()
    model = build_model(tiny(**kw), shape, n_classes=10)
    assert model(x).shape == (5, 10) and torch.isfinite(model(x)).all()


def test_token_counts_follow_the_tokenisation():
    body = build_model(tiny(tokens="rows"), [3, 8, 12], 10)[1]
    assert body.tokens.n_tokens == 8 and body.tokens.proj.in_features == 3 * 12  # H tokens of C*W
    body = build_model(tiny(tokens="patches", patch_size=4), [3, 8, 12], 10)[1]
    assert body.tokens.n_tokens == 2 * 3  # (8/4) * (12/4)
    body = build_model(tiny(tokens="rows"), [20], 10)[1]
    assert body.tokens.n_tokens == 20 and body.tokens.proj.in_features == 1  # F tokens of one feature


# ------------------------------------------------------------------ every key changes the model
@pytest.mark.parametrize(
    ("key", "a", "b"),
    [
        ("d_model", 16, 32),
        ("layers", 1, 2),
        ("ff_size", 32, 64),
        ("positional", "none", "learned"),
        ("pooling", "mean", "cls"),
        ("norm", "none", "layer"),
        ("norm_first", False, True),  # pre-norm adds the final LayerNorm
        ("patch_size", 2, 8),
    ],
)
def test_key_changes_the_parameter_count(key, a, b):
    extra = {"tokens": "patches"} if key == "patch_size" else {}
    assert n_params(**{key: a, **extra}) != n_params(**{key: b, **extra})


def test_tokens_and_vocab_size_change_the_parameter_count():
    assert n_params(tokens="rows") != n_params(tokens="patches", patch_size=4)
    assert n_params((2,), tokens="embed", vocab_size=5) != n_params((2,), tokens="embed", vocab_size=9)


@pytest.mark.parametrize(
    ("key", "a", "b"),
    [("heads", 2, 4), ("positional", "none", "sinusoidal"), ("activation", "relu", "gelu"),
     ("norm_first", False, True)],
)
def test_key_changes_the_output_under_the_same_weights_seed(key, a, b):
    x = torch.randn(4, 1, 8, 8)
    assert not torch.allclose(output(x, **{key: a}), output(x, **{key: b}))


@pytest.mark.parametrize("key", ["dropout", "attention_dropout"])
def test_each_dropout_acts_in_training_only(key):
    x = torch.randn(4, 1, 8, 8)
    off = {"dropout": 0.0, "attention_dropout": 0.0}
    assert torch.allclose(output(x, train=True, **off), output(x, train=False, **off))
    assert not torch.allclose(output(x, train=True, **{**off, key: 0.5}), output(x, train=False, **off))
    assert torch.allclose(output(x, train=False, **{**off, key: 0.5}), output(x, train=False, **off))


def test_the_two_dropouts_reach_their_own_places():
    layer = build_model(tiny(dropout=0.2, attention_dropout=0.4), [1, 8, 8], 10)[1].layers[0]
    assert layer.self_attn.dropout == 0.4
    assert layer.dropout.p == layer.dropout1.p == layer.dropout2.p == 0.2


def test_layers_start_from_different_weights():
    layers = build_model(tiny(layers=2), [1, 8, 8], 10)[1].layers
    assert not torch.equal(layers[0].linear1.weight, layers[1].linear1.weight)


def test_mean_pooling_without_positions_ignores_feature_order():
    # Without a position code the encoder is permutation-equivariant and the mean is invariant.
    x = torch.randn(3, 12)
    perm = torch.randperm(12)
    for positional, same in [("none", True), ("learned", False)]:
        torch.manual_seed(0)
        model = build_model(tiny(positional=positional), [12], 4).eval()
        assert torch.allclose(model(x), model(x[:, perm]), atol=1e-5) is same


def test_sinusoidal_code_is_the_textbook_one():
    code = sinusoidal(5, 8)
    assert torch.allclose(code[0], torch.tensor([0.0, 1.0] * 4))
    assert code[3, 0] == pytest.approx(np.sin(3.0)) and code[3, 2] == pytest.approx(np.sin(3 / 10000 ** (2 / 8)))


def test_same_seed_same_model():
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(output(x, seed=3), output(x, seed=3))


# ------------------------------------------------------------------------------- bad input
def test_patch_size_must_divide_the_image():
    with pytest.raises(UserError, match=r"model.patch_size: 3 must divide the image's height and width"):
        build_model(tiny(tokens="patches", patch_size=3), [1, 8, 8], 10)
    with pytest.raises(UserError, match="patches need images"):
        build_model(tiny(tokens="patches", patch_size=2), [20], 10)


def test_embed_refuses_images_and_values_that_are_not_codes():
    with pytest.raises(UserError, match=r"tokens: embed needs a table of integer codes \[L\]"):
        build_model(tiny(tokens="embed", vocab_size=5), [1, 8, 8], 10)
    model = build_model(tiny(tokens="embed", vocab_size=5), [2], 10)
    with pytest.raises(UserError, match="that are not integers"):
        model(torch.tensor([[0.5, 1.0]]))
    with pytest.raises(UserError, match=r"needs integer codes 0..4 \(model.vocab_size\); .* \[0, 5\]"):
        model(torch.tensor([[0.0, 5.0]]))


def test_decoder_layers_are_refused_by_the_classifier():
    with pytest.raises(UserError, match="decoder_layers is for sequence-to-sequence tasks"):
        build_model(tiny(decoder_layers=1), [1, 8, 8], 10)


def test_transformer_trains_with_fit_and_routes_past_the_stacked_trainer():
    from sklearn.datasets import load_digits

    from dlrig.train.batched import batch_key
    from dlrig.train.fit import fit

    X, y = load_digits(return_X_y=True)
    X = X.astype(np.float32).reshape(-1, 1, 8, 8)
    cfg = FitConfig().with_overrides({
        "model.name": "transformer", "model.d_model": 32, "model.heads": 2, "model.layers": 1,
        "model.ff_size": 64, "train.epochs": 10, "train.batch_size": 32, "train.early_stopping": None,
        "optim.lr": 3e-3})
    assert batch_key(cfg) is None
    res = fit(X[:600], y[:600], 10, cfg, seed=0)
    res.model.eval()
    with torch.no_grad():
        acc = float((res.model(torch.as_tensor(X[600:900])).argmax(1).numpy() == y[600:900]).mean())
    assert acc > 0.5, acc  # chance is 0.1


def test_embed_tokens_learn_from_integer_codes():
    from dlrig.train.fit import fit

    rng = np.random.default_rng(0)
    X = rng.integers(0, 5, size=(400, 2)).astype(np.float32)
    y = X[:, 1].astype(np.int64)  # the label is the second code: needs the embedding and the positions
    cfg = FitConfig().with_overrides({
        "model.name": "transformer", "model.tokens": "embed", "model.vocab_size": 5, "model.d_model": 16,
        "model.heads": 2, "model.layers": 1, "model.ff_size": 32, "train.standardize": "none",
        "train.epochs": 15, "train.batch_size": 32, "train.early_stopping": None, "optim.lr": 1e-2})
    res = fit(X[:300], y[:300], 5, cfg, seed=0)
    res.model.eval()
    with torch.no_grad():
        acc = float((res.model(torch.as_tensor(X[300:])).argmax(1).numpy() == y[300:]).mean())
    assert acc > 0.9, acc


def test_a_transformer_checkpoint_round_trips(tmp_path):
    from dlrig.train.checkpoint import load_model, save_model

    cfg = FitConfig().with_overrides({"model.name": "transformer", "model.d_model": 16, "model.heads": 2,
                                      "model.positional": "sinusoidal", "model.pooling": "cls"})
    torch.manual_seed(0)
    model = build_model(cfg.model, [1, 8, 8], 10).eval()
    save_model(tmp_path / "m.pt", model, cfg, sample_shape=[1, 8, 8], classes=list("0123456789"), seed=0)
    loaded, _ = load_model(tmp_path / "m.pt")
    x = torch.randn(3, 1, 8, 8)
    assert torch.equal(loaded(x), model(x))


@pytest.mark.slow  # ~2 s alone, longer on a shared machine: plumbing, not a model property
def test_nested_cv_searches_transformer_keys():
    from sklearn.datasets import load_digits

    from dlrig.params import CvParams, parse_params
    from dlrig.select.nested import NestedCV
    from dlrig.select.scorers import TorchScorer
    from dlrig.select.space import build_space

    X, y = load_digits(return_X_y=True)
    X, y = X[:160].astype(np.float32).reshape(-1, 1, 8, 8), y[:160]
    params = parse_params({"model": {"name": "transformer", **SMALL}, "train": {"epochs": 1, "early_stopping": None},
                           "search": {"space": {"model.heads": [1, 2], "model.pooling": ["cls", "mean"]}}})
    base = params.fit_config()
    driver = NestedCV(TorchScorer(X, y, 10, base, "accuracy"), y, None, build_space(params.search.space, base),
                      params.search, CvParams(depth=2, outer_folds=2, inner_folds=2), 0, start={})
    records = [driver.outer_fold(k, tr, te) for k, (tr, te) in enumerate(driver.outer_folds(np.arange(len(y))))]
    for record in records:
        assert record["best_config"]["model.heads"] in (1, 2) and record["best_config"]["model.pooling"] in ("cls", "mean")
        assert 0.0 <= record["outer_score"] <= 1.0
