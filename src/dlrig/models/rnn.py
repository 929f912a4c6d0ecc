"""The recurrent family: each sample read as a sequence by a torch RNN, LSTM or GRU.

How a sample becomes a sequence (``model.sequence``):

* an image ``[C, H, W]``, ``rows``: H time steps of C*W features (row by row, the classic "row MNIST");
  ``pixels``: H*W time steps of C features (pixel by pixel, the long-range "sequential MNIST");
* a table ``[F]``: F time steps of 1 feature, in either mode (column order is the time order);
* ``[T, F]``: T steps of F features (``rows``) or T*F steps of 1 (``pixels``).

The adding problem (``data.source: adding``) is stored as images ``[1, T, 2]`` so that ``rows`` reads
it as T steps of (value, marker).

The sequence's summary (``model.readout``) is the last hidden state (``last``: for a bidirectional net the
forward direction's state after the last step and the backward direction's after the first, both final
states) or the mean of the top layer's outputs over time (``mean``). It then goes through ``model.norm``
and ``model.dropout`` to the shared output layer of :func:`dlrig.models.build_model`.

``model.dropout`` acts twice: between stacked recurrent layers (torch's own ``dropout``; torch applies
none with one layer and warns, so it is passed only when ``layers > 1``) and on the read-out features,
so it regularises a one-layer net as well, as it does after each hidden layer of an mlp.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dlrig.errors import UserError
from dlrig.models.layers import norm_layer
from dlrig.models.mlp import dense_blocks
from dlrig.params import RnnParams

_CELLS: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


def sequence_shape(sample_shape: Sequence[int], mode: str) -> tuple[int, int]:
    """(time steps, features per step) of a sample read in ``mode`` (``rows`` | ``pixels``)."""
    shape = list(sample_shape)
    if len(shape) == 1:
        return shape[0], 1
    if len(shape) == 2:
        return (shape[0], shape[1]) if mode == "rows" else (shape[0] * shape[1], 1)
    if len(shape) == 3:
        channels, height, width = shape
        return (height, channels * width) if mode == "rows" else (height * width, channels)
    raise UserError(f"model.name=rnn reads tables [F] and images [C, H, W] as sequences; this data set has "
                    f"samples of shape {shape}")


def init_recurrent(rnn: nn.RNNBase, scheme: str) -> None:
    """``model.init`` for the recurrent weights (``init_weights`` covers Linear/Conv only): each gate's
    block of every input and hidden matrix on its own (an LSTM stacks 4, a GRU 3), biases to zero;
    ``default`` keeps torch's U(-1/sqrt(H), 1/sqrt(H)). The gain is tanh's (relu's for a relu rnn)."""
    if scheme == "default":
        return
    gain_name = "relu" if rnn.mode == "RNN_RELU" else "tanh"
    gain = nn.init.calculate_gain(gain_name)
    gates = {"LSTM": 4, "GRU": 3}.get(rnn.mode, 1)
    fill = {
        "kaiming_normal": lambda w: nn.init.kaiming_normal_(w, nonlinearity=gain_name),
        "kaiming_uniform": lambda w: nn.init.kaiming_uniform_(w, nonlinearity=gain_name),
        "xavier_normal": lambda w: nn.init.xavier_normal_(w, gain=gain),
        "xavier_uniform": lambda w: nn.init.xavier_uniform_(w, gain=gain),
        "orthogonal": lambda w: nn.init.orthogonal_(w, gain=gain),
        "normal": lambda w: nn.init.normal_(w, 0.0, 1.0),  # as init_weights: no fan-in scaling
    }[scheme]
    with torch.no_grad():
        for name, p in rnn.named_parameters():
            if name.startswith("weight"):
                for block in p.chunk(gates, dim=0):  # views: filling them fills p
                    fill(block)
            else:
                nn.init.zeros_(p)


class Recurrent(nn.Module):
    """``[N, *sample_shape]`` -> ``[N, width]``: reshape to a sequence, run the recurrent net, read out."""

    def __init__(self, cfg: RnnParams, sample_shape: Sequence[int]) -> None:
        super().__init__()
        self.mode, self.readout = cfg.sequence, cfg.readout
        self.steps, features = sequence_shape(sample_shape, cfg.sequence)
        extra = {"nonlinearity": cfg.activation} if cfg.cell == "rnn" else {}
        self.rnn = _CELLS[cfg.cell](
            features, cfg.hidden_size, num_layers=cfg.layers, batch_first=True,
            dropout=cfg.dropout if cfg.layers > 1 else 0.0, bidirectional=cfg.bidirectional, **extra,
        )
        self.width = cfg.hidden_size * (2 if cfg.bidirectional else 1)
        init_recurrent(self.rnn, cfg.init)

    def sequence(self, x: torch.Tensor) -> torch.Tensor:
        """The batch as ``[N, steps, features]`` (see the module docstring)."""
        n = x.shape[0]
        if x.dim() == 4 and self.mode == "rows":  # [N, C, H, W] -> [N, H, C, W]
            x = x.permute(0, 2, 1, 3)
        elif x.dim() == 4:  # pixels: [N, C, H, W] -> [N, H, W, C]
            x = x.permute(0, 2, 3, 1)
        return x.reshape(n, self.steps, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, state = self.rnn(self.sequence(x))
        if self.readout == "mean":
            return out.mean(dim=1)
        h_n = state[0] if isinstance(state, tuple) else state  # an LSTM returns (h_n, c_n)
        directions = 2 if self.rnn.bidirectional else 1
        return h_n[-directions:].transpose(0, 1).reshape(x.shape[0], self.width)  # the top layer's

    def extra_repr(self) -> str:
        return f"sequence={self.mode}, steps={self.steps}, readout={self.readout}"


def body(cfg: RnnParams, sample_shape: Sequence[int]) -> tuple[list[nn.Module], int]:
    """The recurrent net and its read-out, then norm and dropout; returns the layers and the width."""
    recurrent = Recurrent(cfg, sample_shape)
    head, width = dense_blocks(recurrent.width, cfg.hidden, cfg.depth - 1, cfg)  # as the cnn's dense head
    return [recurrent, norm_layer(cfg.norm, recurrent.width, conv=False), nn.Dropout(cfg.dropout), *head], \
        width
