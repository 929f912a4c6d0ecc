"""The computational budget made visible: what each stage of this run cost, and what the same run would
cost at MNIST scale and for a 100M-parameter model, on this machine and on one GPU.

Every stage records its seconds, CPU seconds, peak memory, fits and estimated FLOPs in
reports/run/<stage>.json (``dlrig.stage.record_cost``). Those vary from run to run, so they are never in
reports/report.html (byte-identical for the same params): the report stage renders them into a page of their
own, reports/run/cost.html, beside the records it reads (not a DVC output either); the main report's Cost
section embeds that page (an iframe) and links to it, so the report shows the numbers of the run that made
it while its own bytes stay fixed.

The estimates are arithmetic on measured numbers, each assumption stated on the page:

- throughput: the train stage's estimated FLOPs / its wall seconds (everything included: Python overhead,
  data, selection); small models run far below a CPU's peak, so the 100M-parameter CPU time is an upper
  bound;
- MNIST scale: the same search on 60,000 training rows; FLOPs grow with the rows (same fits, same epochs),
  at the same throughput;
- a 100M-parameter dense model: 6 x parameters x samples (forward 2, backward 4 FLOPs per parameter per
  sample) over the same samples, on this machine at the measured throughput, and on one GPU at
  ``GPU_FLOPS`` x ``GPU_UTILISATION``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from markupsafe import Markup

from dlrig.report.markup import page, render

GPU_NAME = "an H100-class GPU (NVIDIA H100 SXM)"
GPU_FLOPS = 989e12  # its dense BF16 tensor-core peak, FLOP/s (NVIDIA's datasheet; FP32 without TF32: 67e12)
GPU_UTILISATION = 0.4  # model FLOPs utilisation a tuned large-model training run reaches (assumed)
MNIST_ROWS = 60_000  # MNIST's training set
BIG_PARAMS = 100e6  # "a 100M-parameter model"


def load_records(run_dir: Path) -> dict[str, dict[str, Any]]:
    """``{stage: cost}`` from every reports/run/**/<stage>.json that has a cost record."""
    out = {}
    for path in sorted(Path(run_dir).rglob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and isinstance(record.get("cost"), dict):
            out[path.relative_to(run_dir).with_suffix("").as_posix()] = record["cost"]
    return out


def estimates(train: dict[str, Any] | None, n_train: int | None) -> dict[str, Any] | None:
    """What the train stage's run would cost at MNIST scale and for a 100M-parameter model (seconds), from
    its measured seconds and FLOPs; None without a train record that trained something."""
    if not train or not train.get("flops") or not train.get("seconds") or not n_train:
        return None
    throughput = train["flops"] / train["seconds"]  # FLOP/s achieved, all overheads included
    scale = MNIST_ROWS / n_train
    big_flops = 6 * BIG_PARAMS * train["samples"]  # the same samples through a 100M-parameter dense net
    gpu = GPU_FLOPS * GPU_UTILISATION
    rows = []
    for label, factor in ((f"this run ({n_train:,} training rows)", 1.0),
                          (f"MNIST scale ({MNIST_ROWS:,} training rows)", scale)):
        rows.append({
            "label": label,
            "flops": train["flops"] * factor,
            "this_model_cpu": train["seconds"] * factor,
            "big_flops": big_flops * factor,
            "big_cpu": big_flops * factor / throughput,
            "big_gpu": big_flops * factor / gpu,
        })
    return {"throughput": throughput, "scale": scale, "samples": train["samples"], "fits": train["fits"],
            "gpu": gpu, "rows": rows}


def duration(seconds: float) -> str:
    """Seconds as a person reads them: 42 s, 3.5 min, 7.2 h, 12 days, 3.1 years."""
    for unit, size in (("years", 365 * 86400), ("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.2g} s" if seconds < 10 else f"{seconds:.0f} s"


def flops(value: float) -> str:
    for unit, size in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
        if value >= size:
            return f"{value / size:.3g} {unit}"
    return f"{value:.3g} FLOP"


def cost_page(run_dir: Path, n_train: int | None) -> str:
    """The cost page (HTML) from the records in ``run_dir``."""
    records = load_records(run_dir)
    est = estimates(records.get("train"), n_train)
    formula = next((c["flops_formula"] for c in records.values() if c.get("flops_formula")), "n/a")
    # the studies run as their own pipeline (studies/dvc.yaml), often not with this run: their own table
    groups = [(title, {k: c for k, c in records.items() if k.startswith("studies/") == studies})
              for title, studies in (("The pipeline's stages (dvc.yaml)", False),
                                     ("The studies (studies/dvc.yaml), each as it last ran", True))]
    body = render("cost.html.j2", part="page", records=records, groups=groups, est=est, formula=formula,
                  duration=duration, flops=flops, gpu_name=GPU_NAME, gpu_flops=GPU_FLOPS,
                  gpu_utilisation=GPU_UTILISATION, big_params=BIG_PARAMS)
    return page("dlrig: what this run cost", body,
                subtitle="measured by the stages of the last run; varies from run to run (not a DVC output)")


def write_cost_page(reports_dir: Path) -> Path:
    """reports/run/cost.html from reports/run/*.json; written directly, as the records are: it varies
    from run to run, so it is no part of the report stage's (byte-identical) outputs."""
    reports_dir = Path(reports_dir)
    try:
        n_train = int(json.loads((reports_dir / "split.json").read_text(encoding="utf-8"))["n_train"])
    except (OSError, ValueError, KeyError, TypeError):
        n_train = None
    out = reports_dir / "run" / "cost.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(cost_page(reports_dir / "run", n_train), encoding="utf-8")
    return out


def cost_section() -> Markup:
    """The main report's Cost section: the page embedded and linked, by a fixed address (holding the numbers
    would break the report's bytes)."""
    return render("cost.html.j2", part="link")


__all__ = ["cost_page", "cost_section", "estimates", "load_records", "write_cost_page"]
