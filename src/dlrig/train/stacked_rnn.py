"""The recurrent family (:class:`dlrig.models.rnn.Recurrent`) as a composite layer of the stacked trainer
(:mod:`dlrig.train.stacked_func`): every model's torch ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` run as one
stacked function, torch's numbers to float tolerance (gate order LSTM i, f, g, o; GRU r, z, n with
``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``; both biases; zero initial state; ``tanh`` computed as
``2 sigmoid(2x) - 1``, see :func:`_tanh_`).

Laid out for a CPU: per layer and direction, the whole input sequence of every model is projected at once
(:class:`_Projection`: one batched matrix product ``[M, T*W, F] @ [M, F, G*H]``, the biases added once);
then :class:`_Recurrence`, one autograd node, loops over time with one ``bmm`` ``[M, W, H] @ [M, H, G*H]``
per step and in-place gate math into buffers kept from step to step (:func:`_space`: fresh pages cost
more than the arithmetic), and its hand-written backward (backpropagation through time) does the same in
reverse, the hidden weights' gradient one GEMM per model over all steps at the end.

Speed (digits, 6 jobs of ~1150 rows, batch 64, one thread, 2 shared cores; fit() time / stack time per
fit): LSTM, rows (8 steps of 8): 1.8-2.2x at hidden 16, 1.4x at 32, 0.9x at 64 (the default); 16 steps
x 16: 1.2x, 16 x 32: 0.74x, 32 x 16: 0.78x, pixels (64 steps) x 16: 0.6x. GRU 1.5-1.6x at 64 (2 layers
of 32: 1.8x; pixels x 16: 2.1x), plain RNN 1.8x at 64. The matrix products run as fast as fit()'s, near
this CPU's peak; an LSTM's fit() runs oneDNN's fused kernel, whose gate math and time loop cost next to
nothing, while here the gate math is ~15 separate ops and ~40 us of fixed cost a step. So an LSTM of more
than 256 steps x hidden size (:data:`_LSTM_MAX_WORK`) trains with fit(); GRU and RNN, which torch runs
unfused on a CPU, stack at any size.

A model's bits depend on its own job only (tests/train/test_stacked_rnn.py): every matrix product's
operands are aligned per model, its right operand transposed (:mod:`dlrig.train.stacked_ops`: ``buffer``,
``right``), and the element-wise ops run model by model.

Torch's inter-layer dropout (``model.dropout`` when ``layers > 1``) is the stack's dropout at the site
``rnn.between.<layer>``, after each layer but the last (its masks from the model's own generator, as every
dropout of the stack: statistically torch's, not its numbers). Every option of ``Recurrent`` stacks: cells
rnn (tanh / relu), lstm, gru; any number of layers; bidirectional; sequences rows / pixels; read-out last
/ mean; refused (fit()): an LSTM of steps x hidden size > 256, a hidden size of 1.
"""

from __future__ import annotations

import torch

from dlrig.models.rnn import Recurrent
from dlrig.train.stacked_ops import Composite, Dropout, Unsupported, aligned, buffer, right

# an LSTM of more steps x hidden size trains with fit(): oneDNN's fused CPU LSTM is faster (module docstring)
_LSTM_MAX_WORK = 256
_NARROW = 8  # input features below which the input weights' gradient is a sum, not a GEMM (pixels: C)
_CELLS = {"LSTM": ("lstm", 4), "GRU": ("gru", 3), "RNN_TANH": ("tanh", 1), "RNN_RELU": ("relu", 1)}


def _check(module: Recurrent, sample_shape: tuple[int, ...]) -> None:
    rnn = module.rnn
    # a hidden size of 1 would make a one-column GEMM, whose bits may depend on the stack (stacked_ops.right)
    if rnn.mode not in _CELLS or not rnn.bias or rnn.proj_size or not rnn.batch_first or rnn.hidden_size < 2:
        raise Unsupported(f"recurrent net {rnn!r}")
    if rnn.mode == "LSTM" and module.steps * rnn.hidden_size > _LSTM_MAX_WORK:
        raise Unsupported(f"LSTM of {module.steps} steps x hidden size {rnn.hidden_size}: fit()'s fused "
                          f"oneDNN LSTM is faster")


