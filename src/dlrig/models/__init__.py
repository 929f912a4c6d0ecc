"""Small PyTorch classifiers built from ``params.model``: :func:`build_model` is the one entry point; one
module per family (:mod:`~dlrig.models.mlp`, :mod:`~dlrig.models.cnn`), shared layers in
:mod:`~dlrig.models.layers`."""

from dlrig.models.build import FAMILIES, build_model
from dlrig.models.layers import Standardize, count_parameters, init_weights

__all__ = ["FAMILIES", "Standardize", "build_model", "count_parameters", "init_weights"]
