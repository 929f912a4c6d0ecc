"""The report's "Labels" section: what the labels stage injected, what the detect stage found, and where
the label study's results are.

Inputs: ``labels.json`` (``dlrig.labels.corrupt.corrupt_training_labels``) and ``detect.json`` (the detect
stage: ``find_label_issues``'s summary, plus ``detection_scores`` against the injected flips when there
were any). The label study (``dlrig.studies.labels``) is not read here: it is not part of the default
pipeline, so a dep on its results would pull it into every ``dvc repro``, and reading them undeclared would
show stale numbers. Its section is on the studies page (``dlrig.report.studies``); this one links to it.
The sentences and numbers are computed here; the markup is ``templates/labels.html.j2``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from markupsafe import Markup

from dlrig.errors import UserError
from dlrig.report.markup import finite, num, pct, render

STUDIES_COMMAND = "dvc repro studies/dvc.yaml"
STUDIES_PAGE = "studies/report.html"  # the studies' report stage writes it, relative to reports/report.html
DETECT_KEYS = (
    "n",
    "n_splits",
    "noise_rate",
    "n_issues",
    "n_contradicted",
    "n_ambiguous",
    "n_issues_likely_noise",
    "n_issues_ambiguous",
    "ambiguity_threshold",
)


def check_labels(
    labels_path: Path, labels: Mapping[str, Any], detect_path: Path, detect: Mapping[str, Any]
) -> None:
    """Refuse labels.json / detect.json without the keys the section reads."""
    missing = [k for k in ("n_before", "n_after", "imbalance", "noise") if k not in labels]
    missing += [f"imbalance.{k}" for k in ("profile", "counts") if k not in (labels.get("imbalance") or {})]
    missing += [f"noise.{k}" for k in ("kind", "n", "n_flipped") if k not in (labels.get("noise") or {})]
    if missing:
        raise UserError(f"{labels_path}: lacks {missing} (re-run the labels stage)")
    if "enabled" not in detect:
        raise UserError(f"{detect_path}: lacks 'enabled' (re-run the detect stage)")
    missing = [k for k in DETECT_KEYS if k not in detect] if detect["enabled"] else []
    if missing:
        raise UserError(f"{detect_path}: lacks {missing} (re-run the detect stage)")


def _param(params: Mapping[str, Any], *keys: str) -> Any:
    node: Any = params
    for key in keys:
        node = node.get(key) if isinstance(node, dict) else None
    return node


def corruption(labels: Mapping[str, Any]) -> tuple[bool, bool]:
    """(noisy, imbalanced): whether the labels stage flipped labels / dropped rows of the training split."""
    imbalance, noise = labels["imbalance"], labels["noise"]
    imbalanced = imbalance["profile"] != "none" and labels["n_after"] < labels["n_before"]
    noisy = noise["kind"] != "none" and int(noise["n_flipped"]) > 0
    return noisy, imbalanced


def _realised_ratio(counts: Sequence[Any]) -> float | None:
    present = [int(c) for c in counts if int(c) > 0]
    return max(present) / min(present) if present else None


def training_label_caveat(labels: Mapping[str, Any]) -> tuple[str, str] | None:
    """None when the training labels are as they came; else (what they are, the evidence), e.g.
    ("noisy", "575 of 1,437 flipped by the labels stage"): the words a CV score measured on them needs."""
    noisy, imbalanced = corruption(labels)
    words, evidence = [], []
    if noisy:
        words.append("noisy")
        noise = labels["noise"]
        flipped, n = num(int(noise["n_flipped"])), num(int(noise["n"]))
        evidence.append(f"{flipped} of {n} flipped by the labels stage")
    if imbalanced:
        words.append("imbalanced")
        dropped = int(labels["n_before"]) - int(labels["n_after"])
        text = f"{num(dropped)} of {num(int(labels['n_before']))} rows dropped by the labels stage"
        ratio = _realised_ratio(labels["imbalance"]["counts"])
        evidence.append(text + (f", n_max / n_min = {ratio:.2f}" if ratio is not None else ""))
    return (", ".join(words), "; ".join(evidence)) if words else None


def _class_name(classes: Sequence[str], i: int, k: int) -> str:
    return classes[i] if len(classes) == k else str(i)


def _injected(
    labels: Mapping[str, Any], classes: Sequence[str], params: Mapping[str, Any]
) -> dict[str, Any]:
    imbalance, noise = labels["imbalance"], labels["noise"]
    counts = [int(c) for c in imbalance["counts"]]
    n_noise, n_flipped = int(noise["n"]), int(noise["n_flipped"])
    noisy, imbalanced = corruption(labels)
    requested_ratio = _param(params, "labels", "imbalance", "ratio")
    requested_rate = _param(params, "labels", "noise", "rate")
    if not imbalanced and not noisy:
        summary = (
            "Nothing was injected (labels.noise.kind and labels.imbalance.profile are none): the model "
            "trained on the training split's labels as they are."
        )
    else:
        parts = []
        if imbalanced:
            parts.append(f"{imbalance['profile']} imbalance (rows dropped from the training classes)")
        if noisy:
            parts.append(f"{noise['kind']} label noise (labels flipped)")
        summary = (
            f"Injected on the training split only: {' and '.join(parts)}; the test split is untouched, so "
            "the test results above measure against the true labels, and the cross-validation scores "
            "against the corrupted training labels."
        )
    imbalance_text = str(imbalance["profile"])
    if imbalanced and finite(requested_ratio):
        imbalance_text += f" (requested ratio {requested_ratio:g})"
    ratio = _realised_ratio(counts)
    if ratio is not None:
        imbalance_text += f"; realised n_max / n_min = {ratio:.2f}"
    noise_text = str(noise["kind"])
    if noisy and finite(requested_rate):
        noise_text += f" (requested rate {requested_rate:g})"
    noise_text += f"; {num(n_flipped)} of {num(n_noise)} labels flipped ({pct(n_flipped / max(n_noise, 1))})"
    facts = [
        ("Training rows", f"{num(int(labels['n_before']))} before, {num(int(labels['n_after']))} after"),
        ("Imbalance", imbalance_text),
        ("Label noise", noise_text),
    ]
    flip_rates = noise.get("per_class_rate") or []
    total = sum(counts) or 1
    rows = [
        (
            _class_name(classes, i, len(counts)),
            num(c),
            f"{c / total:.1%}",
            pct(flip_rates[i]) if i < len(flip_rates) else "n/a",
        )
        for i, c in enumerate(counts)
    ]
    return {"summary": summary, "facts": facts, "rows": rows}


def _confusions(joint: Any, classes: Sequence[str], limit: int = 5) -> list[str]:
    """The most frequent off-diagonal cells of the confident joint: given label, what it looks like."""
    if not isinstance(joint, list) or not joint:
        return []
    k = len(joint)
    cells = sorted(
        ((-int(c), i, j) for i, row in enumerate(joint) for j, c in enumerate(row) if i != j and c),
    )[:limit]
    return [
        f"{num(-neg)} row{'s' if neg != -1 else ''} labelled {_class_name(classes, i, k)} "
        f"look{'s' if neg == -1 else ''} like {_class_name(classes, j, k)}"
        for neg, i, j in cells
    ]


def _detection(detect: Mapping[str, Any], classes: Sequence[str]) -> dict[str, Any] | None:
    """What confident learning found (None when detection was off)."""
    if not detect.get("enabled"):
        return None
    n = int(detect["n"])

    def share(count: Any) -> str:
        return f"{num(int(count))} ({pct(int(count) / n if n else 0.0)})"

    intro = (
        f"Each of the {num(n)} training rows was predicted by a model that did not train on it "
        f"({detect['n_splits']}-fold cross-validation inside the training split; the test split is never "
        "used), and confident learning compared those probabilities with the given labels."
    )
    facts = [
        ("Estimated noise rate", pct(detect["noise_rate"])),
        ("Rows flagged as label issues", share(detect["n_issues"])),
        ("… contradicted and not ambiguous: likely wrong", share(detect["n_issues_likely_noise"])),
        ("… ambiguous: likely class overlap", share(detect["n_issues_ambiguous"])),
        ("All confidently contradicted rows", share(detect["n_contradicted"])),
        ("All ambiguous rows", share(detect["n_ambiguous"])),
    ]
    if "n_without_confident_class" in detect:
        facts.append(("No class above its threshold", share(detect["n_without_confident_class"])))
    found = detect.get("against_injected")
    if isinstance(found, dict):
        facts += [
            ("True noise rate (injected)", pct(detect.get("true_noise_rate"))),
            (
                "Against the injected flips",
                f"precision {num(found.get('precision'), 3)}, recall {num(found.get('recall'), 3)}, "
                f"F1 {num(found.get('f1'), 3)} ({num(found.get('n_flagged'))} flagged, "
                f"{num(found.get('n_true'))} truly flipped)",
            ),
        ]
        truth = (
            "Precision: the share of flagged rows that were truly flipped; recall: the share of flipped "
            "rows that were flagged."
        )
    else:
        truth = "No noise was injected, so there is no truth to score the flags against."
    return {
        "intro": intro,
        "facts": facts,
        "threshold": detect["ambiguity_threshold"],
        "truth": truth,
        "confusions": _confusions(detect.get("confident_joint"), classes),
    }


def labels_section(
    labels: Mapping[str, Any], detect: Mapping[str, Any], classes: Sequence[str], params: Mapping[str, Any]
) -> Markup:
    return render(
        "labels.html.j2",
        injected=_injected(labels, classes, params),
        detection=_detection(detect, classes),
        studies_command=STUDIES_COMMAND,
        studies_page=STUDIES_PAGE,
    )
