"""Small PyTorch classifiers built from ``params.model``: :func:`build_model` is the one entry point."""

from dlrig.models.build import Standardize, build_model, count_parameters

__all__ = ["Standardize", "build_model", "count_parameters"]
