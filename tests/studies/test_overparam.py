"""The over-parameterisation study (dlrig.studies.overparam): sharpness on cases with a known answer, the
verdict follows the seed ranges, a tiny real run gives sane numbers through the stage and the page, and bad
params stop in one line."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
import yaml
from sklearn.datasets import make_classification
from torch import nn

from dlrig.data.dataset import Dataset
from dlrig.errors import UserError
from dlrig.params import OverparamStudyParams, Params, ReportParams, dump_params, parse_params
from dlrig.report.studies import render_page
from dlrig.studies.overparam import compare, config, sharpness, verdict
from dlrig.train import fit
from dlrig.train.batched import batch_key

ROOT = Path(__file__).resolve().parents[2]


def _squared_norm_model(W: torch.Tensor) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A linear map without bias fed the identity, with loss sum(out^2): L(W) = ||W||_F^2."""
    model = nn.Linear(W.shape[1], W.shape[0], bias=False)
    with torch.no_grad():
        model.weight.copy_(W)
    return model, torch.eye(W.shape[1]), torch.zeros(W.shape[1])


def _sum_sq(out: torch.Tensor, _y: torch.Tensor) -> torch.Tensor:
    return out.pow(2).sum()


@pytest.mark.parametrize("rho", [0.0, 0.05, 0.3])
def test_the_rise_of_a_quadratic_is_rho_squared_times_the_norm(rho):
    # ||W + D||^2 - ||W||^2 = 2<W, D> + ||D||^2; the +/- pair cancels the first term and each row of D has
    # norm rho * ||row of W||, so the mean rise is exactly rho^2 ||W||^2 for every direction drawn.
    W = torch.tensor([[3.0, 4.0, 0.0], [1.0, -2.0, 2.0]])
    model, X, y = _squared_norm_model(W)
    out = sharpness(model, X, y, rho, directions=10, seed=0, loss_fn=_sum_sq)
    assert out["loss"] == pytest.approx(25.0 + 9.0)
    assert out["rise"] == pytest.approx(rho**2 * 34.0, rel=1e-5, abs=1e-6)
    assert out["rise_sd"] == pytest.approx(0.0, abs=1e-4)
    assert torch.equal(model.weight.detach(), W)  # the model is left as it was


def _digits_like(n: int = 240) -> Dataset:
    X, y = make_classification(n_samples=n, n_features=6, n_informative=4, n_redundant=0, n_classes=3,
                               class_sep=1.5, random_state=1)
    return Dataset(X=X, y=y, classes=["a", "b", "c"], source="synthetic")


def test_on_a_trained_mlp_the_rise_grows_with_rho_and_is_seeded():
    data = _digits_like()
    cfg = config(OverparamStudyParams(epochs=8, min_steps=1), 16, 32, len(data.y))
    model = fit(data.X, data.y, 3, cfg, seed=0).model
    X, y = torch.as_tensor(data.X), torch.as_tensor(data.y)
    rises = [sharpness(model, X, y, rho, 10, seed=1)["rise"] for rho in (0.0, 0.05, 0.2, 0.5)]
    assert rises[0] == 0.0 and 0 < rises[1] < rises[2] < rises[3]
    assert sharpness(model, X, y, 0.2, 10, seed=1) == sharpness(model, X, y, 0.2, 10, seed=1)
    assert sharpness(model, X, y, 0.2, 10, seed=2)["rise"] != rises[2]


def _cell(mean: float, half: float) -> dict[str, float]:
    return {"mean": mean, "min": mean - half, "max": mean + half}


def _table(sharp: dict[tuple[int, int], tuple[float, float]], loss: float = 0.01) -> list[dict]:
    return [{"width": w, "batch_size": b, "sharpness": _cell(*v), "train_loss": _cell(loss, 0.001),
             "relative_sharpness": _cell(v[0] / loss, v[1] / loss)} for (w, b), v in sharp.items()]


def test_the_verdict_follows_the_seed_ranges():
    clear = _table({(4, 16): (0.010, 0.001), (4, 512): (0.020, 0.001),
                    (256, 16): (0.001, 0.0001), (256, 512): (0.003, 0.0001)})
    text = verdict(clear)
    assert text.startswith("Loss rise under random perturbations -- batch size: sharper with batch 512 than "
                           "with batch 16 (width 4: 0.02 vs 0.01; width 256: 0.003 vs 0.001)")
    assert "Width: flatter with width 256 than with width 4 (batch size 16: 0.001 vs 0.01" in text
    assert "loss level" not in text  # equal training losses: nothing to qualify

    overlap = _table({(4, 16): (0.010, 0.004), (4, 512): (0.012, 0.004),
                      (256, 16): (0.009, 0.004), (256, 512): (0.011, 0.004)})
    text = verdict(overlap)
    assert "batch size: no clear effect of batch size anywhere: width 4: 0.012 vs 0.01" in text
    assert "Width: no clear effect of width anywhere" in text

    mixed = _table({(4, 16): (0.030, 0.001), (4, 512): (0.010, 0.001),
                    (256, 16): (0.001, 0.0001), (256, 512): (0.003, 0.0001)})
    assert "batch size: no consistent effect of batch size: sharper with batch 512" in verdict(mixed)
    assert compare(_cell(1, 0.1), _cell(0.5, 0.1)) == 1 and compare(_cell(1, 0.5), _cell(0.5, 0.1)) == 0


