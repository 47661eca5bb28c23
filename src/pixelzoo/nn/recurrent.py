"""Pieces shared by the PixelRNN models (van den Oord, Kalchbrenner, Kavukcuoglu 2016, §3).

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
- :class:`PixelRNN`: mask-A 7×7 input layer, a stack of recurrent layers each wrapped with the
  paper's residual (1×1 mask-B conv ``h -> 2h`` added to the layer input) and learnable skip
  (1×1 mask-B conv of every layer output, summed) connections, each switchable (paper Table 2),
  and the two-layer ReLU + 1×1 output head.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pixelzoo.nn.conditioning import ClassBias
from pixelzoo.nn.heads import OutputHead, input_conv
from pixelzoo.nn.masks import MaskedConv2d, causal_mask, scale_input

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


def lstm_cell(
    z: torch.Tensor, c_prev: torch.Tensor, groups: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """PixelRNN eq. (3): [o,f,i] = σ, g = tanh; c = f⊙c_prev + i⊙g; h = o⊙tanh(c).

    ``z`` is B×(groups·4h)×…, gates [o f i g] per group (independent LSTMs run side by side, e.g.
    the two Diagonal BiLSTM directions); ``c_prev`` and both results are B×(groups·h)×….
    """
    o, f, i, g = gates(z, groups).unbind(2)
    c = torch.addcmul(f * c_prev.unflatten(1, (groups, o.shape[2])), i, g)
    return (o * torch.tanh(c)).flatten(1, 2), c.flatten(1, 2)


def _shift(y: torch.Tensor, d: int) -> torch.Tensor:
    """``out[:, m] = y[:, m + d]`` along dim 1 of a B×N×C tensor, zero where m + d is outside."""
    if d > 0:
        return F.pad(y[:, d:], (0, 0, 0, d))
    return F.pad(y[:, :d], (0, 0, -d, 0)) if d < 0 else y


def _tap_matrix(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """State-conv weight (G·4h × h × k) -> gh × (k·G·4h): column block ``tap`` maps the state at
    offset ``tap - before`` to every gate, block-diagonal over the groups (h @ M = all taps at once)."""
    g4h, hidden, k = weight.shape
    m = weight.new_zeros(groups, hidden, k, groups, g4h // groups)
    w = weight.reshape(groups, g4h // groups, hidden, k)
    for gi in range(groups):
        m[gi, :, :, gi] = w[gi].permute(1, 2, 0)
    return m.reshape(groups * hidden, k * g4h)


def _tap_weight_grad(dm: torch.Tensor, groups: int) -> torch.Tensor:
    """Inverse of :func:`_tap_matrix` for gradients: k × gh × G·4h -> G·4h × h × k (diagonal blocks)."""
    k, gh, g4h = dm.shape
    blocks = dm.reshape(k, groups, gh // groups, groups, g4h // groups)
    diag = torch.stack([blocks[:, gi, :, gi, :] for gi in range(groups)])  # groups × k × h × 4h
    return diag.permute(0, 3, 2, 1).reshape(g4h, gh // groups, k)


class _Scan(torch.autograd.Function):
    """The step loop of :func:`lstm_scan` with a hand-written backward (backpropagation through time).

    Autograd over the loop records ~20 small nodes per step; here the forward runs without a graph
    and keeps only the states and gate values, and the backward walks the steps in reverse with a
    dozen elementwise ops and one matrix product per step. States are kept channels-last
    (B×N×channels) so the state convolution over all taps is one matrix product (tiny 1-D
    convolutions cost more in layout conversions than in arithmetic); the weight gradient is one
    product per tap over all steps at the end. ``pre`` already holds the initial-state padding's
    share of the state convolution, so the taps see zeros outside (see :func:`lstm_scan`).
    """

    @staticmethod
    def forward(ctx, pre, weight, h0, c0, before, groups, active):  # noqa: ANN001, ANN205
        b, g4h, steps, n = pre.shape
        gh, k = h0.numel(), weight.shape[-1]
        m = _tap_matrix(weight, groups)
        pre_steps = pre.permute(2, 0, 3, 1).contiguous()  # T×B×N×G4h: each step's slice is contiguous
        hs = pre.new_empty(steps + 1, b, n, gh)  # hs[t]: hidden state entering step t
        cs = pre.new_empty(steps + 1, b, n, gh)
        gs = pre.new_empty(steps, b, n, groups, GATES, gh // groups)  # σ(o, f, i), tanh(g) per step
        hs[0], cs[0] = h0, c0
        for t in range(steps):
            y = (hs[t].view(b * n, gh) @ m).view(b, n, k, g4h)
            z = pre_steps[t] + y[:, :, before]
            for tap in range(k):
                if tap != before:
                    z += _shift(y[:, :, tap], tap - before)
            z = z.view(b, n, groups, GATES, -1)
            torch.sigmoid(z[..., :3, :], out=gs[t, ..., :3, :])
            torch.tanh(z[..., 3, :], out=gs[t, ..., 3, :])
            o, f, i, g = gs[t].unbind(3)
            c = torch.addcmul(f * cs[t].view_as(o), i, g)
            h = (o * torch.tanh(c)).view(b, n, gh)
            c = c.view(b, n, gh)
            if active is not None:
                a = active[t].view(1, n, 1)
                h, c = torch.where(a, h, h0), torch.where(a, c, c0)
            hs[t + 1], cs[t + 1] = h, c
        ctx.save_for_backward(m, hs, cs, gs, active)
        ctx.before, ctx.groups, ctx.weight_dtype = before, groups, weight.dtype
        return hs[1:].permute(1, 3, 0, 2)  # B×gh×T×N

    @staticmethod
    def backward(ctx, dout):  # noqa: ANN001, ANN205
        m, hs, cs, gs, active = ctx.saved_tensors
        before, groups = ctx.before, ctx.groups
        steps, b, n, gh = hs[1:].shape
        k = m.shape[1] // (GATES * gh)
        g4h = m.shape[1] // k
        mt = m.reshape(gh, k, g4h).permute(2, 1, 0).reshape(g4h, k * gh)
        dout = dout.permute(2, 0, 3, 1).contiguous()  # T×B×N×gh
        # out-of-place throughout: the causality audit runs this backward under vmap (batched grads)
        dzs: list[torch.Tensor] = []
        dh_rec, dc = torch.zeros_like(dout[0]), torch.zeros_like(dout[0])
        dh0 = dc0 = dout.new_zeros(gh)
        for t in reversed(range(steps)):
            dh = dout[t] + dh_rec
            if active is not None:  # inactive cells are copies of the initial state
                a = active[t].view(1, n, 1)
                dh0 = dh0 + dh.masked_fill(a, 0).sum((0, 1))
                dc0 = dc0 + dc.masked_fill(a, 0).sum((0, 1))
                dh, dc = dh.masked_fill(~a, 0), dc.masked_fill(~a, 0)
            o, f, i, g = gs[t].unbind(3)
            tc = torch.tanh(cs[t + 1].reshape(o.shape))
            dh, dc = dh.reshape(o.shape), dc.reshape(o.shape)
            dc = dc + dh * o * (1 - tc * tc)
            dz = torch.stack(
                [dh * tc * o * (1 - o), dc * cs[t].reshape(o.shape) * f * (1 - f), dc * g * i * (1 - i),
                 dc * i * (1 - g * g)],
                dim=3,
            ).reshape(b, n, g4h)
            dzs.append(dz)
            dc = (dc * f).reshape(b, n, gh)
            r = (dz.reshape(b * n, g4h) @ mt).reshape(b, n, k, gh)
            dh_rec = sum(_shift(r[:, :, tap], before - tap) for tap in range(k))
        dh0 = dh0 + dh_rec.sum((0, 1))
        dc0 = dc0 + dc.sum((0, 1))
        dz_all = torch.stack(dzs[::-1])  # T×B×N×G4h
        states = hs[:-1].reshape(steps * b, n, gh)
        dz_rows = dz_all.reshape(-1, g4h)
        dm = torch.stack(
            [_shift(states, tap - before).reshape(-1, gh).transpose(0, 1) @ dz_rows for tap in range(k)]
        )
        dw = _tap_weight_grad(dm, groups).to(ctx.weight_dtype)
        return dz_all.permute(1, 3, 0, 2), dw, dh0, dc0, None, None, None


def lstm_scan(
    pre: torch.Tensor,
    weight: torch.Tensor,
    h0: torch.Tensor,
    c0: torch.Tensor,
    padding: tuple[int, int],
    active: torch.Tensor | None = None,
    groups: int = 1,
) -> torch.Tensor:
    """LSTM over the steps ``t`` of ``pre`` (B×(groups·4h)×T×N) -> hidden states B×(groups·h)×T×N.

    ``weight`` (groups·4h × h × k) is the state-to-state 1-D convolution along ``N`` over the
    previous step's hidden state, with ``padding=(before, after)`` cells of the initial state
    ``h0`` around it; ``h0``/``c0`` (groups·h) are also the state before the first step. ``active``
    (bool T×N): where False a cell holds the initial state instead of running the cell.

    Speed: the step axis is never indexed under autograd (``pre[:, :, t]`` per step makes autograd
    build a full-size zero gradient per step: quadratic in T); the loop runs in :class:`_Scan` with
    its own backward. The initial-state padding is constant, so its share of the state convolution
    is added to ``pre`` once (under autograd) and each step convolves the zero-padded state.
    """
    before, after = padding
    n = pre.shape[-1]
    h0_map = h0.view(1, -1, 1).expand(1, -1, n)
    edge = torch.cat([h0_map[..., :before], torch.zeros_like(h0_map), h0_map[..., :after]], dim=-1)
    pre = pre + F.conv1d(edge, weight, groups=groups)[:, :, None, :]
    if active is not None:
        active = active.to(pre.device)
        if bool(active.all()):
            active = None
    # Under bf16 autocast the hand-written scan runs in fp32, outside autocast: its backward runs
    # without autocast and would mix dtypes (tests/test_precision.py).
    if torch.is_autocast_enabled(pre.device.type):
        with torch.autocast(pre.device.type, enabled=False):
            return _Scan.apply(pre.float(), weight.float(), h0.float(), c0.float(), before, groups, active)
    return _Scan.apply(pre, weight, h0, c0, before, groups, active)


class ConvLSTMScan(nn.Module):
    """LSTM over steps ``t`` of a ``B×4h×T×N`` pre-activation map; 1-D state conv along ``N``.

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

    def forward(self, pre: torch.Tensor, active: torch.Tensor | None = None) -> torch.Tensor:
        """``pre``: B×4h×T×N gate pre-activations -> hidden states B×h×T×N (see :func:`lstm_scan`)."""
        if pre.shape[1] != GATES * self.hidden:
            raise ValueError(f"expected {GATES * self.hidden} gate channels, got {pre.shape[1]}")
        return lstm_scan(pre, self.state_conv.weight, self.h0, self.c0, self.padding, active)


