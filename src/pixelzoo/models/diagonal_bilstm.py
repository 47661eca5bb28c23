"""Diagonal BiLSTM (van den Oord, Kalchbrenner, Kavukcuoglu 2016, "Pixel Recurrent Neural Networks", §3.2).

Each direction skews the input map (row r shifted right by r, H×W -> H×(W+H-1)) so that one column
of the skewed map is one diagonal of the image, applies a 1×1 mask-B input-to-state conv and runs
an LSTM over the skewed columns with a 2×1 state-to-state conv over the previous column, padded on
top only: skewed cells (r-1, s-1) and (r, s-1) are the pixels above and to the left, never the one
below. The left-to-right direction thus sees the quadrant above-left (and, by channel group, the
current pixel). The right-to-left direction is the same computation on the width-flipped map,
flipped back, which sees the quadrant above-right *including the rest of the current row*; it is
therefore shifted down one row before being added, after which it depends on rows above only (so
its channel groups are irrelevant to causality).

One deviation from the paper's text, needed for the full context it claims: with the 7×7 mask-A
input layer feeding both directions, the last sub-pixel of row i-1 (pixel (i-1, W-1) for gray images;
with RGB only its B value: the B feature group of that pixel sees its R and G) is, in every layer and
at any depth, invisible to pixels (i, j) with j < W-4. Row i-1's features never contain it (it is the
last in its row), row i's features contain it only within the input kernel's reach of column W-1, and
the only leftward path, the right-to-left direction, is moved down a row. So the first layer's right-to-left
direction also reads the image itself through an unmasked 1×1 input-to-state conv: legitimate
because that direction's output is shifted below the row it reads. The test suite checks that every
earlier pixel is in the context of every pixel.
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
    """``2h -> h``: left-to-right map + right-to-left map shifted down one row.

    ``reads_image`` (the first layer): the right-to-left direction also gets the image through an
    unmasked 1×1 conv, which closes the blind spot described in the module docstring.
    """

    def __init__(self, in_channels: int, hidden: int, channels: int, reads_image: bool = False) -> None:
        super().__init__()
        self.hidden, self.bias_channels = hidden, 2 * GATES * hidden
        self.forward_dir = DiagonalLSTM(in_channels, hidden, channels)
        self.backward_dir = DiagonalLSTM(in_channels, hidden, channels)
        self.image_to_state = nn.Conv2d(channels, GATES * hidden, 1, bias=False) if reads_image else None

    def forward(
        self, x: torch.Tensor, bias: torch.Tensor | None = None, image: torch.Tensor | None = None
    ) -> torch.Tensor:
        b_l, b_r = bias.chunk(2, dim=1) if bias is not None else (None, None)
        left = self.forward_dir(x, b_l)
        if self.image_to_state is not None:
            if image is None:
                raise ValueError("this Diagonal BiLSTM layer reads the image: pass image=")
            seen = self.image_to_state(image)
            b_r = seen if b_r is None else b_r + seen
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
    head_hidden: int = 1024,
    input_kernel: int = 7,
    close_blind_spot: bool = True,
    n_classes: int | None = None,
) -> PixelRNN:
    """Diagonal BiLSTM PixelRNN; defaults are the paper's CIFAR-10 size (MNIST: 7 layers, h=16, 32 maps).

    ``close_blind_spot=False`` gives the paper's text literally (one-pixel blind spot, see above).
    """
    return PixelRNN(
        lambda index: DiagonalBiLSTMLayer(
            2 * hidden, hidden, channels, reads_image=close_blind_spot and index == 0
        ),
        channels=channels,
        levels=levels,
        hidden=hidden,
        layers=layers,
        residual=residual,
        skip=skip,
        head_hidden=head_hidden,
        n_classes=n_classes,
        input_kernel=input_kernel,
    )


@register(
    "diagonal_bilstm", tiny={"hidden": 6, "layers": 2, "head_hidden": 12}, forwards=(diagonal_bilstm,)
)
def build(
    *, channels: int, levels: int, height: int, width: int, n_classes: int | None = None, **args
) -> PixelRNN:
    return diagonal_bilstm(channels=channels, levels=levels, n_classes=n_classes, **args)
