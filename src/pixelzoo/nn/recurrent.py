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


def lstm_cell(z: torch.Tensor, c_prev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """PixelRNN eq. (3): [o,f,i] = σ, g = tanh; c = f⊙c_prev + i⊙g; h = o⊙tanh(c). ``z`` is B×4h×…."""
    hidden = z.shape[1] // GATES
    sig = torch.sigmoid(z[:, : 3 * hidden])
    o, f, i = sig.chunk(3, dim=1)
    g = torch.tanh(z[:, 3 * hidden :])
    c = f * c_prev + i * g
    return o * torch.tanh(c), c


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

    def initial(self, batch: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Learned initial (h, c), broadcast to ``batch × hidden × length``."""
        shape = (batch, self.hidden, length)
        return self.h0.view(1, -1, 1).expand(shape), self.c0.view(1, -1, 1).expand(shape)

    def forward(self, pre: torch.Tensor, active: torch.Tensor | None = None) -> torch.Tensor:
        """``pre``: B×4h×T×N input-to-state pre-activations -> hidden states B×h×T×N.

        ``active`` (bool T×N): where False the cell is outside the image (the skewed map's left
        padding) and holds the initial state instead of running the cell.
        """
        b, g, steps, n = pre.shape
        if g != GATES * self.hidden:
            raise ValueError(f"expected {GATES * self.hidden} gate channels, got {g}")
        h0, c0 = self.initial(b, n)
        before, after = self.padding
        h, c = h0, c0
        out = []
        for t in range(steps):
            padded = torch.cat([h0[..., :before], h, h0[..., :after]], dim=-1)
            h, c = lstm_cell(pre[:, :, t] + self.state_conv(padded), c)
            if active is not None:
                h, c = torch.where(active[t], h, h0), torch.where(active[t], c, c0)
            out.append(h)
        return torch.stack(out, dim=2)


class RecurrentLayer(nn.Module):
    """Interface of a PixelRNN layer: ``forward(x, bias, image) -> hidden map``.

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

    def forward_scaled(
        self,
        xs: torch.Tensor,
        y: torch.Tensor | None = None,
        layer_bias: Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Float image in [-1, 1] -> logits; ``layer_bias`` adds one gate bias map per layer."""
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
        h = self.input(xs)
        skips = None
        for blk, bias in zip(self.blocks, biases, strict=True):
            h = blk(h, bias, xs)
            if blk.skip is not None:
                s = blk.skip(h)
                skips = s if skips is None else skips + s
        return self.head(skips if self.use_skip else h)