class RecurrentLayer(nn.Module):
    """Interface of a PixelRNN layer: ``forward(x, bias, image) -> hidden map`` and
    ``session(inputs, bias, image_rows) -> LayerSession`` for cached sampling.

    ``x`` is B×in×H×W, ``bias`` (optional) is added to the gate pre-activations and has
    ``bias_channels`` maps, ``image`` is the network's [-1, 1] input (a layer may read it where its
    output cannot reach the current row, see the Diagonal BiLSTM); the result is B×hidden×H×W with
    the R,G,B channel groups intact.
    """

    hidden: int
    bias_channels: int


class Block(nn.Module):
    """One PixelRNN layer with the paper's residual and skip wiring (§3.3, Fig. 5)."""

    def __init__(self, layer: RecurrentLayer, width: int, channels: int, residual: bool, skip: bool) -> None:
        super().__init__()
        self.layer, self.residual = layer, residual
        self.up = MaskedConv2d("B", layer.hidden, width, 1, groups=channels)  # h -> 2h
        self.skip = MaskedConv2d("B", width, width, 1, groups=channels) if skip else None

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None, image: torch.Tensor) -> torch.Tensor:
        out = self.up(self.layer(x, bias, image))
        return out + x if self.residual else out


def check_image(x: torch.Tensor, channels: int, levels: int) -> None:
    """Clear errors for the wrong kind of input (levels B×C×H×W).

    Float levels are accepted unchecked: the causality audit differentiates through them.
    """
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(f"expected images of shape B×{channels}×H×W, got {tuple(x.shape)}")
    if not x.dtype.is_floating_point and x.numel() and (int(x.min()) < 0 or int(x.max()) >= levels):
        raise ValueError(f"pixel levels must lie in [0, {levels}), got [{int(x.min())}, {int(x.max())}]")