def _dropouts(module: Recurrent) -> dict[str, float]:
    """torch's inter-layer dropout: one site after each layer but the last (none with one layer)."""
    return {f"rnn.between.{layer}": float(module.rnn.dropout) for layer in range(module.rnn.num_layers - 1)}


def _buffer(M: int, *shape: int, like: torch.Tensor, key: tuple | None = None) -> torch.Tensor:
    """:func:`stacked_ops.buffer` (models 64 bytes aligned, at least one float apart: a model's bits its
    own); with ``key``, the workspace's (:func:`_space`)."""
    if key is not None:
        return _space(key, (M, *shape), like, gapped=True)
    return buffer(M, *shape, like=like)


_SPACE: dict[tuple, torch.Tensor] = {}
_SPACE_BYTES = 1 << 30  # the workspace is dropped when it grows past this (another stack's shapes)


def _space(key: tuple, shape: tuple[int, ...], like: torch.Tensor, gapped: bool = False) -> torch.Tensor:
    """A buffer kept from one training step to the next, per ``key`` (a layer and direction, and a role):
    fresh multi-megabyte tensors each step cost more in page faults than their arithmetic (glibc returns
    large freed blocks to the OS). Valid until the same key's next use: the next step's forward (the stack
    drops each step's graph before the next); a second forward before the first's backward makes that
    backward fail (autograd's version check on the saved buffers), never compute from overwritten ones."""
    full = (*key, shape, like.dtype, like.device, gapped)
    t = _SPACE.get(full)
    if t is None:
        if sum(b.untyped_storage().nbytes() for b in _SPACE.values()) > _SPACE_BYTES:
            _SPACE.clear()
        t = _SPACE[full] = _buffer(*shape, like=like) if gapped else like.new_empty(shape)
    return t


def _tanh_(x: torch.Tensor) -> torch.Tensor:
    """``tanh`` in place as ``2 sigmoid(2x) - 1``: torch's CPU ``tanh`` took 60-100 us for 25k floats
    here, its ``sigmoid`` 8 (the same numbers to ~1e-7 absolute)."""
    return x.mul_(2).sigmoid_().mul_(2).sub_(1)




