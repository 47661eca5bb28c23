"""The recurrence shared by the PixelRNN models (van den Oord, Kalchbrenner, Kavukcuoglu 2016, §3).

- :class:`GateConv`: the masked input-to-state convolution. It produces the four LSTM gates
  (o, f, i, g, in that order), ``hidden`` maps each; the mask is built for ``in -> hidden`` and
  repeated per gate, so every gate carries the R,G,B channel groups of the hidden state. A plain
  ``MaskedConv2d(in, 4*hidden, groups=C)`` would instead make the whole o gate "R", the f gate
  "R/G", ... and the B maps of the hidden state would be computed from gates that saw B — or, the
  other way round, R maps from gates that saw G and B: the current sub-pixel would leak.
- :class:`ConvLSTMScan`: the recurrence. Gate pre-activations ``B×4h×T×N`` are consumed one step
  ``t`` at a time (a row for the Row LSTM, a skewed column for the Diagonal BiLSTM), the whole
  ``N`` positions and the batch at once; the state-to-state 1-D convolution over the previous
  step's hidden state is unmasked because that step lies entirely in the past. Outside the image
  (before the first step, and in the state convolution's padding) the state is the learned initial
  state ``(h0, c0)``.

The model around it (input layer, residual and skip blocks, output head) is :mod:`pixelzoo.models.pixelrnn`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from pixelzoo.nn import native
from pixelzoo.nn.masks import MaskedConv2d, causal_mask

GATES = 4  # o, f, i, g


class GateConv(MaskedConv2d):
    """Masked conv ``in -> n_gates*hidden`` whose gate blocks each carry the hidden state's channel groups."""

    def __init__(
        self,
        mask_type: str,
        in_channels: int,
        hidden: int,
        kernel_size: int | tuple[int, int],
        groups: int,
        n_gates: int = GATES,
    ) -> None:
        super().__init__(mask_type, in_channels, n_gates * hidden, kernel_size, groups=groups)
        self.mask = causal_mask(mask_type, in_channels, hidden, self.kernel_size, groups).repeat(
            n_gates, 1, 1, 1
        )
        with torch.no_grad():  # forget-gate bias 1 (Jozefowicz et al. 2015): long memory at init
            self.bias[hidden : 2 * hidden].fill_(1.0)