class PixelRNN(nn.Module):
    """Input conv (7×7 mask A) -> ``layers`` recurrent blocks on 2h maps -> output head (K logits).

    ``make_layer(index)`` builds recurrent layer ``index`` (``2h -> h``). ``forward(x, y)`` takes
    integer levels; ``forward_scaled(xs, y, layer_bias)`` takes the [-1, 1] image and optional
    per-layer biases (``bias_channels[l]`` maps each, as used by the multi-scale model).
    """

    def __init__(
        self,
        make_layer: Callable[[int], RecurrentLayer],
        *,
        channels: int,
        levels: int,
        hidden: int,
        layers: int,
        residual: bool,
        skip: bool,
        head_hidden: int,
        n_classes: int | None,
        input_kernel: int = 7,
    ) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError(f"layers must be >= 1, got {layers}")
        if hidden < channels:
            raise ValueError(
                f"hidden={hidden} cannot be split into {channels} colour groups; use hidden >= channels"
            )
        self.channels, self.levels, self.n_classes = channels, levels, n_classes
        width = 2 * hidden
        self.input = input_conv(channels, width, input_kernel)
        self.blocks = nn.ModuleList(
            Block(make_layer(i), width, channels, residual, skip) for i in range(layers)
        )
        self.use_skip = skip
        self.bias_channels = [blk.layer.bias_channels for blk in self.blocks]
        self.class_bias = (
            nn.ModuleList(ClassBias(n_classes, bc) for bc in self.bias_channels)
            if n_classes is not None
            else None
        )
        self.head = OutputHead(width, head_hidden, channels, levels)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Integer levels B×C×H×W -> logits B×K×C×H×W."""
        check_image(x, self.channels, self.levels)
        return self.forward_scaled(scale_input(x, self.levels).to(self.input.weight.dtype), y)

    def layer_biases(
        self, y: torch.Tensor | None, layer_bias: Sequence[torch.Tensor] | None = None
    ) -> list[torch.Tensor | None]:
        """Per-layer gate biases: ``layer_bias`` (e.g. multi-scale conditioning maps) plus the class bias."""
        biases: list[torch.Tensor | None] = (
            list(layer_bias) if layer_bias is not None else [None] * len(self.blocks)
        )
        if len(biases) != len(self.blocks):
            raise ValueError(f"got {len(biases)} layer biases for {len(self.blocks)} layers")
        if self.class_bias is not None:
            if y is None:
                raise ValueError("this model is class-conditional (n_classes set): pass y")
            cls = [cb(y) for cb in self.class_bias]
            biases = [c if b is None else b + c for b, c in zip(biases, cls, strict=True)]
        elif y is not None:
            raise ValueError("y given but the model was built without n_classes")
        return biases

    def forward_scaled(
        self,
        xs: torch.Tensor,
        y: torch.Tensor | None = None,
        layer_bias: Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Float image in [-1, 1] -> logits; ``layer_bias`` adds one gate bias map per layer."""
        biases = self.layer_biases(y, layer_bias)
        h = self.input(xs)
        skips = None
        for blk, bias in zip(self.blocks, biases, strict=True):
            h = blk(h, bias, xs)
            if blk.skip is not None:
                s = blk.skip(h)
                skips = s if skips is None else skips + s
        return self.head(skips if self.use_skip else h)

    def sampling_session(
        self, x: torch.Tensor, y: torch.Tensor | None = None, layer_bias: Sequence[torch.Tensor] | None = None
    ) -> PixelRNNSession:
        """Cached sampler over ``x`` (filled in place by the sampler), see :class:`PixelRNNSession`."""
        return PixelRNNSession(self, x, y, layer_bias)


