import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dlrig.errors import UserError
from dlrig.params import SECTIONS, Params, load_params, parse_params

ROOT = Path(__file__).resolve().parents[1]


def test_committed_params_yaml_is_valid_and_complete():
    params = load_params(ROOT / "params.yaml")
    assert params.data.source == "digits"
    # Every key of the model is spelled out in params.yaml: nothing hides behind a default.
    import yaml

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())

    def keys(d, prefix=""):
        out = set()
        for k, v in d.items():
            out.add(prefix + k)
            if isinstance(v, dict):
                out |= keys(v, prefix + k + ".")
        return out

    dumped = keys(Params().model_dump(by_alias=True))
    assert dumped <= keys(raw), sorted(dumped - keys(raw))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"optim": {"lr": -1}}, "params.yaml: optim.lr must be > 0 (got -1)"),
        ({"optim": {"lr": "fast"}}, "params.yaml: optim.lr must be a number (got 'fast')"),
        ({"model": {"hiden": 3}}, "params.yaml: model.hiden is not a key of model.name=mlp (mlp keys: "),
        ({"modle": {}}, "params.yaml: modle is not a known key"),
        ({"train": {"epochs": 2.5}}, "params.yaml: train.epochs must be an integer (got 2.5)"),
        ({"train": {"epochs": 0}}, "params.yaml: train.epochs must be >= 1 (got 0)"),
        ({"optim": {"nesterov": "yes"}}, "params.yaml: optim.nesterov must be true or false (got 'yes')"),
        ({"model": {"dropout": 1.0}}, "params.yaml: model.dropout must be < 1 (got 1.0)"),
        ({"model": {"name": "cnn", "kernel_size": 4}}, "params.yaml: model.kernel_size must be odd (got 4)"),
        ({"split": {"duplicates": "drop"}}, "params.yaml: split.duplicates must be one of 'remove', 'refuse' or 'keep' (got 'drop')"),
        ({"validate": {"value_min": 5, "value_max": 1}}, "params.yaml: validate.value_min must be <= value_max"),
        ({"optim": {"name": "sgd", "nesterov": True, "momentum": 0}}, "params.yaml: optim.nesterov needs momentum > 0"),
    ],
)
def test_bad_params_give_one_clear_line(raw, message):
    with pytest.raises(UserError) as err:
        parse_params(raw)
    assert str(err.value).startswith(message)
    assert "Traceback" not in str(err.value)


def test_every_error_is_reported_not_just_the_first():
    with pytest.raises(UserError) as err:
        parse_params({"optim": {"lr": 0}, "model": {"depth": 0}})
    lines = str(err.value).splitlines()
    assert len(lines) == 2 and {line.split()[1] for line in lines} == {"optim.lr", "model.depth"}


