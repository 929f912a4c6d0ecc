"""Sequence to sequence: the encoder-decoder transformer (``model.decoder_layers > 0``) on a generated task.

The classification pipeline has one label per sample, so decoder layers have nothing to do there (params
validation refuses them). This module is their own small world: a generator of digit sequences to
``reverse`` or ``sort``, an encoder-decoder built from :class:`~dlrig.params.TransformerParams`, trained
with teacher forcing (the decoder reads the true previous tokens) and tested by greedy decoding (it reads
its own), scored by *sequence accuracy*: a sequence counts only when every token is right.

It is built from torch's ``TransformerEncoderLayer``/``TransformerDecoderLayer`` (what ``nn.Transformer``
stacks), one layer at a time so ``attention_dropout`` reaches every attention block (see
:mod:`dlrig.models.transformer`). Keys read: d_model, heads, layers, decoder_layers, ff_size, dropout,
attention_dropout, norm_first, positional, activation. Tokens are always the digit codes (an embedding),
and the output is one prediction per position, so tokens, patch_size, vocab_size, pooling and norm do
not apply here.
"""

from __future__ import annotations

import time
from typing import Literal

import numpy as np
import torch
from torch import nn

from dlrig.errors import UserError
from dlrig.models.layers import ACTIVATIONS
from dlrig.models.transformer import Positional, encoder_layer
from dlrig.params import TransformerParams

Task = Literal["reverse", "sort"]


def make_task(kind: Task, n: int, length: int, vocab: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random digit sequences [n, length] (codes 0..vocab-1) and their targets (reversed or sorted)."""
    if kind not in ("reverse", "sort"):
        raise UserError(f"seq2seq task: {kind!r} is not a task (reverse | sort)")
    src = np.random.default_rng(seed).integers(0, vocab, size=(n, length))
    tgt = src[:, ::-1] if kind == "reverse" else np.sort(src, axis=1)
    return src.astype(np.int64), np.ascontiguousarray(tgt, dtype=np.int64)


def decoder_layer(cfg: TransformerParams) -> nn.TransformerDecoderLayer:
    layer = nn.TransformerDecoderLayer(
        cfg.d_model, cfg.heads, cfg.ff_size, cfg.dropout, activation=ACTIVATIONS[cfg.activation](),
        batch_first=True, norm_first=cfg.norm_first,
    )
    for name in ("self_attn", "multihead_attn"):  # own dropout on the attention weights, as in the encoder
        setattr(layer, name, nn.MultiheadAttention(cfg.d_model, cfg.heads, dropout=cfg.attention_dropout,
                                                   batch_first=True))
    return layer


class Seq2Seq(nn.Module):
    """Source codes [N, L] -> logits [N, L, vocab] for the target, given the target shifted right."""

    def __init__(self, cfg: TransformerParams, vocab: int, length: int) -> None:
        super().__init__()
        if cfg.decoder_layers < 1:
            raise UserError("model.decoder_layers must be >= 1 for a sequence-to-sequence model (got 0)")
        d = cfg.d_model
        self.bos = vocab  # the start token the decoder reads first: one code past the digits
        self.src_embed, self.tgt_embed = nn.Embedding(vocab, d), nn.Embedding(vocab + 1, d)
        self.src_pos = Positional(cfg.positional, length, d)
        self.tgt_pos = Positional(cfg.positional, length, d)
        self.encoder = nn.ModuleList(encoder_layer(cfg) for _ in range(cfg.layers))
        self.decoder = nn.ModuleList(decoder_layer(cfg) for _ in range(cfg.decoder_layers))
        # Pre-norm stacks end with a LayerNorm (post-norm layers already end with one).
        self.enc_norm = nn.LayerNorm(d) if cfg.norm_first else nn.Identity()
        self.dec_norm = nn.LayerNorm(d) if cfg.norm_first else nn.Identity()
        self.dropout = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(d, vocab)

    def encode(self, src: torch.Tensor) -> torch.Tensor:
        h = self.dropout(self.src_pos(self.src_embed(src)))
        for layer in self.encoder:
            h = layer(h)
        return self.enc_norm(h)

    def decode(self, tgt_in: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        causal = nn.Transformer.generate_square_subsequent_mask(tgt_in.shape[1], device=tgt_in.device)
        h = self.dropout(self.tgt_pos(self.tgt_embed(tgt_in)))
        for layer in self.decoder:
            h = layer(h, memory, tgt_mask=causal, tgt_is_causal=True)
        return self.out(self.dec_norm(h))

    def forward(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: the decoder reads [BOS, tgt[:-1]] and predicts every target token at once."""
        tgt_in = torch.cat([torch.full_like(tgt[:, :1], self.bos), tgt[:, :-1]], dim=1)
        return self.decode(tgt_in, self.encode(src))

    @torch.no_grad()
    def generate(self, src: torch.Tensor) -> torch.Tensor:
        """Greedy decoding: each step appends the most likely next token to what the model wrote so far."""
        memory = self.encode(src)
        out = torch.full_like(src[:, :1], self.bos)
        for _ in range(src.shape[1]):
            out = torch.cat([out, self.decode(out, memory)[:, -1].argmax(-1, keepdim=True)], dim=1)
        return out[:, 1:]


def train_seq2seq(
    cfg: TransformerParams,
    *,
    task: Task = "reverse",
    length: int = 5,
    vocab: int = 10,
    n_train: int = 4000,
    n_test: int = 500,
    steps: int = 400,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
) -> dict:
    """Train on ``n_train`` sequences (Adam, teacher forcing), test greedy decoding on unseen ones.

    Test sequences that also occur in the training set are dropped, so the score is on new sequences.
    Returns JSON-able numbers: ``sequence_accuracy`` (every token right), ``token_accuracy`` and
    ``chance`` (the sequence accuracy of guessing each token: vocab ** -length).
    """
    start = time.perf_counter()
    torch.manual_seed(seed)
    src, tgt = make_task(task, n_train, length, vocab, seed)
    test_src, test_tgt = make_task(task, n_test, length, vocab, seed + 1)
    seen = {row.tobytes() for row in src}
    unseen = np.array([row.tobytes() not in seen for row in test_src], dtype=bool)
    test_src, test_tgt = test_src[unseen], test_tgt[unseen]

    model = Seq2Seq(cfg, vocab, length)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    X, Y = torch.from_numpy(src), torch.from_numpy(tgt)
    rng = torch.Generator().manual_seed(seed)
    model.train()
    losses = []
    for _ in range(steps):
        idx = torch.randint(0, n_train, (batch_size,), generator=rng)
        logits = model(X[idx], Y[idx])
        loss = loss_fn(logits.reshape(-1, vocab), Y[idx].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))

    model.eval()
    pred = model.generate(torch.from_numpy(test_src)).numpy()
    right = pred == test_tgt
    return {
        "task": task, "length": length, "vocab": vocab, "steps": steps, "n_test": int(len(test_src)),
        "sequence_accuracy": float(right.all(axis=1).mean()),
        "token_accuracy": float(right.mean()),
        "chance": float(vocab ** -length),
        "final_loss": float(np.mean(losses[-20:])),
        "seconds": time.perf_counter() - start,
    }