def gates(z: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """B×(groups·4h)×… pre-activations -> B×groups×4×h×… gate values: σ for o, f, i and tanh for g."""
    zg = z.unflatten(1, (groups, GATES, z.shape[1] // (GATES * groups)))
    return torch.cat([torch.sigmoid(zg[:, :, :3]), torch.tanh(zg[:, :, 3:])], dim=2)


def lstm_cell(z: torch.Tensor, c_prev: torch.Tensor, groups: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """PixelRNN eq. (3): [o,f,i] = σ, g = tanh; c = f⊙c_prev + i⊙g; h = o⊙tanh(c).

    ``z`` is B×(groups·4h)×…, gates [o f i g] per group (independent LSTMs run side by side, e.g.
    the two Diagonal BiLSTM directions); ``c_prev`` and both results are B×(groups·h)×….
    """
    o, f, i, g = gates(z, groups).unbind(2)
    c = torch.addcmul(f * c_prev.unflatten(1, (groups, o.shape[2])), i, g)
    return (o * torch.tanh(c)).flatten(1, 2), c.flatten(1, 2)


def lstm_cell_into(z: torch.Tensor, c_prev: torch.Tensor, h_out: torch.Tensor, c_out: torch.Tensor) -> None:
    """:func:`lstm_cell` of B×4h ``z`` and B×h ``c_prev``, written into ``h_out`` and ``c_out`` (B×h).

    The cached samplers' cell: one call of the C kernel (``lstm_forward`` without taps) where it
    applies, instead of ~10 small torch ops per pixel and layer.
    """
    batch, hidden = c_out.shape
    if z.shape != (batch, GATES * hidden) or not c_prev.shape == h_out.shape == c_out.shape:
        raise ValueError(f"cell shapes do not fit: z {tuple(z.shape)}, c_prev {tuple(c_prev.shape)}, "
                         f"h_out {tuple(h_out.shape)}, c_out {tuple(c_out.shape)}")  # fmt: skip
    lib = native.kernels() if native.supports(z, c_prev, h_out, c_out) else None
    if lib is None:
        h, c = lstm_cell(z, c_prev)
        h_out.copy_(h), c_out.copy_(c)
        return
    gates, tc = torch.empty_like(z), torch.empty_like(c_out)
    lib.fn("lstm_forward", z.dtype)(z.shape[0], 1, c_out.shape[1], 0, 0, z.data_ptr(), None,
        c_prev.data_ptr(), gates.data_ptr(), c_out.data_ptr(), tc.data_ptr(), h_out.data_ptr())  # fmt: skip


Spans = Sequence[tuple[int, int]]


def _tap_weights(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """State-conv weight (G·4h × h × k) -> k × gh × G·4h: ``state @ taps[tap]`` is tap ``tap``'s
    share of every gate, block-diagonal over the groups."""
    g4h, hidden, k = weight.shape
    m = weight.new_zeros(k, groups, hidden, groups, g4h // groups)
    w = weight.reshape(groups, g4h // groups, hidden, k)
    for gi in range(groups):
        m[:, gi, :, gi] = w[gi].permute(2, 1, 0)
    return m.reshape(k, groups * hidden, g4h)


def _tap_weight_grad(dm: torch.Tensor, groups: int) -> torch.Tensor:
    """Inverse of :func:`_tap_weights` for gradients: k × gh × G·4h -> G·4h × h × k (diagonal blocks)."""
    k, gh, g4h = dm.shape
    blocks = dm.reshape(k, groups, gh // groups, groups, g4h // groups)
    diag = torch.stack([blocks[:, gi, :, gi, :] for gi in range(groups)])  # groups × k × h × 4h
    return diag.permute(0, 3, 2, 1).reshape(g4h, gh // groups, k)


class ScanLayout:
    """Where the cells of a scan live: step ``t`` runs positions ``spans[t] = (lo, hi)``, stored one
    after another ("packed": P = Σ (hi - lo) cells, step-major, each cell a B×channels block).

    The state buffers are step × ``width`` rows: the ``n`` positions plus the initial-state padding
    (``before`` rows first). ``read[tap]`` (P) is, per cell, the row of the flattened state buffer its
    state-conv tap ``tap`` reads in the previous step; ``write`` the row its own state goes to;
    ``h_init``/``c_init`` mark the rows of the state buffers that hold the initial state (padding,
    positions no span reaches in that step, and the whole of step 0).
    """

    def __init__(self, spans: Spans, padding: tuple[int, int], device: torch.device | str = "cpu") -> None:
        self.spans = [(int(lo), int(hi)) for lo, hi in spans]
        if not self.spans or any(not 0 <= lo < hi for lo, hi in self.spans):
            raise ValueError(f"need one non-empty span (lo, hi) with 0 <= lo < hi per step, got {self.spans}")
        self.before, after = padding
        self.n = max(hi for _, hi in self.spans)
        self.width = self.n + self.before + after
        steps = len(self.spans)
        t = torch.cat([torch.full((hi - lo,), i) for i, (lo, hi) in enumerate(self.spans)])
        pos = torch.cat([torch.arange(lo, hi) for lo, hi in self.spans])
        self.cells = int(t.numel())
        self.read = [(t * self.width + pos + tap).to(device) for tap in range(self.before + after + 1)]
        self.write = ((t + 1) * self.width + pos + self.before).to(device)
        self.h_init = torch.ones((steps + 1) * self.width, dtype=torch.bool, device=device)
        self.h_init[self.write] = False
        self.c_init = torch.ones((steps + 1) * self.n, dtype=torch.bool, device=device)
        self.c_init[((t + 1) * self.n + pos).to(device)] = False


def _forward_torch(pre, taps, hs, cs, gs, tcs, layout) -> None:  # noqa: ANN001
    """The forward step loop on torch ops (the fallback of the C kernels, same maths)."""
    g4h, gh, before = pre.shape[2], hs.shape[3], layout.before
    q = 0
    for t, (lo, hi) in enumerate(layout.spans):
        p, q = q, q + hi - lo
        z = torch.addmm(pre[p:q].view(-1, g4h), hs[t, lo:hi].view(-1, gh), taps[0])
        for tap in range(1, taps.shape[0]):
            z.addmm_(hs[t, lo + tap : hi + tap].view(-1, gh), taps[tap])
        g_t = gs[p:q]
        z = z.view_as(g_t)
        torch.sigmoid(z[..., :3, :], out=g_t[..., :3, :])
        torch.tanh(z[..., 3, :], out=g_t[..., 3, :])
        o, f, i, g = g_t.unbind(3)
        c = torch.mul(f, cs[t, lo:hi].view_as(o), out=cs[t + 1, lo:hi].view_as(o)).addcmul_(i, g)
        tc = torch.tanh(c, out=tcs[p:q].view_as(o))
        torch.mul(o, tc, out=hs[t + 1, lo + before : hi + before].view_as(o))


def _backward_torch(dout, taps_t, cs, gs, tcs, dhs, dcs, dz_all, layout) -> None:  # noqa: ANN001
    """The backward step loop on torch ops (the fallback of the C kernels, same maths)."""
    b, gh, before = dout.shape[1], dout.shape[2], layout.before
    g4h, k = taps_t.shape[0], taps_t.shape[1] // gh
    p = layout.cells
    for t in reversed(range(len(layout.spans))):
        lo, hi = layout.spans[t]
        p, q = p - (hi - lo), p
        sig = gs[p:q, :, :, :3]
        o, f, i, g = gs[p:q].unbind(3)
        tc = tcs[p:q].view_as(o)
        dh = (dout[p:q] + dhs[t + 1, lo + before : hi + before]).view_as(o)
        dc = torch.addcmul(dcs[t + 1, lo:hi].view_as(o), dh * o, 1 - tc * tc)
        # σ' = σ(1-σ) for o, f, i at once; tanh' = 1 - g² for g
        d_ofi = torch.stack([dh * tc, dc * cs[t, lo:hi].view_as(o), dc * g], dim=3) * (sig - sig * sig)
        dz = torch.cat([d_ofi, (dc * i * (1 - g * g)).unsqueeze(3)], dim=3).view(-1, g4h)
        dz_all[p:q] = dz.view(hi - lo, b, g4h)
        dcs[t, lo:hi] = (dc * f).view(hi - lo, b, gh)
        r = (dz @ taps_t).view(hi - lo, b, k, gh)
        for tap in range(k):
            dhs[t, lo + tap : hi + tap] += r[:, :, tap]


def _forward_native(lib, pre, taps, hs, cs, gs, tcs, layout, groups) -> None:  # noqa: ANN001
    """The forward step loop with one matrix product and one C call per step (``lstm_forward``).

    Raw pointers into the contiguous buffers replace the ~20 tensor views a step would take:
    at PixelRNN sizes their dispatch costs more than the arithmetic.
    """
    _, b, g4h = pre.shape
    k, gh, e = taps.shape[0], taps.shape[1], pre.element_size()
    taps_cat = taps.permute(1, 0, 2).reshape(gh, k * g4h)  # a state row -> every tap's share
    y = pre.new_empty((layout.n + k - 1) * b, k * g4h)
    states = hs.view(-1, gh)
    cell, n, width, before = lib.fn("lstm_forward", pre.dtype), layout.n, layout.width, layout.before
    pre_p, y_p, hs_p, cs_p = pre.data_ptr(), y.data_ptr(), hs.data_ptr(), cs.data_ptr()
    gs_p, tcs_p = gs.data_ptr(), tcs.data_ptr()
    p = 0
    for t, (lo, hi) in enumerate(layout.spans):
        rows, first = (hi - lo) * b, (t * width + lo) * b
        torch.mm(states[first : first + rows + (k - 1) * b], taps_cat, out=y[: rows + (k - 1) * b])
        cell(rows, groups, gh // groups, k, b, pre_p + p * g4h * e, y_p,
             cs_p + (t * n + lo) * b * gh * e, gs_p + p * g4h * e, cs_p + ((t + 1) * n + lo) * b * gh * e,
             tcs_p + p * gh * e, hs_p + ((t + 1) * width + lo + before) * b * gh * e)  # fmt: skip
        p += rows


def _backward_native(lib, dout, taps_t, cs, gs, tcs, dhs, dcs, dz_all, layout, groups) -> None:  # noqa: ANN001
    """The backward step loop: a C call for the cells, one matrix product and a C call for the taps."""
    b, gh, e = dout.shape[1], dout.shape[2], dout.element_size()
    g4h, k = taps_t.shape[0], taps_t.shape[1] // gh
    r = dout.new_empty(layout.n * b, k * gh)
    dz_rows = dz_all.view(-1, g4h)
    cell, add_taps = lib.fn("lstm_backward", dout.dtype), lib.fn("add_taps", dout.dtype)
    n, width, before = layout.n, layout.width, layout.before
    gs_p, tcs_p, cs_p, dout_p = gs.data_ptr(), tcs.data_ptr(), cs.data_ptr(), dout.data_ptr()
    dhs_p, dcs_p, dz_p, r_p = dhs.data_ptr(), dcs.data_ptr(), dz_all.data_ptr(), r.data_ptr()
    p = layout.cells * b
    for t in reversed(range(len(layout.spans))):
        lo, hi = layout.spans[t]
        rows = (hi - lo) * b
        p -= rows
        cell(rows, groups, gh // groups, gs_p + p * g4h * e, tcs_p + p * gh * e,
             cs_p + (t * n + lo) * b * gh * e, dout_p + p * gh * e,
             dhs_p + ((t + 1) * width + lo + before) * b * gh * e, dcs_p + ((t + 1) * n + lo) * b * gh * e,
             dz_p + p * g4h * e, dcs_p + (t * n + lo) * b * gh * e)  # fmt: skip
        torch.mm(dz_rows[p : p + rows], taps_t, out=r[:rows])
        add_taps(rows, gh, k, b, r_p, dhs_p + (t * width + lo) * b * gh * e)


class _Scan(torch.autograd.Function):
    """The step loop of :func:`lstm_scan` with a hand-written backward (backpropagation through time).

    Autograd over the loop records ~20 small nodes per step; here the forward runs without a graph
    and keeps only the states, gate values and tanh(c), and the backward walks the steps in reverse.
    The cells are packed (see :class:`ScanLayout`): a step's cells are one contiguous block of
    B×channels rows, so the state-conv taps are matrix products added straight into the gate
    pre-activations, and positions outside a step's span (half the Diagonal BiLSTM's skewed map)
    cost nothing. The state buffers hold the initial state wherever no cell writes, which is what
    the taps must read there. On CPU each step's cell math is one call of the fused C kernels
    (:mod:`pixelzoo.nn.native`) where they build; elsewhere the same maths runs on torch ops.
    """

    @staticmethod
    def forward(ctx, pre, weight, h0, c0, layout, groups):  # noqa: ANN001, ANN205
        _, b, _ = pre.shape
        gh = h0.numel()
        taps = _tap_weights(weight, groups)
        hs = h0.expand(len(layout.spans) + 1, layout.width, b, gh).contiguous()
        cs = c0.expand(len(layout.spans) + 1, layout.n, b, gh).contiguous()
        gs = pre.new_empty(layout.cells, b, groups, GATES, gh // groups)  # σ(o, f, i), tanh(g)
        tcs = pre.new_empty(layout.cells, b, gh)  # tanh(c)
        lib = native.kernels() if native.supports(pre, taps, hs, cs) else None  # h0/c0 may differ in dtype
        if lib is None:
            _forward_torch(pre, taps, hs, cs, gs, tcs, layout)
        else:
            _forward_native(lib, pre, taps, hs, cs, gs, tcs, layout, groups)
        ctx.save_for_backward(taps, hs, cs, gs, tcs)
        ctx.layout, ctx.groups, ctx.weight_dtype = layout, groups, weight.dtype
        return hs.view(-1, b, gh).index_select(0, layout.write)  # P×B×gh

    @staticmethod
    @once_differentiable  # the C kernels build no graph: a double backward must fail, not be wrong
    def backward(ctx, dout):  # noqa: ANN001, ANN205
        taps, hs, cs, gs, tcs = ctx.saved_tensors
        layout, groups, dout = ctx.layout, ctx.groups, dout.contiguous()
        cells, b, gh = tcs.shape
        k, g4h = taps.shape[0], taps.shape[2]
        # dhs/dcs: gradients reaching the state buffers (filled by the step that reads them); the
        # cells' rows go back through the cells, the rest are copies of the initial state. Buffers
        # come from dout.new_* so that the causality audit's vmap (batched grads) batches them too.
        dhs, dcs = dout.new_zeros(hs.shape), dout.new_zeros(cs.shape)
        dz_all = dout.new_empty(cells, b, g4h)
        taps_t = taps.permute(2, 0, 1).reshape(g4h, k * gh)  # a step's dz -> every tap's share of dh
        lib = native.kernels() if native.supports(dout, taps, cs, gs, tcs) else None
        if lib is None:
            _backward_torch(dout, taps_t, cs, gs, tcs, dhs, dcs, dz_all, layout)
        else:
            _backward_native(lib, dout, taps_t, cs, gs, tcs, dhs, dcs, dz_all, layout, groups)
        dh0 = dhs.view(-1, b, gh)[layout.h_init].sum((0, 1))
        dc0 = dcs.view(-1, b, gh)[layout.c_init].sum((0, 1))
        states, dz_rows = hs.view(-1, b, gh), dz_all.view(-1, g4h)
        dm = torch.stack(
            [states.index_select(0, layout.read[tap]).view(-1, gh).t() @ dz_rows for tap in range(k)]
        )
        dw = _tap_weight_grad(dm, groups).to(ctx.weight_dtype)
        return dz_all, dw, dh0, dc0, None, None


def lstm_scan(
    pre: torch.Tensor,
    weight: torch.Tensor,
    h0: torch.Tensor,
    c0: torch.Tensor,
    layout: ScanLayout,
    groups: int = 1,
) -> torch.Tensor:
    """LSTM over packed cells (see :class:`ScanLayout`): gate pre-activations P×B×(groups·4h) ->
    hidden states P×B×(groups·h), cell for cell.

    Step ``t`` runs positions ``layout.spans[t]``; ``weight`` (groups·4h × h × k) is the
    state-to-state 1-D convolution along the positions over the previous step's hidden state, with
    ``layout``'s padding ``(before, after)`` of the initial state ``h0`` around it. Positions a step
    does not run hold the initial state ``(h0, c0)`` (groups·h each), as does the state before the
    first step. ``groups`` independent LSTMs run side by side (channel blocks).

    Speed: the step loop runs in :class:`_Scan` with its own backward: under autograd, indexing the
    step axis (``pre[:, :, t]``) makes autograd build a full-size zero gradient per step (quadratic
    in the steps) and ~20 small nodes per step.
    """
    if pre.dim() != 3 or pre.shape[0] != layout.cells or pre.shape[2] != weight.shape[0]:
        raise ValueError(
            f"expected packed pre-activations {layout.cells}×B×{weight.shape[0]}, got {tuple(pre.shape)}"
        )
    if weight.shape[-1] != layout.width - layout.n + 1:
        raise ValueError(f"a state kernel of {weight.shape[-1]} does not match the layout's padding")
    # Under bf16 autocast the hand-written scan runs in fp32, outside autocast: its backward runs
    # without autocast and would mix dtypes (tests/test_precision.py).
    if torch.is_autocast_enabled(pre.device.type):
        with torch.autocast(pre.device.type, enabled=False):
            pre, weight, h0, c0 = pre.float(), weight.float(), h0.float(), c0.float()
            return _Scan.apply(pre.contiguous(), weight, h0, c0, layout, groups)
    return _Scan.apply(pre.contiguous(), weight, h0, c0, layout, groups)


class ConvLSTMScan(nn.Module):
    """The LSTM parameters of one PixelRNN layer: state-to-state 1-D conv along the positions of a
    step, and the learned initial state (see :func:`lstm_scan`).

    ``padding=(before, after)`` positions of the initial state are placed around the previous
    step's hidden state before the state convolution (kernel ``before + after + 1`` keeps the
    length; the Row LSTM uses (1, 1) with kernel 3, the Diagonal BiLSTM (1, 0) with kernel 2: the
    cell above and the cell itself in the previous skewed column, never the cell below).
    """

    def __init__(self, hidden: int, kernel_size: int, padding: tuple[int, int]) -> None:
        super().__init__()
        if sum(padding) != kernel_size - 1:
            raise ValueError(
                f"padding {padding} does not keep the length for a state kernel of {kernel_size}"
            )
        self.hidden, self.padding = hidden, padding
        self.state_conv = nn.Conv1d(hidden, GATES * hidden, kernel_size, bias=False)  # bias lives in GateConv
        self.h0 = nn.Parameter(torch.zeros(hidden))
        self.c0 = nn.Parameter(torch.zeros(hidden))

    def forward(self, pre: torch.Tensor, layout: ScanLayout) -> torch.Tensor:
        """``pre``: packed P×B×4h gate pre-activations -> hidden states P×B×h (see :func:`lstm_scan`)."""
        if pre.shape[-1] != GATES * self.hidden:
            raise ValueError(f"expected {GATES * self.hidden} gate channels, got {pre.shape[-1]}")
        return lstm_scan(pre, self.state_conv.weight, self.h0, self.c0, layout)