def test_scientific_notation_is_a_float(tmp_path):
    text = (ROOT / "params.yaml").read_text()
    text = re.sub(r"(?m)^  lr: \S+", "  lr: 1e-3", text)
    (tmp_path / "params.yaml").write_text(text)
    params = load_params(tmp_path / "params.yaml")
    assert params.optim.lr == pytest.approx(1e-3) and params.optim.eps == pytest.approx(1e-8)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(UserError, match="file not found"):
        load_params(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("optim: [unclosed\n")
    with pytest.raises(UserError, match="bad.yaml: not valid YAML"):
        load_params(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="must be a mapping"):
        load_params(tmp_path / "list.yaml")


def test_unsafe_yaml_tags_are_refused(tmp_path):
    (tmp_path / "evil.yaml").write_text("seed: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_params(tmp_path / "evil.yaml")


def test_fit_config_overrides_are_validated():
    config = parse_params({}).fit_config()
    changed = config.with_overrides({"optim.lr": 0.05, "model.hidden": 16})
    assert (changed.optim.lr, changed.model.hidden) == (0.05, 16)
    assert config.optim.lr == 0.001  # the original is untouched
    with pytest.raises(UserError, match="optim.lr must be > 0"):
        config.with_overrides({"optim.lr": -2})
    with pytest.raises(UserError, match="optim.lrr: not a key"):
        config.with_overrides({"optim.lrr": 0.1})


@pytest.mark.parametrize("text", ["", "# only a comment\n", "{}\n"])
def test_an_empty_params_file_is_refused(tmp_path, text):
    (tmp_path / "params.yaml").write_text(text)
    with pytest.raises(UserError, match=r"params.yaml: is empty; it must hold every section \(seed, data, "):
        load_params(tmp_path / "params.yaml")


def test_a_missing_section_is_named(tmp_path):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    del raw["optim"], raw["report"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(UserError, match=r"params.yaml: missing section\(s\) optim, report; every section"):
        load_params(tmp_path / "params.yaml")


def test_the_committed_params_name_every_section():
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert list(raw) == list(SECTIONS)  # and in the documented order


@pytest.mark.parametrize(("key", "value"), [("optim.lr", ".inf"), ("optim.lr", ".nan"),
                                            ("labels.noise.rate", ".nan"), ("validate.value_max", "-.inf")])
def test_non_finite_numbers_are_refused(key, value):
    section, *rest = key.split(".")
    raw: dict = {}
    node = raw.setdefault(section, {})
    for part in rest[:-1]:
        node = node.setdefault(part, {})
    node[rest[-1]] = yaml.load(value, Loader=yaml.SafeLoader)
    with pytest.raises(UserError, match=rf"params.yaml: {re.escape(key)} must be a finite number"):
        parse_params(raw)


def test_a_non_finite_searched_value_is_refused():
    with pytest.raises(UserError, match="search.space.optim.lr: .*finite"):
        parse_params({"search": {"space": {"optim.lr": [0.001, float("inf")]}}})
    with pytest.raises(UserError, match="search.space.optim.lr.high must be a finite number"):
        parse_params({"search": {"space": {"optim.lr": {"low": 0.001, "high": float("inf")}}}})


def test_check_params_exits_non_zero_on_an_empty_file(tmp_path):
    (tmp_path / "params.yaml").write_text("")
    proc = subprocess.run([sys.executable, "-m", "dlrig.cli", "check-params", str(tmp_path / "params.yaml")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: params.yaml: is empty")


def test_a_key_of_another_model_family_names_the_family_s_keys():
    """`dvc exp run -S model.channels=[8]` with model.name: mlp."""
    with pytest.raises(UserError) as err:
        parse_params({"model": {"name": "mlp", "channels": [8]}})
    assert str(err.value) == ("params.yaml: model.channels is not a key of model.name=mlp "
                              "(mlp keys: name, activation, dropout, norm, norm_momentum, norm_eps, init, "
                              "residual, hidden, depth)")
    with pytest.raises(UserError, match=r"model.name must be one of \['cnn', 'mlp', .*\] \(got 'gnn'\)"):
        parse_params({"model": {"name": "gnn"}})
    with pytest.raises(UserError, match="search.space.model.kernel_size: model.kernel_size is not a key"):
        parse_params({"search": {"space": {"model.kernel_size": [3, 5]}}})
    cnn = parse_params({"model": {"name": "cnn"}, "search": {"space": {"model.kernel_size": [3, 5]}}})
    assert cnn.model.kernel_size == 3


# ------------------------------------------------------------- transformer family and cnn geometry
TF = {"name": "transformer"}


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({**TF, "d_model": 0}, "params.yaml: model.d_model must be >= 1 (got 0)"),
        ({**TF, "heads": 3}, "params.yaml: model.heads must divide d_model (got heads 3, d_model 64)"),
        ({**TF, "heads": 0}, "params.yaml: model.heads must be >= 1 (got 0)"),
        ({**TF, "layers": 0}, "params.yaml: model.layers must be >= 1 (got 0)"),
        ({**TF, "decoder_layers": -1}, "params.yaml: model.decoder_layers must be >= 0 (got -1)"),
        ({**TF, "decoder_layers": 1}, "params.yaml: model.decoder_layers is for sequence-to-sequence tasks"),
        ({**TF, "ff_size": 2.5}, "params.yaml: model.ff_size must be an integer (got 2.5)"),
        ({**TF, "dropout": 1.0}, "params.yaml: model.dropout must be < 1 (got 1.0)"),
        ({**TF, "attention_dropout": -0.1}, "params.yaml: model.attention_dropout must be >= 0 (got -0.1)"),
        ({**TF, "norm_first": "yes"}, "params.yaml: model.norm_first must be true or false (got 'yes')"),
        ({**TF, "positional": "rope"}, "params.yaml: model.positional must be one of 'learned', 'sinusoidal' or 'none' (got 'rope')"),
        ({**TF, "pooling": "max"}, "params.yaml: model.pooling must be one of 'cls' or 'mean' (got 'max')"),
        ({**TF, "tokens": "pixels"}, "params.yaml: model.tokens must be one of 'rows', 'patches' or 'embed' (got 'pixels')"),
        ({**TF, "patch_size": 0}, "params.yaml: model.patch_size must be >= 1 (got 0)"),
        ({**TF, "tokens": "embed"}, "params.yaml: model.vocab_size is required with tokens: embed"),
        ({**TF, "tokens": "embed", "vocab_size": 0}, "params.yaml: model.vocab_size must be >= 1 (got 0)"),
        ({**TF, "channels": [8]}, "params.yaml: model.channels is not a key of model.name=transformer (transformer keys: name,"),
        ({"name": "cnn", "stride": 0}, "params.yaml: model.stride must be an integer >= 1 or a list of them, one per channels entry (got 0)"),
        ({"name": "cnn", "stride": [1, 1.5], "padding": 1}, "params.yaml: model.stride must be an integer >= 1 or a list of them, one per channels entry (got [1, 1.5])"),
        ({"name": "cnn", "stride": [1, 1, 2], "padding": 1}, "params.yaml: model.stride must be one value or one per channels entry (got 3 strides for 2 channels)"),
        ({"name": "cnn", "stride": 2}, "params.yaml: model.padding 'same' needs stride 1"),
        ({"name": "cnn", "padding": -1}, "params.yaml: model.padding must be 'same' or an integer >= 0 (got -1)"),
        ({"name": "cnn", "padding": "valid"}, "params.yaml: model.padding must be 'same' or an integer >= 0 (got 'valid')"),
        ({"name": "cnn", "padding": True}, "params.yaml: model.padding must be 'same' or an integer >= 0 (got True)"),
        ({"name": "cnn", "pooling": "cls"}, "params.yaml: model.pooling must be one of 'max', 'avg' or 'none' (got 'cls')"),
        ({"name": "cnn", "pool_size": 1}, "params.yaml: model.pool_size must be >= 2 (got 1)"),
    ],
)
def test_bad_transformer_and_cnn_geometry_keys_give_one_line(model, message):
    with pytest.raises(UserError) as err:
        parse_params({"model": model})
    assert str(err.value).startswith(message), str(err.value)
    assert "\n" not in str(err.value)


def test_embed_tokens_need_standardize_none():
    raw = {"model": {**TF, "tokens": "embed", "vocab_size": 59}}
    with pytest.raises(UserError, match=r"^params.yaml: train.standardize must be none with model.tokens: embed"):
        parse_params(raw)
    assert parse_params({**raw, "train": {"standardize": "none"}}).model.vocab_size == 59


def test_transformer_keys_are_searchable():
    params = parse_params({"model": TF, "search": {"space": {
        "model.heads": [1, 2, 4], "model.d_model": [32, 64], "model.attention_dropout": {"low": 0.0, "high": 0.3},
        "model.positional": ["learned", "sinusoidal", "none"], "model.pooling": ["cls", "mean"]}}})
    cfg = params.fit_config().with_overrides({"model.heads": 2, "model.pooling": "cls"})
    assert (cfg.model.heads, cfg.model.pooling) == (2, "cls")
    with pytest.raises(UserError, match=r"^params.yaml: search.space.model.heads: model.heads must divide d_model"):
        parse_params({"model": TF, "search": {"space": {"model.heads": [2, 3]}}})
    with pytest.raises(UserError, match="search.space.model.decoder_layers: .*sequence-to-sequence"):
        parse_params({"model": TF, "search": {"space": {"model.decoder_layers": [0, 1]}}})
    with pytest.raises(UserError, match="search.space.model.heads: model.heads is not a key"):
        parse_params({"search": {"space": {"model.heads": [2]}}})  # the mlp has no heads


def test_a_search_may_switch_to_the_transformer_family():
    params = parse_params({"search": {"space": {"model.name": ["mlp", "transformer"]}}})
    cfg = params.fit_config().with_overrides({"model.name": "transformer", "model.heads": 2})
    assert (cfg.model.name, cfg.model.heads, cfg.model.dropout) == ("transformer", 2, params.model.dropout)