# ----------------------------------------------------------------------------- cached sampling
def conv_at(
    conv: nn.Conv2d,
    src: torch.Tensor,
    i: int,
    j: int,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """The "same"-padded (masked) convolution ``conv`` of ``src`` at the one position (i, j): B×out×1×1.

    Reads only the kernel window (zero padding outside ``src``); ``transform`` maps the window
    before padding (the integer image to its [-1, 1] view). Masked taps multiply whatever ``src``
    holds there (later sub-pixels: arbitrary values) by zero.
    """
    (kh, kw), (ph, pw) = conv.kernel_size, conv.padding
    height, width = src.shape[-2:]
    r0, c0 = i - ph, j - pw
    r1, c1 = r0 + kh, c0 + kw
    window = src[:, :, max(r0, 0) : min(r1, height), max(c0, 0) : min(c1, width)]
    if transform is not None:
        window = transform(window)
    window = F.pad(window, (max(0, -c0), max(0, c1 - width), max(0, -r0), max(0, r1 - height)))
    mask = getattr(conv, "mask", None)
    return F.conv2d(window, conv.weight if mask is None else conv.weight * mask, conv.bias)


def bias_at(bias: torch.Tensor | None, i: int, j: int | slice) -> torch.Tensor | float:
    """A per-layer gate bias (B×G×1×1 class bias or B×G×H×W map) at row i, column(s) j: B×G(×cols)."""
    if bias is None:
        return 0.0
    return bias[:, :, 0, 0] if bias.shape[-2:] == (1, 1) else bias[:, :, i, j]


class LayerSession:
    """A recurrent layer's cached state while sampling (made by ``layer.session(inputs, bias, image_rows)``).

    ``inputs`` is the layer's input map (B×in×H×W), written by :class:`PixelRNNSession` pixel by
    pixel; ``step(i, j)`` returns the layer's hidden output at (i, j) (B×h×1×1) from the cached
    state of earlier pixels and stores the pixel's own state; ``row_complete(i)`` runs once every
    pixel of row ``i`` (all sub-pixels) is final, before the first pixel of row i+1.
    """

    def step(self, i: int, j: int) -> torch.Tensor:
        raise NotImplementedError

    def row_complete(self, i: int) -> None:
        """Nothing by default (a layer whose state needs whole rows overrides it)."""


class PixelRNNSession:
    """Cached sampling for a :class:`PixelRNN` (protocol: ``logits(c, i, j) -> B×K``, calls in raster
    order with R, G, B within a pixel, possibly skipping known sub-pixels).

    Each call computes one pixel through every layer from cached state: the input conv's window of
    the image, each layer's step, the 1×1 up/skip convs and the head. A pixel's features and states
    read its own sub-pixels only through channels < C-1 (channel groups; the first layer is mask A),
    so the pixel is final — committed — at the call for its last channel; a pixel whose last channel
    is skipped (or skipped whole) is recomputed when a later call comes, from the final ``x``.
    """

    def __init__(
        self,
        model: PixelRNN,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        layer_bias: Sequence[torch.Tensor] | None = None,
    ) -> None:
        check_image(x, model.channels, model.levels)
        self.model, self.x = model, x
        self.dtype = model.input.weight.dtype
        n, _, height, width = x.shape
        self.width = width
        biases = model.layer_biases(y, layer_bias)
        self.inputs = [
            x.new_zeros(n, blk.up.out_channels, height, width, dtype=self.dtype) for blk in model.blocks
        ]
        self.layers: list[LayerSession] = [
            blk.layer.session(inp, bias, self.image_rows)
            for blk, inp, bias in zip(model.blocks, self.inputs, biases, strict=True)
        ]
        self.done = 0  # pixels (raster) whose state is final
        self.rows_done = 0  # rows whose row_complete has run

    def scaled(self, levels: torch.Tensor) -> torch.Tensor:
        return scale_input(levels, self.model.levels).to(self.dtype)

    def image_rows(self, i: int) -> torch.Tensor:
        """The network's view of image row ``i``: B×C×1×W in [-1, 1]."""
        return self.scaled(self.x[:, :, i : i + 1])

    def logits(self, c: int, i: int, j: int) -> torch.Tensor:
        pixel = i * self.width + j
        if pixel < self.done:
            raise ValueError(
                f"sub-pixel ({c}, {i}, {j}) comes after a later pixel: calls must follow the order"
            )
        while self.done < pixel:  # skipped (known) pixels: their final values are in x now
            self._pixel(*divmod(self.done, self.width))
            self.done += 1
        out = self._pixel(i, j, head=True)
        if c == self.model.channels - 1:
            self.done = pixel + 1
        return out[:, :, c, 0, 0]

    def _pixel(self, i: int, j: int, head: bool = False) -> torch.Tensor | None:
        while self.rows_done < i:
            for layer in self.layers:
                layer.row_complete(self.rows_done)
            self.rows_done += 1
        model = self.model
        h = conv_at(model.input, self.x, i, j, self.scaled)
        skips = None
        for blk, inp, layer in zip(model.blocks, self.inputs, self.layers, strict=True):
            inp[:, :, i, j] = h[:, :, 0, 0]
            out = blk.up(layer.step(i, j))
            h = out + h if blk.residual else out
            if blk.skip is not None:
                s = blk.skip(h)
                skips = s if skips is None else skips + s
        return model.head(skips if model.use_skip else h) if head else None
