"""Studies: one module per study, each a question asked of this data set with the library's own parts.

A study module offers ``run(params, data...) -> dict``: it takes the validated :class:`dlrig.params.Params`
(its knobs live under ``params.studies.<name>``) and the data sets it needs, and returns a JSON-ready
results dict. The stage ``stages/studies/<name>.py`` (a stage in ``studies/dvc.yaml``) saves that dict as
``reports/studies/<name>.json``; the ``report`` stage of ``studies/dvc.yaml`` draws its figures and its
section of ``reports/studies/report.html`` from that file alone (``dlrig.report.studies``).

Conventions:

- every random draw derives from ``params.seed`` (``dlrig.seeds.derive_seed`` with the job's
  place in the study), so the same params give the same numbers, in any order and with any ``n_jobs``;
- ``results["verdict"]``, when a study has one, is a sentence computed from the numbers in the same dict
  (never written by hand), and the report ends the study's section with it;
- numbers are rounded where they are stored (6 decimals), so the JSON diffs cleanly in git.

Studies import the areas (data, labels, train, select, evaluate); no area imports a study.
"""

from typing import Any

from dlrig.params import AugmentParams

# What a study switches off in the pipeline's train section when its arms must differ only in what the
# study sets: the pipeline's own augmentation, mixing and distillation teacher (augmentation.py,
# distillation.py). A dict of dotted overrides for ``FitConfig.with_overrides``.
NO_EXTRAS: dict[str, Any] = {
    "train.mixup_alpha": 0.0,
    "train.cutmix_alpha": 0.0,
    "train.augment": AugmentParams().model_dump(),  # every transform off
    "train.distill.teacher": None,
}
