"""Fixed feature extractors (dlrig.evaluate.features): HOG-like histograms measure what they claim, PCA
sees only the rows it is fitted on, the pretrained extractor is the checkpoint's penultimate layer, and
each baseline learns digits well above chance."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits

from dlrig.errors import UserError
from dlrig.evaluate.features import HogFeatures, PcaFeatures, PretrainedFeatures, hog, make_feature_baseline
from dlrig.params import FitConfig, parse_params
from dlrig.train import fit
from dlrig.train.checkpoint import save_model


def digits():
    d = load_digits()
    return d.images[:, None].astype(np.float32), d.target


def test_hog_puts_a_vertical_edge_in_the_horizontal_gradient_bin():
    img = np.zeros((1, 8, 8))
    img[:, :, 4:] = 1.0  # a vertical edge: the gradient points along x (0 degrees)
    cells = hog(img, cell=2, bins=9).reshape(3, 3, 4, 9)
    assert cells.shape == (3, 3, 4, 9)
    assert np.argmax(cells.sum(axis=(0, 1, 2))) == 0
    rot = hog(img.transpose(0, 2, 1), cell=2, bins=9).reshape(3, 3, 4, 9)  # horizontal edge: 90 degrees
    assert np.argmax(rot.sum(axis=(0, 1, 2))) == 4
    # block normalisation: a brighter copy of the image has the same descriptor
    np.testing.assert_allclose(hog(3 * img), hog(img), atol=1e-5)


def test_hog_refuses_tables_and_tiny_images():
    with pytest.raises(UserError, match="need image samples"):
        HogFeatures().fit(np.zeros((4, 64)))
    with pytest.raises(UserError, match="fewer than 2 x 2 cells"):
        hog(np.zeros((2, 8, 8)), cell=8)


def test_pca_is_fitted_on_the_training_rows_only():
    X, y = digits()
    tr, te = np.arange(0, 300), np.arange(300, 400)
    poisoned = X.copy()
    poisoned[te] = 1e6  # held-out rows: anything fitted on them would move
    a = clone(make_feature_baseline("pca_logreg", {}, 0)).fit(X[tr], y[tr])
    b = clone(make_feature_baseline("pca_logreg", {}, 0)).fit(poisoned[tr], y[tr])
    np.testing.assert_array_equal(a[0].pca_.components_, b[0].pca_.components_)
    assert PcaFeatures(50).fit(X[:10]).pca_.n_components_ == 10  # fewer rows than components: clamped


def test_pretrained_features_are_the_penultimate_layer(tmp_path):
    X, y = digits()
    config = FitConfig().with_overrides({"model.hidden": 12, "train.epochs": 2, "train.early_stopping": None})
    model = fit(X[:200], y[:200], 10, config, 0).model
    save_model(tmp_path / "s.pt", model, config, sample_shape=[1, 8, 8], classes=list("0123456789"), seed=0)
    feats = PretrainedFeatures(str(tmp_path / "s.pt")).fit(X[:5]).transform(X[:5])
    with torch.no_grad():
        expected = model[:-1](torch.as_tensor(X[:5])).numpy()
    assert feats.shape == (5, 12)
    np.testing.assert_allclose(feats, expected, rtol=1e-6)
    with pytest.raises(UserError, match=r"^pretrained_logreg: params.checkpoint is required"):
        PretrainedFeatures().fit(X[:5])


@pytest.mark.parametrize("name", ["pca_logreg", "hog_logreg"])
def test_feature_baselines_learn_digits(name):
    X, y = digits()
    model = make_feature_baseline(name, {}, 0).fit(X[:600], y[:600])
    assert (model.predict(X[600:900]) == y[600:900]).mean() > 0.8  # chance: 0.1


def test_feature_baselines_are_compare_estimators_and_refuse_unknown_params():
    spec = parse_params({"compare": {"baselines": {"hog": {"estimator": "hog_logreg", "params": {"cell": 4}}}}})
    assert spec.compare.baselines["hog"].estimator == "hog_logreg"
    with pytest.raises(UserError, match=r"^compare.baselines: pca_logreg: unknown params \['cells'\]"):
        make_feature_baseline("pca_logreg", {"cells": 2}, 0)
