"""Row LSTM (van den Oord, Kalchbrenner, Kavukcuoglu 2016, "Pixel Recurrent Neural Networks", §3.1).

An LSTM that runs down the image one row at a time: the input-to-state part is a 1×k mask-B
convolution along the row (left neighbours and, by channel group, the current pixel), the
state-to-state part a 1×k convolution over the previous row's hidden state. Each step processes a
whole row of the whole batch. The context is a triangle above the pixel (it widens by one column
per row on each side), not the whole past: the model has a blind spot far to the upper right.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from pixelzoo.models.pixelrnn import LayerSession, PixelRNN, bias_at, channels_last_map, conv_at
from pixelzoo.models.registry import register
from pixelzoo.nn.scan import GATES, ConvLSTMScan, GateConv, ScanLayout, lstm_cell_into


@functools.lru_cache(maxsize=32)
def row_layout(height: int, width: int, padding: tuple[int, int], device: torch.device) -> ScanLayout:
    """Rows are the steps, every pixel of a row a cell."""
    return ScanLayout([(0, width)] * height, padding, device)


class RowLSTMLayer(nn.Module):
    """``2h -> h``: masked 1×k input-to-state conv, then the row-by-row recurrence."""

    def __init__(self, in_channels: int, hidden: int, channels: int, kernel: int = 3) -> None:
        super().__init__()
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"the Row LSTM kernel must be odd (centred on the pixel), got {kernel}")
        self.hidden, self.bias_channels = hidden, GATES * hidden
        self.input_to_state = GateConv("B", in_channels, hidden, (1, kernel), groups=channels)
        self.scan = ConvLSTMScan(hidden, kernel, (kernel // 2, kernel // 2))

    def forward(
        self, x: torch.Tensor, bias: torch.Tensor | None = None, image: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``image`` is not used: every Row LSTM input reaches the current row."""
        # The mask zeroes the taps right of the pixel: convolve with the left half only (a third fewer
        # FLOPs at k=3) on the input padded on the left.
        conv, half = self.input_to_state, self.input_to_state.kernel_size[1] // 2
        x = F.pad(x, (half, 0)).contiguous(memory_format=torch.channels_last)  # see PixelRNN.forward_scaled
        pre = F.conv2d(x, (conv.weight * conv.mask)[..., : half + 1], conv.bias)
        if bias is not None:
            pre = pre + bias
        n, _, height, width = pre.shape
        cells = pre.permute(2, 3, 0, 1).reshape(height * width, n, -1)  # rows are the steps
        out = self.scan(cells, row_layout(height, width, self.scan.padding, pre.device))
        return channels_last_map(out, height, width)

    def session(
        self, inputs: torch.Tensor, bias: torch.Tensor | None, image_rows: Callable[[int], torch.Tensor]
    ) -> RowLSTMSession:
        return RowLSTMSession(self, inputs, bias)


class RowLSTMSession(LayerSession):
    """Cached Row LSTM state: the previous row's (h, c), padded with the initial state, pixel-major
    (each pixel's B×h block contiguous, as the cell kernel takes it), and the state-to-state term of
    the current row, computed once per row when the previous row is final."""

    def __init__(self, layer: RowLSTMLayer, inputs: torch.Tensor, bias: torch.Tensor | None) -> None:
        self.layer, self.inputs, self.bias = layer, inputs, bias
        n, _, height, width = inputs.shape
        scan = layer.scan
        self.before, after = scan.padding
        self.height = height
        # h[i, before + j] = h(i-1, j): row 0 and the side columns hold the initial state
        self.h = scan.h0.expand(height + 1, width + self.before + after, n, layer.hidden).clone()
        self.c = scan.c0.expand(height + 1, width, n, layer.hidden).clone()
        self.rec = self._state_term(0)

    def _state_term(self, i: int) -> torch.Tensor:
        """The state-to-state convolution over row i-1 for every pixel of row i: W×B×4h."""
        above = self.h[i].permute(1, 2, 0)  # B×h×(W + padding)
        return F.conv1d(above, self.layer.scan.state_conv.weight).permute(2, 0, 1).contiguous()

    def step(self, i: int, j: int) -> torch.Tensor:
        pre = conv_at(self.layer.input_to_state, self.inputs, i, j)[:, :, 0, 0] + bias_at(self.bias, i, j)
        h_out = self.h[i + 1, j + self.before]
        lstm_cell_into(pre + self.rec[j], self.c[i, j], h_out, self.c[i + 1, j])
        return h_out[:, :, None, None]  # a view of the state: valid until the pixel is recomputed

    def row_complete(self, i: int) -> None:
        if i + 1 < self.height:
            self.rec = self._state_term(i + 1)


def row_lstm(
    *,
    channels: int,
    levels: int,
    hidden: int = 128,
    layers: int = 12,
    kernel: int = 3,
    residual: bool = True,
    skip: bool = True,
    head_hidden: int = 1024,
    input_kernel: int = 7,
    n_classes: int | None = None,
) -> PixelRNN:
    """Row LSTM PixelRNN; defaults are the paper's CIFAR-10 size (12 layers, h=128, 1024 output maps)."""
    return PixelRNN(
        lambda index: RowLSTMLayer(2 * hidden, hidden, channels, kernel),
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


@register("row_lstm", tiny={"hidden": 6, "layers": 2, "head_hidden": 12}, forwards=(row_lstm,))
def build_row_lstm(
    *, channels: int, levels: int, height: int, width: int, n_classes: int | None = None, **args
) -> PixelRNN:
    return row_lstm(channels=channels, levels=levels, n_classes=n_classes, **args)
