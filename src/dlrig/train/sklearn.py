"""A scikit-learn classifier around the dlrig fit loop, so ``clone``, ``cross_validate`` and
``GridSearchCV`` work on dlrig models.

Hyperparameters are the dotted training keys, spelled with ``__`` for sklearn (``optim__lr``,
``model__hidden``): ``__init__`` stores them and does nothing else; ``fit`` returns ``self``; learned state
ends in ``_``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from dlrig.params import FitConfig


class TorchClassifier(ClassifierMixin, BaseEstimator):
    def __init__(self, config: FitConfig | None = None, seed: int = 0, device: str = "cpu", **overrides: Any):
        self.config = config
        self.seed = seed
        self.device = device
        for key, value in overrides.items():
            setattr(self, key, value)
        self._override_keys = sorted(overrides)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        params = {"config": self.config, "seed": self.seed, "device": self.device}
        params.update({k: getattr(self, k) for k in self._override_keys})
        return params

    def set_params(self, **params: Any) -> TorchClassifier:
        for key, value in params.items():
            setattr(self, key, value)
            if key not in {"config", "seed", "device"} and key not in self._override_keys:
                self._override_keys = sorted([*self._override_keys, key])
        return self

    def _fit_config(self) -> FitConfig:
        base = self.config or FitConfig()
        return base.with_overrides({k.replace("__", "."): getattr(self, k) for k in self._override_keys})

    def fit(self, X: np.ndarray, y: np.ndarray) -> TorchClassifier:
        from dlrig.train import fit

        self.classes_, y_codes = np.unique(y, return_inverse=True)
        result = fit(np.asarray(X, np.float32), y_codes, len(self.classes_), self._fit_config(), self.seed,
                     device=self.device)
        self.model_, self.history_ = result.model, result.history
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        from dlrig.train import predict_proba

        return predict_proba(self.model_, np.asarray(X, np.float32))

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(1)]
