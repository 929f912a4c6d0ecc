"""Training: the fit loop, in-fold handling, losses, optimizers and schedules, prediction."""

from dlrig.train.fit import FitResult, fit, fit_standardizer
from dlrig.train.predict import predict_proba

__all__ = ["FitResult", "fit", "fit_standardizer", "predict_proba"]