class _Recurrence(torch.autograd.Function):
    """One layer and direction of every model: ``xp [M, T, W, G*H]`` (the input projection with its
    biases, the GRU's ``b_hn`` excepted), the hidden weights ``w_hh [M, G*H, H]`` -> the hidden states
    ``[M, T, W, H]`` (``reverse``: the sequence read from its end, each state at its own time step)."""

    @staticmethod
    def forward(ctx, xp, w_hh, b_hn, cell: str, reverse: bool, slot: str):
        M, T, W, G = xp.shape
        H = w_hh.shape[2]
        w_t = right(w_hh.transpose(1, 2))
        order = range(T - 1, -1, -1) if reverse else range(T)
        out = _buffer(M, T, W, H, like=xp, key=(slot, "out"))
        acts = _buffer(M, T, W, G, like=xp, key=(slot, "acts"))  # the gates after their nonlinearity
        gh = _space((slot, "gh"), (M, W, G), xp)  # h @ W_hh^T, a step's
        extra = None
        if cell == "lstm":
            extra = tuple(_buffer(M, T, W, H, like=xp, key=(slot, k)) for k in ("c", "tanh c"))
        elif cell == "gru":
            extra = (_buffer(M, T, W, H, like=xp, key=(slot, "hn")),)  # W_hn h + b_hn
        h = c = None
        for t in order:
            a, x_t = acts[:, t], xp[:, t]
            if cell == "gru":  # r, z: x + h parts, sigmoid; n: tanh(x_n + r * hn), hn = W_hn h + b_hn
                hn = extra[0][:, t]
                if h is None:
                    a[..., : 2 * H].copy_(x_t[..., : 2 * H])
                    hn.copy_(b_hn.unsqueeze(1).expand(M, W, H))
                else:
                    torch.bmm(h, w_t, out=gh)
                    torch.add(x_t[..., : 2 * H], gh[..., : 2 * H], out=a[..., : 2 * H])
                    torch.add(gh[..., 2 * H :], b_hn.unsqueeze(1), out=hn)
                a[..., : 2 * H].sigmoid_()
                r, z, n = a.split(H, -1)
                _tanh_(torch.addcmul(x_t[..., 2 * H :], r, hn, out=n))
                if h is None:  # h' = n + z (h - n), with h = 0
                    torch.mul(n, z, out=out[:, t]).neg_().add_(n)
                else:
                    torch.sub(h, n, out=out[:, t]).mul_(z).add_(n)
            else:
                if h is None:
                    a.copy_(x_t)
                else:
                    torch.add(x_t, torch.bmm(h, w_t, out=gh), out=a)
                if cell == "lstm":
                    a[..., 2 * H : 3 * H].mul_(2)  # g = tanh(x) = 2 sigmoid(2x) - 1: one sigmoid for all
                    a.sigmoid_()
                    a[..., 2 * H : 3 * H].mul_(2).sub_(1)
                    i, f, g, o = a.split(H, -1)
                    cn, tc = extra[0][:, t], extra[1][:, t]
                    if c is None:
                        torch.mul(i, g, out=cn)
                    else:
                        torch.mul(f, c, out=cn).addcmul_(i, g)
                    torch.mul(cn, 2, out=tc).sigmoid_().mul_(2).sub_(1)  # _tanh_
                    torch.mul(o, tc, out=out[:, t])
                    c = cn
                elif cell == "tanh":
                    _tanh_(out[:, t].copy_(a))
                else:
                    torch.clamp(a, min=0, out=out[:, t])
            h = out[:, t]
        ctx.cell, ctx.reverse, ctx.slot = cell, reverse, slot
        ctx.save_for_backward(w_hh, out, acts, *(extra or ()))
        return out

    @staticmethod
    def backward(ctx, d_out):
        cell, reverse, slot = ctx.cell, ctx.reverse, ctx.slot
        w_hh, out, acts, *extra = ctx.saved_tensors
        M, T, W, G = acts.shape
        H = w_hh.shape[2]
        order = list(range(T - 1, -1, -1) if reverse else range(T))
        d_gates = _buffer(M, T, W, G, like=acts, key=(slot, "d_gates"))  # the pre-activations' gradient
        w_right = right(w_hh)
        if cell == "lstm":
            _lstm_backward(d_out, acts, *extra, order, w_right, d_gates, slot)
            return _Recurrence._weights(d_gates, d_gates, out, reverse, cell, slot)
        # the GRU's W_hh sees [dr, dz, d(W_hn h)], not the x side's [dr, dz, dn]
        d_hh = _buffer(M, T, W, G, like=acts, key=(slot, "d_hh")) if cell == "gru" else d_gates
        dh = None
        for k in range(T - 1, -1, -1):
            t = order[k]
            first = k == 0
            dh = d_out[:, t] if dh is None else dh + d_out[:, t]
            a, d = acts[:, t], d_gates[:, t]
            if cell == "gru":
                r, z, n = a.split(H, -1)
                dr, dz, dn = d.split(H, -1)
                hn = extra[0][:, t]
                h_prev = None if first else out[:, order[k - 1]]
                dan = dh * (1 - z) * (1 - n * n)  # through n's tanh
                dn.copy_(dan)
                torch.mul(dan, hn, out=dr).mul_(r * (1 - r))
                if first:
                    torch.mul(dh, n, out=dz).neg_()
                else:
                    torch.mul(dh, h_prev - n, out=dz)
                dz.mul_(z * (1 - z))
                d_hh[:, t, :, : 2 * H].copy_(d[..., : 2 * H])
                torch.mul(dan, r, out=d_hh[:, t, :, 2 * H :])
                direct = dh * z
            else:
                h_t = out[:, t]
                if cell == "tanh":
                    torch.mul(dh, 1 - h_t * h_t, out=d)
                else:
                    torch.mul(dh, (h_t > 0).to(dh.dtype), out=d)
            if first:
                break
            if cell == "gru":
                dh = torch.baddbmm(direct, d_hh[:, t], w_right)
            else:
                dh = torch.bmm(d, w_right)
        return _Recurrence._weights(d_gates, d_hh, out, reverse, cell, slot)

    @staticmethod
    def _weights(d_gates, d_hh, out, reverse: bool, cell: str, slot: str):
        """backward's gradients from the pre-activations' ``d_gates`` (x side) and ``d_hh`` (W_hh side)."""
        M, T, W, G = d_gates.shape
        H = out.shape[3]
        # the hidden weights' gradient: one GEMM per model over every step but the first read (h_prev = 0)
        h_prev = _buffer(M, H, T - 1, W, like=out, key=(slot, "h_prev"))
        h_prev.copy_((out[:, 1:] if reverse else out[:, :-1]).permute(0, 3, 1, 2))
        d_later = d_hh[:, :-1] if reverse else d_hh[:, 1:]
        d_x = d_gates.reshape(M, T * W, G)
        d_w = torch.bmm(d_later.reshape(M, (T - 1) * W, G).transpose(1, 2),
                        h_prev.view(M, H, (T - 1) * W).transpose(1, 2)) if T > 1 else d_hh.new_zeros(M, G, H)
        d_b = d_hh[..., 2 * H :].reshape(M, T * W, H).sum(1) if cell == "gru" else None
        return d_x.view(M, T, W, G), d_w, d_b, None, None, None


