"""The report's "Calibration" section: ECE on the test split before and after temperature scaling.

It reads ``metrics.json``'s ``calibration`` (written by the evaluate stage with
``dlrig.evaluate.holdout.calibration``) and shows the reliability diagram drawn from
``plots/reliability_{before,after}.json``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dlrig.report.markup import esc, figure, kv_table, num, pct

ECE_HELP = (
    "ECE (expected calibration error): the test predictions are put in {bins} equal-width bins by their "
    "confidence (the probability of the predicted class); ECE is the mean gap between a bin's accuracy "
    "and its mean confidence, weighted by the bin's share of samples. 0 means a predicted 90% is right "
    "90% of the time."
)


def missing_calibration_keys(calib: Any) -> list[str]:
    """The keys metrics.json's calibration lacks: those ``calibration()`` writes, the scaled ones if T."""
    if not isinstance(calib, dict):
        return ["calibration"]
    keys = ["n_bins", "ece"] + (["temperature", "fitted_on", "ece_scaled"] if "temperature" in calib else [])
    return [k for k in keys if k not in calib]


def calibration_section(calib: Mapping[str, Any], n_test: int, n_val: Any, png: bytes) -> str:
    """``n_val``: the early-stopping rows the training history reports (to say why no T was fitted)."""
    scaled = "temperature" in calib
    ece, bins = calib["ece"], int(calib["n_bins"])
    facts = [("ECE, test split" + (" (before temperature scaling)" if scaled else ""), esc(pct(ece)))]
    if scaled:
        t, after = float(calib["temperature"]), calib["ece_scaled"]
        direction = "softens over-confident" if t > 1 else "sharpens under-confident" if t < 1 else "leaves"
        facts += [
            ("ECE, test split, after temperature scaling", esc(pct(after))),
            ("Temperature T", esc(f"{num(t)} (divides the logits: T > 1 softens, T < 1 sharpens)")),
            ("T fitted on", esc(f"{num(int(calib['fitted_on']))} training rows held out for early stopping")),
        ]
        change = "lowered" if after < ece else "did not lower"
        text = (
            f"T was fitted on the training split's early-stopping rows, the rows the final model took no "
            f"gradient steps on, by minimising their log loss; the {num(n_test)} test samples were only "
            f"scored. T = {t:.2f} {direction} probabilities and {change} the test ECE from {pct(ece)} to "
            f"{pct(after)}. Dividing every logit by one T never changes which class is predicted, so "
            "accuracy and the per-class results are the same after it."
        )
    elif isinstance(n_val, int) and n_val > 0:
        text = (
            f"No temperature was fitted, although the final fit held out {num(n_val)} rows for early "
            "stopping: the checkpoint does not list them (it predates the train stage recording them). "
            "Re-run the train and evaluate stages to fit T on them."
        )
    else:
        text = (
            "No temperature was fitted: the final fit held out no early-stopping rows (early stopping was "
            "off), and fitting T on the test split would let the test set tune the model it scores."
        )
    caption = (
        "Each point is one confidence bin: its mean confidence against its accuracy; the point's area grows "
        "with the bin's sample count, and the lower panel gives the counts (log scale). Points on the "
        "diagonal are calibrated; below it the model is over-confident, above it under-confident."
    )
    return (
        '<section id="calibration"><h2>Calibration</h2>'
        f'<p>{esc(ECE_HELP.format(bins=bins))}</p>{kv_table(facts)}<p>{esc(text)}</p>'
        f"{figure(png, 'Reliability diagram', esc(caption))}</section>"
    )
