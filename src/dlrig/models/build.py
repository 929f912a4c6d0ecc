"""The model registry: ``model.name`` -> the family module that builds its body.

Every model is ``Standardize -> body -> Linear(n_classes)``. A family module exposes
``body(cfg, sample_shape) -> (layers, feature width)``; its params class lives in :mod:`dlrig.params`
(``MODEL_FAMILIES``). Adding a family = its module here + its params class + its tests.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from dlrig.models import cnn, mlp, rnn, transformer
from dlrig.models.layers import Standardize, init_weights, set_norm_statistics
from dlrig.params import MODEL_FAMILIES, ModelBase

FAMILIES: dict[str, Callable[[ModelBase, Sequence[int]], tuple[list[nn.Module], int]]] = {
    "mlp": mlp.body,
    "cnn": cnn.body,
    "transformer": transformer.body,
    "rnn": rnn.body,
}
assert set(FAMILIES) == set(MODEL_FAMILIES), "every params family needs a builder, and vice versa"


def build_model(cfg: ModelBase, sample_shape: Sequence[int], n_classes: int) -> nn.Sequential:
    """``Standardize -> body -> Linear(n_classes)``; weights initialised per ``cfg.init``.

    Call under a seeded ``torch`` generator state (``dlrig.train`` does) for reproducible weights.
    """
    sample_shape = list(sample_shape)
    body, width = FAMILIES[cfg.name](cfg, sample_shape)
    model = nn.Sequential(Standardize(sample_shape), *body, nn.Linear(width, n_classes))
    init_weights(model, cfg.init, cfg.activation)
    set_norm_statistics(model, cfg.norm_momentum, cfg.norm_eps)  # every family's norm layers alike
    return model
