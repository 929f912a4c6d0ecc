from pathlib import Path

import pytest

from dlrig.errors import UserError
from dlrig.params import Params, load_params, parse_params

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
        ({"model": {"hiden": 3}}, "params.yaml: model.hiden is not a known key"),
        ({"modle": {}}, "params.yaml: modle is not a known key"),
        ({"train": {"epochs": 2.5}}, "params.yaml: train.epochs must be an integer (got 2.5)"),
        ({"train": {"epochs": 0}}, "params.yaml: train.epochs must be >= 1 (got 0)"),
        ({"optim": {"nesterov": "yes"}}, "params.yaml: optim.nesterov must be true or false (got 'yes')"),
        ({"model": {"dropout": 1.0}}, "params.yaml: model.dropout must be < 1 (got 1.0)"),
        ({"model": {"kernel_size": 4}}, "params.yaml: model.kernel_size must be odd (got 4)"),
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
    (tmp_path / "params.yaml").write_text("optim:\n  lr: 1e-3\n  eps: 1.0e-08\n")
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
