"""Diagonal BiLSTM (van den Oord, Kalchbrenner, Kavukcuoglu 2016, "Pixel Recurrent Neural Networks", §3.2).

Each direction skews the input map (row r shifted right by r, H×W -> H×(W+H-1)) so that one column
of the skewed map is one diagonal of the image, applies a 1×1 mask-B input-to-state conv and runs
an LSTM over the skewed columns with a 2×1 state-to-state conv over the previous column, padded on
top only: skewed cells (r-1, s-1) and (r, s-1) are the pixels above and to the left, never the one
below. The left-to-right direction thus sees the quadrant above-left (and, by channel group, the
current pixel). The right-to-left direction is the same computation on the width-flipped map,
flipped back, which sees the quadrant above-right *including the rest of the current row*; it is
therefore shifted down one row before being added, after which it depends on rows above only (so
its channel groups are irrelevant to causality). Together: the whole past, no blind spot.
"""

from __future__ import annotations

import torch
from torch import nn

from pixelzoo.models.registry import register
from pixelzoo.nn.recurrent import GATES, ConvLSTMScan, GateConv, PixelRNN
from pixelzoo.nn.skew import skew, unskew


class DiagonalLSTM(nn.Module):
    """One direction (left to right): 1×1 masked input-to-state, LSTM over skewed columns."""

    def __init__(self, in_channels: int, hidden: int, channels: int) -> None:
        super().__init__()
        self.input_to_state = GateConv("B", in_channels, hidden, 1, groups=channels)
        self.scan = ConvLSTMScan(hidden, 2, (1, 0))

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        height, width = x.shape[-2:]
        pre = self.input_to_state(x)
        if bias is not None:
            pre = pre + bias
        sk = skew(pre).transpose(2, 3)  # B×4h×S×H: skewed columns are the steps
        rows = torch.arange(height, device=x.device)
        cols = torch.arange(sk.shape[2], device=x.device)
        active = cols[:, None] >= rows[None, :]  # left of its row's start a cell keeps the initial state
        return unskew(self.scan(sk, active).transpose(2, 3), width)

    def initial_h(self) -> torch.Tensor:
        return self.scan.h0


class DiagonalBiLSTMLayer(nn.Module):
    """``2h -> h``: left-to-right map + right-to-left map shifted down one row."""

    def __init__(self, in_channels: int, hidden: int, channels: int) -> None:
        super().__init__()
        self.hidden, self.bias_channels = hidden, 2 * GATES * hidden
        self.forward_dir = DiagonalLSTM(in_channels, hidden, channels)
        self.backward_dir = DiagonalLSTM(in_channels, hidden, channels)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        b_l, b_r = bias.chunk(2, dim=1) if bias is not None else (None, None)
        left = self.forward_dir(x, b_l)
        flip = None if b_r is None else b_r.flip(-1)
        right = self.backward_dir(x.flip(-1), flip).flip(-1)  # flip the WIDTH axis, and flip back
        # Down shift: row i receives row i-1; row 0 receives the learned initial state.
        top = self.backward_dir.initial_h().view(1, -1, 1, 1).expand(x.shape[0], -1, 1, x.shape[-1])
        return left + torch.cat([top, right[:, :, :-1]], dim=2)


def diagonal_bilstm(
    *,
    channels: int,
    levels: int,
    hidden: int = 128,
    layers: int = 12,
    residual: bool = True,
    skip: bool = True,
    output_hidden: int = 1024,
    input_kernel: int = 7,
    n_classes: int | None = None,
) -> PixelRNN:
    """Diagonal BiLSTM PixelRNN; defaults are the paper's CIFAR-10 size (MNIST: 7 layers, h=16, 32 maps)."""
    return PixelRNN(
        lambda: DiagonalBiLSTMLayer(2 * hidden, hidden, channels),
        channels=channels,
        levels=levels,
        hidden=hidden,
        layers=layers,
        residual=residual,
        skip=skip,
        output_hidden=output_hidden,
        n_classes=n_classes,
        input_kernel=input_kernel,
    )


@register("diagonal_bilstm", tiny={"hidden": 6, "layers": 2, "output_hidden": 12})
def build(
    *, channels: int, levels: int, height: int, width: int, n_classes: int | None = None, **args
) -> PixelRNN:
    return diagonal_bilstm(channels=channels, levels=levels, n_classes=n_classes, **args)
