"""Training: the fit loop, optimizers and schedules."""

from dlrig.train.fit import FitResult, fit, fit_standardizer, predict_proba

__all__ = ["FitResult", "fit", "fit_standardizer", "predict_proba"]
