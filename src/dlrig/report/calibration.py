"""The report's "Calibration" section: ECE on the test split before and after temperature scaling.

It reads ``metrics.json``'s ``calibration`` (written by the evaluate stage with
``dlrig.evaluate.holdout.calibration``) and shows the reliability diagram drawn from
``plots/reliability_{before,after}.json``. Its verdict sentence is computed from the saved ECEs, so a T
that made calibration worse is called worse, never an improvement. The sentences and numbers are
computed here; the markup is ``templates/calibration.html.j2``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from markupsafe import Markup

from dlrig.report.markup import num, pct, render

BASE_KEYS = ("n_bins", "ece", "temperature", "temperature_fitted", "fitted_on", "warnings")
FITTED_KEYS = ("ece_scaled", "ece_change")


def missing_calibration_keys(calib: Any) -> list[str]:
    """The keys metrics.json's calibration lacks: those ``calibration()`` always writes, then the scaled
    ECE when a T was fitted, or the reason when none was."""
    if not isinstance(calib, dict):
        return ["calibration"]
    keys = list(BASE_KEYS)
    if "temperature_fitted" in calib:
        keys += FITTED_KEYS if calib["temperature_fitted"] else ("reason",)
    return [k for k in keys if k not in calib]


def scaling_effect(ece: float, after: float) -> str:
    """What T did to the test ECE, as its two-decimal percentages show: lowered, raised or unchanged."""
    if pct(after) == pct(ece):
        return "unchanged"
    return "lowered" if after < ece else "raised"


def verdict(calib: Mapping[str, Any]) -> str:
    """One sentence: whether temperature scaling helped or hurt on the test split, and why if it hurt.

    "Temperature scaling (T = 8.65) raised the test ECE from 7.66% to 48.78%: it made calibration worse
    ..." -- every word after the colon follows from the numbers saved in metrics.json.
    """
    t, ece, after = float(calib["temperature"]), calib["ece"], calib["ece_scaled"]
    head = f"Temperature scaling (T = {t:.2f})"
    effect = scaling_effect(ece, after)
    if effect == "unchanged":
        return f"{head} left the test ECE at {pct(ece)}: it made no visible difference to calibration."
    if effect == "lowered":
        return f"{head} lowered the test ECE from {pct(ece)} to {pct(after)}: it made calibration better."
    text = (
        f"{head} raised the test ECE from {pct(ece)} to {pct(after)}: it made calibration worse, so the "
        "unscaled probabilities are the better ones"
    )
    flipped, rows = calib.get("fit_labels_flipped"), int(calib["fitted_on"])
    if flipped:
        text += (
            f"; the fitting labels were noisy ({num(int(flipped))} of {num(rows)} flipped by the labels "
            "stage), and T learned that noise"
        )
    return text + "."


def _not_fitted(calib: Mapping[str, Any], n_val: Any) -> str:
    """Why there is no T: too few rows (the evaluate stage's reason), none recorded, or none held out."""
    rows = int(calib["fitted_on"])
    if rows > 0:
        return (
            f"Temperature scaling was not applied (T = 1): {calib['reason']}. A single temperature fitted on "
            "that few rows follows their chance more than the model's miscalibration, and could make the "
            "test ECE worse."
        )
    if isinstance(n_val, int) and n_val > 0:
        return (
            f"No temperature was fitted, although the final fit held out {num(n_val)} rows for early "
            "stopping: the checkpoint does not list them (it predates the train stage recording them). "
            "Re-run the train and evaluate stages to fit T on them."
        )
    return (
        "No temperature was fitted: the final fit held out no early-stopping rows (early stopping was "
        "off), and fitting T on the test split would let the test set tune the model it scores."
    )


def _fitted_facts(calib: Mapping[str, Any]) -> list[tuple[str, str]]:
    t, after = float(calib["temperature"]), calib["ece_scaled"]
    worse = scaling_effect(calib["ece"], after) == "raised"
    rows_text = f"{num(int(calib['fitted_on']))} training rows held out for early stopping"
    if calib.get("fit_labels_flipped"):
        flipped = num(int(calib["fit_labels_flipped"]))
        rows_text += f", {flipped} of them with labels flipped by the labels stage"
    return [
        (
            "ECE, test split, after temperature scaling",
            pct(after) + (" (worse: use the unscaled probabilities)" if worse else ""),
        ),
        ("Temperature T", f"{num(t)} (divides the logits: T > 1 softens, T < 1 sharpens)"),
        ("T fitted on", rows_text),
    ]


def _fitted_text(calib: Mapping[str, Any], n_test: int) -> str:
    t = float(calib["temperature"])
    direction = "softens" if t > 1 else "sharpens" if t < 1 else "leaves"
    return (
        f"{verdict(calib)} T was fitted on the training split's early-stopping rows, the rows the final "
        f"model took no gradient steps on, by minimising their log loss; the {num(n_test)} test samples "
        f"were only scored. T = {t:.2f} {direction} the probabilities. Dividing every logit by one T never "
        "changes which class is predicted, so accuracy and the per-class results are the same after it."
    )


def calibration_section(calib: Mapping[str, Any], n_test: int, n_val: Any, png: bytes) -> Markup:
    """``n_val``: the early-stopping rows the training history reports (to say why no T was fitted)."""
    scaled = bool(calib["temperature_fitted"])
    bins = int(calib["n_bins"])
    label = "ECE, test split" + (" (before temperature scaling)" if scaled else "")
    facts = [(label, pct(calib["ece"]))]
    if scaled:
        facts += _fitted_facts(calib)
        text = _fitted_text(calib, n_test)
    else:
        facts.append(("Temperature T", "1 (not fitted)"))
        text = _not_fitted(calib, n_val)
    return render(
        "calibration.html.j2",
        bins=bins,
        facts=facts,
        text=text,
        calibration_warnings=calib.get("warnings") or [],
        png=png,
    )