def _lstm_backward(d_out, acts, cs, tcs, order, w_right, d_gates, slot: str) -> None:
    """Backpropagation through time of an LSTM into ``d_gates`` (the pre-activations' gradient). The
    factors each step multiplies by are computed for all steps at once first, so a step is five
    element-wise ops and one GEMM (was twenty ops: their fixed cost dominated)."""
    M, T, W, G = acts.shape
    H = G // 4
    i, f, g, o = acts.split(H, -1)
    c_prev = _buffer(M, T, W, H, like=cs, key=(slot, "c_prev")).zero_()  # the step before's c, reading order
    steps = order
    if steps[0] == 0:
        c_prev[:, 1:] = cs[:, :-1]
    else:
        c_prev[:, :-1] = cs[:, 1:]
    p = _buffer(M, T, W, G, like=acts, key=(slot, "p"))  # d(pre-activation) / dc for i, f, g; / dh for o
    p_i, p_f, p_g, p_o = p.split(H, -1)
    sig, p_sig = acts[..., : 2 * H], p[..., : 2 * H]
    torch.sub(sig, torch.mul(sig, sig, out=p_sig), out=p_sig)  # i (1 - i), f (1 - f)
    p_i.mul_(g)
    p_f.mul_(c_prev)
    torch.sub(i, torch.mul(g, g, out=p_g).mul_(i), out=p_g)  # i (1 - g^2)
    torch.sub(o, torch.mul(o, o, out=p_o), out=p_o).mul_(tcs)  # o (1 - o) tanh(c)
    q = _buffer(M, T, W, H, like=acts, key=(slot, "q"))  # dc / dh: o (1 - tanh(c)^2)
    torch.sub(o, torch.mul(tcs, tcs, out=q).mul_(o), out=q)
    dh = dc = None
    d_h = _space((slot, "dh"), (M, W, H), acts)
    for k in range(T - 1, -1, -1):
        t = steps[k]
        dh = d_out[:, t] if dh is None else dh.add_(d_out[:, t])
        dc = torch.mul(dh, q[:, t]) if dc is None else dc.addcmul_(dh, q[:, t])
        d = d_gates[:, t]
        ifg = d[..., : 3 * H].view(M, W, 3, H)
        torch.mul(dc.unsqueeze(-2), p[:, t, :, : 3 * H].view(M, W, 3, H), out=ifg)
        torch.mul(dh, p_o[:, t], out=d[..., 3 * H :])
        if k == 0:
            break
        dc.mul_(f[:, t])
        dh = torch.bmm(d, w_right, out=d_h)


