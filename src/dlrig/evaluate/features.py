"""Fixed feature extractors + logistic regression: the classic alternatives to training a network.

- *automatic* features: a pretrained dlrig model's penultimate layer (:class:`PretrainedFeatures`) -- the
  body a transfer study pretrained on other classes, applied as a fixed function;
- *explicit* features: PCA fitted on the training rows (:class:`PcaFeatures`), and HOG-like gradient
  orientation histograms (:class:`HogFeatures`), written here with numpy: scikit-image, which has
  ``skimage.feature.hog``, is not a dependency of this project and one 40-line function is not worth one.

Each is a scikit-learn transformer, so ``make_feature_baseline`` returns a plain Pipeline: ``clone`` and a
fold-by-fold ``fit`` see only that fold's training rows (PCA's components, the scaler, the classifier;
the HOG and pretrained extractors learn nothing from data).

A pretrained extractor is only as clean as its checkpoint: one trained on rows that a CV later holds out
(e.g. pretrained on the same training split ``compare`` cross-validates) has seen them. The transfer study
pretrains on other classes and scores on the test split; in ``compare``, give a checkpoint trained on other
data.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from dlrig.errors import UserError

FEATURE_BASELINES = ("pca_logreg", "hog_logreg", "pretrained_logreg")
_KEYS = {  # the keyword arguments each baseline takes (compare.baselines.<name>.params)
    "pca_logreg": {"n_components": 20, "C": 1.0},
    "hog_logreg": {"cell": 2, "bins": 9, "C": 1.0},
    "pretrained_logreg": {"checkpoint": None, "C": 1.0},
}


def _flat(X: np.ndarray) -> np.ndarray:
    return np.asarray(X, np.float32).reshape(len(X), -1)


class PcaFeatures(TransformerMixin, BaseEstimator):
    """Standardise, then project on the first ``n_components`` principal axes of the *training* rows
    (fewer when the rows or features are fewer)."""

    def __init__(self, n_components: int = 20) -> None:
        self.n_components = n_components

    def fit(self, X: np.ndarray, y: Any = None) -> PcaFeatures:
        from sklearn.decomposition import PCA
        from sklearn.preprocessing import StandardScaler

        flat = _flat(X)
        self.scaler_ = StandardScaler().fit(flat)
        k = min(self.n_components, *flat.shape)
        self.pca_ = PCA(k, svd_solver="full").fit(self.scaler_.transform(flat))
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        return self.pca_.transform(self.scaler_.transform(_flat(X)))


def hog(images: np.ndarray, cell: int = 2, bins: int = 9) -> np.ndarray:
    """HOG-like descriptors of ``images`` [N, H, W]: per ``cell`` x ``cell`` cell, a histogram of unsigned
    gradient orientations (``bins`` over 0-180 degrees) weighted by gradient magnitude, L2-Hys normalised
    over 2 x 2-cell blocks (Dalal & Triggs 2005; hard binning, no Gaussian window)."""
    imgs = np.asarray(images, np.float64)
    gy, gx = np.gradient(imgs, axis=(1, 2))  # central differences, [-1, 0, 1] / 2
    magnitude = np.hypot(gx, gy)
    angle = np.rad2deg(np.arctan2(gy, gx)) % 180.0
    b = np.minimum((angle * bins / 180.0).astype(int), bins - 1)
    n, h, w = imgs.shape
    hc, wc = h // cell, w // cell
    if hc < 2 or wc < 2:
        raise UserError(f"hog: cell {cell} leaves fewer than 2 x 2 cells in {h} x {w} images "
                        "(use a smaller cell)")
    onehot = (b[..., None] == np.arange(bins)) * magnitude[..., None]
    onehot = onehot[:, : hc * cell, : wc * cell]
    cells = onehot.reshape(n, hc, cell, wc, cell, bins).sum(axis=(2, 4))  # [N, hc, wc, bins]
    blocks = np.concatenate(
        [cells[:, i : i + hc - 1, j : j + wc - 1] for i in (0, 1) for j in (0, 1)], axis=-1
    )  # [N, hc-1, wc-1, 4*bins]: each block's 2 x 2 cells
    for _ in range(2):  # L2-Hys: normalise, clip at 0.2, normalise again
        blocks = blocks / np.sqrt((blocks**2).sum(-1, keepdims=True) + 1e-6)
        blocks = np.minimum(blocks, 0.2)
    return blocks.reshape(n, -1).astype(np.float32)


class HogFeatures(TransformerMixin, BaseEstimator):
    """:func:`hog` of image samples [N, C, H, W] (channels averaged); learns nothing from the rows."""

    def __init__(self, cell: int = 2, bins: int = 9) -> None:
        self.cell, self.bins = cell, bins

    def fit(self, X: np.ndarray, y: Any = None) -> HogFeatures:
        if np.ndim(X) != 4:
            raise UserError(f"hog features need image samples [N, C, H, W] (got shape {list(np.shape(X))})")
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        return hog(np.asarray(X).mean(axis=1), self.cell, self.bins)


@cache
def _load(path: str, sha256: str) -> Any:  # keyed on the bytes: a rewritten file is loaded again
    from dlrig.train.transfer import load_source

    return load_source(path)[0]


class PretrainedFeatures(TransformerMixin, BaseEstimator):
    """The penultimate layer of a pretrained dlrig checkpoint (scaler + body, eval mode, no head): the
    features it learned on its own task, applied as a fixed function."""

    def __init__(self, checkpoint: str | None = None) -> None:
        self.checkpoint = checkpoint

    def fit(self, X: np.ndarray, y: Any = None) -> PretrainedFeatures:
        self._model()  # a missing or damaged checkpoint: one line, before any other work
        return self

    def _model(self) -> Any:
        from dlrig.train.transfer import weights_sha256

        if not self.checkpoint:
            raise UserError("pretrained_logreg: params.checkpoint is required (a dlrig checkpoint path)")
        return _load(str(self.checkpoint), weights_sha256(self.checkpoint))

    def transform(self, X: np.ndarray) -> np.ndarray:
        import torch

        model = self._model()
        with torch.no_grad():
            return model[:-1](torch.as_tensor(np.asarray(X, np.float32))).numpy()


def make_feature_baseline(name: str, params: dict[str, Any], seed: int) -> Any:  # noqa: ARG001 (deterministic)
    """A Pipeline ``features -> standardise -> logistic regression`` for ``name`` in FEATURE_BASELINES."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    unknown = sorted(set(params) - set(_KEYS[name]))
    if unknown:
        raise UserError(f"compare.baselines: {name}: unknown params {unknown} "
                        f"(allowed: {sorted(_KEYS[name])})")
    kw = {**_KEYS[name], **params}
    if name == "pca_logreg":
        features: Any = PcaFeatures(int(kw["n_components"]))
    elif name == "hog_logreg":
        features = HogFeatures(int(kw["cell"]), int(kw["bins"]))
    else:
        features = PretrainedFeatures(kw["checkpoint"])
    return make_pipeline(features, StandardScaler(), LogisticRegression(C=float(kw["C"]), max_iter=2000))


__all__ = ["FEATURE_BASELINES", "HogFeatures", "PcaFeatures", "PretrainedFeatures", "hog",
           "make_feature_baseline"]