def test_a_sharper_minimum_with_a_higher_loss_is_qualified():
    rows = _table({(4, 16): (0.010, 0.001), (4, 512): (0.020, 0.001)})
    rows[1]["train_loss"] = _cell(0.1, 0.001)  # batch 512: twice the rise at ten times the loss
    rows[1]["relative_sharpness"] = _cell(0.2, 0.01)
    rows[0]["relative_sharpness"] = _cell(1.0, 0.1)
    assert verdict(rows).startswith(
        "Loss rise under random perturbations -- batch size: sharper with batch 512 than with batch 16 (width 4: "
        "0.02 vs 0.01) (where one is sharper it also has the higher training loss, so part of the rise is the "
        "loss level; per unit of loss: width 4: batch 512 flatter, rise/loss 0.2 vs 1)")


def stage(rel: str):
    spec = importlib.util.spec_from_file_location(f"stage_{rel.replace('/', '_')}", ROOT / "stages" / rel)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


TINY = {"widths": [2, 32], "batch_sizes": [16, 200], "epochs": 5, "min_steps": 40, "lr": 0.01, "seeds": 3,
        "rho": 0.1, "directions": 10}


def test_a_tiny_run_through_the_stage_gives_a_sane_table_and_a_section(tmp_path):
    data = _digits_like(300)
    Dataset(X=data.X[:240], y=data.y[:240], classes=data.classes, source="s").save(
        tmp_path / "train.npz", tmp_path / "meta.json")
    Dataset(X=data.X[240:], y=data.y[240:], classes=data.classes, source="s").save(tmp_path / "test.npz")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({**dump_params(Params()),
                                                          "studies": {"overparam": TINY}}))
    out = tmp_path / "op.json"
    stage("studies/overparam.py")(["--params", str(tmp_path / "params.yaml"), "--out", str(out),
                                   "--train", str(tmp_path / "train.npz"), "--test", str(tmp_path / "test.npz"),
                                   "--meta", str(tmp_path / "meta.json")])
    r = json.loads(out.read_text())
    rows = {(row["width"], row["batch_size"]): row for row in r["table"]}
    assert sorted(rows) == [(2, 16), (2, 200), (32, 16), (32, 200)]
    assert rows[(32, 16)]["params"] == (6 + 1) * 32 + (32 + 1) * 3
    # 240 rows: batch 16 = 15 steps per epoch, 5 epochs (75 steps); batch 200 = 2 steps, 20 epochs (40 steps)
    assert rows[(32, 16)]["epochs"] == 5 and rows[(32, 200)]["epochs"] == 20
    wide = rows[(32, 16)]
    assert wide["train_accuracy"]["mean"] > 0.85 and wide["test_accuracy"]["mean"] > 0.7  # 3 classes
    for row in rows.values():
        for k in ("train_accuracy", "test_accuracy", "train_loss", "sharpness", "relative_sharpness"):
            assert row[k]["min"] <= row[k]["mean"] <= row[k]["max"]
        assert row["sharpness"]["min"] > 0  # rho 0.1 moves every model uphill
    assert r["verdict"] == verdict(r["table"])

    html = render_page({"overparam": (str(out), r)}, tmp_path / "fig", ReportParams(dpi=50))
    assert '<section id="study-overparam">' in html and "Loss rise" in html
    assert (tmp_path / "fig/overparam/sharpness.png").stat().st_size > 1000


def test_every_run_trains_in_the_stack_and_large_batches_get_their_steps():
    cfg = OverparamStudyParams()
    for width in cfg.widths:
        for batch in cfg.batch_sizes:
            fit_cfg = config(cfg, width, batch, 1437)
            assert batch_key(fit_cfg) is not None  # fit_many stacks the seeds (else fit() one by one)
            assert fit_cfg.train.early_stopping is None and fit_cfg.model.dropout == 0
            steps = fit_cfg.train.epochs * -(-1437 // batch)
            assert steps >= cfg.min_steps and fit_cfg.train.epochs >= cfg.epochs
    assert config(cfg, 64, 512, 1437).train.epochs == 200 and config(cfg, 64, 16, 1437).train.epochs == 30


def test_bad_params_stop_in_one_line():
    raw = dump_params(Params())
    for bad, line in (({"batch_sizes": [64, 16]}, "batch_sizes must be strictly increasing"),
                      ({"rho": 0.0}, "rho must be > 0"), ({"directions": 5}, "directions must be >= 10"),
                      ({"seeds": 1}, "seeds must be >= 3")):
        raw["studies"] = {"overparam": bad}
        with pytest.raises(UserError) as exc:
            parse_params(raw)
        assert str(exc.value).startswith(f"params.yaml: studies.overparam.{line}")
        assert "\n" not in str(exc.value)