class _Projection(torch.autograd.Function):
    """Every model's input projection of a whole sequence, ``inp [M, T*W, F] @ w_ih^T + bias``: one GEMM
    per model forward and backward, in ``stacked_ops.right``'s layouts; the bias gradient a sum over the
    model's own rows."""

    @staticmethod
    def forward(ctx, inp, w_ih, bias, slot: str):
        inp = _buffer(*inp.shape, like=inp, key=(slot, "inp")).copy_(inp)
        ctx.save_for_backward(inp, w_ih)
        ctx.slot = slot
        M, N, G = inp.shape[0], inp.shape[1], w_ih.shape[1]
        xp = torch.bmm(inp, right(w_ih.transpose(1, 2)), out=_space((slot, "xp"), (M, N, G), inp))
        return xp.add_(bias.unsqueeze(1))

    @staticmethod
    def backward(ctx, g):
        inp, w_ih = ctx.saved_tensors
        d_inp = None
        if ctx.needs_input_grad[0]:
            d_inp = torch.bmm(g, right(w_ih), out=_space((ctx.slot, "d_inp"), inp.shape, inp))
        F, G = inp.shape[2], g.shape[2]
        if F < _NARROW:  # a GEMM of F < 8 rows took other kernels in other stacks: sums
            d_w = (g.unsqueeze(-1) * inp.unsqueeze(-2)).sum(1)
        elif G >= 12:  # [M, F, T*W] @ [M, T*W, G] (g: _Recurrence's aligned buffer): 7x faster than below
            d_w = torch.bmm(aligned(inp.transpose(1, 2)), g).transpose(1, 2)
        else:  # a right operand of under 12 columns must be transposed (stacked_ops.right)
            d_w = torch.bmm(g.transpose(1, 2), right(inp))
        return d_inp, d_w, g.sum(1), None


def _forward(module: Recurrent, prefix: str, params: dict[str, torch.Tensor], buffers, x: torch.Tensor,
             dropout: Dropout | None) -> torch.Tensor:
    """Every model's read-out ``[M, W, width]`` for its batch ``x [M, W, *sample]``."""
    M, W = x.shape[:2]
    rnn = module.rnn
    cell, gates = _CELLS[rnn.mode]
    T, H = module.steps, rnn.hidden_size
    seq = module.sequence(x.reshape(M * W, *x.shape[2:]))  # [M*W, T, F]
    inp = seq.reshape(M, W, T, -1).transpose(1, 2)  # time-major within a model: [M, T, W, F]
    directions = ("", "_reverse") if rnn.bidirectional else ("",)
    for layer in range(rnn.num_layers):
        outs = []
        for suffix in directions:
            name = f"{prefix}rnn.{{}}_l{layer}{suffix}"
            w_ih, w_hh = params[name.format("weight_ih")], params[name.format("weight_hh")]
            b_ih, b_hh = params[name.format("bias_ih")], params[name.format("bias_hh")]
            if cell == "gru":  # b_hn stays inside: n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
                bias = torch.cat([b_ih[:, : 2 * H] + b_hh[:, : 2 * H], b_ih[:, 2 * H :]], 1)
                b_hn = b_hh[:, 2 * H :]
            else:
                bias, b_hn = b_ih + b_hh, None
            slot = f"{prefix}{layer}{suffix}"
            xp = _Projection.apply(inp.reshape(M, T * W, -1), w_ih, bias, slot).view(M, T, W, gates * H)
            outs.append(_Recurrence.apply(xp, w_hh, b_hn, cell, suffix == "_reverse", slot))
        inp = outs[0] if len(outs) == 1 else torch.cat(outs, -1)
        if dropout is not None and layer < rnn.num_layers - 1:
            inp = dropout(f"{prefix}rnn.between.{layer}", inp)
    if module.readout == "mean":
        return aligned(inp.mean(1))  # aligned for the dense layer after it (see _buffer)
    last = [outs[0][:, T - 1]] + ([outs[1][:, 0]] if rnn.bidirectional else [])  # both final states
    return aligned(last[0] if len(last) == 1 else torch.cat(last, -1))


COMPOSITES: dict[type, Composite] = {Recurrent: Composite(check=_check, forward=_forward, dropouts=_dropouts)}

__all__ = ["COMPOSITES"]
