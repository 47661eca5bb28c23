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

import functools
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pixelzoo.models.pixelrnn import LayerSession, PixelRNN, bias_at, conv_at, state_conv_at
from pixelzoo.models.registry import register
from pixelzoo.nn.scan import GATES, ConvLSTMScan, GateConv, ScanLayout, lstm_cell, lstm_scan


class DiagonalLSTM(nn.Module):
    """One direction's parameters: 1×1 masked input-to-state conv and the LSTM over skewed columns."""

    def __init__(self, in_channels: int, hidden: int, channels: int) -> None:
        super().__init__()
        self.input_to_state = GateConv("B", in_channels, hidden, 1, groups=channels)
        self.scan = ConvLSTMScan(hidden, 2, (1, 0))


@functools.lru_cache(maxsize=32)
def diagonal_layout(
    height: int, width: int, device: torch.device
) -> tuple[ScanLayout, torch.Tensor, torch.Tensor]:
    """The skewed columns as scan steps: step t holds pixels (r, t - r), r = max(0, t-W+1)..min(t, H-1)
    (the skewed map's other cells are padding: the scan keeps the initial state there).

    Returns the layout and the two permutations between raster order and the packed cells.
    """
    spans = [(max(0, t - width + 1), min(t + 1, height)) for t in range(height + width - 1)]
    rows = torch.cat([torch.arange(lo, hi) for lo, hi in spans])
    cols = torch.cat([t - torch.arange(lo, hi) for t, (lo, hi) in enumerate(spans)])
    to_cells = (rows * width + cols).to(device)  # packed cell -> raster pixel
    return ScanLayout(spans, (1, 0), device), to_cells, torch.argsort(to_cells)


@functools.lru_cache(maxsize=32)
def bidirectional_gathers(
    height: int, width: int, batch: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Row permutations between both directions' image-coordinate maps and the packed two-group cells.

    Rows are 4h (or h) channel blocks. ``into`` (and its inverse) gathers the pre-activations
    B×H×W×2×4h (image coordinates, [left | right]) into the cells P×B×2×4h, the right-to-left
    direction's width flip included; ``out_of`` (and its inverse) gathers the scan's P×B×2×h back into
    B×H×W×2×h. One gather replaces the flip, the concatenation and the cell ``index_select`` (each a
    pass over the whole map), and its gradient is the inverse gather (no zero-filled scatter).
    """
    _, to_cells, to_raster = diagonal_layout(height, width, device)
    flip = to_cells - to_cells % width + (width - 1 - to_cells % width)  # the pixel mirrored in its row
    b, d = torch.arange(batch, device=device), torch.arange(2, device=device)
    pixels = torch.stack([to_cells, flip], dim=1)  # per cell, the image pixel of each direction
    into = ((b[None, :, None] * height * width + pixels[:, None, :]) * 2 + d).flatten()
    cells = torch.stack([to_raster, to_raster[flip[to_raster]]], dim=1)  # per pixel, each direction's cell
    out_of = ((cells[None, :, :] * batch + b[:, None, None]) * 2 + d).flatten()
    return into, torch.argsort(into), out_of, torch.argsort(out_of)


class _PermuteRows(torch.autograd.Function):
    """``x.index_select(0, index)`` for a permutation ``index``; the gradient is the inverse gather."""

    @staticmethod
    def forward(ctx, x, index, inverse):  # noqa: ANN001, ANN205
        ctx.inverse = inverse
        return x.index_select(0, index)

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        return grad.index_select(0, ctx.inverse), None, None


def diagonal_scan(pre: torch.Tensor, dirs: Sequence[DiagonalLSTM]) -> torch.Tensor:
    """Pre-activations B×H×W×2×4h of both directions in image coordinates -> hidden states
    B×H×W×2×h, one two-group scan over the skewed columns (the right-to-left direction on the
    width-flipped map, flipped back)."""
    batch, height, width, _, g4 = pre.shape
    layout, _, _ = diagonal_layout(height, width, pre.device)
    into, into_inv, out_of, out_of_inv = bidirectional_gathers(height, width, batch, pre.device)
    weight = torch.cat([d.scan.state_conv.weight for d in dirs])
    h0, c0 = torch.cat([d.scan.h0 for d in dirs]), torch.cat([d.scan.c0 for d in dirs])
    cells = _PermuteRows.apply(pre.reshape(-1, g4), into, into_inv).view(layout.cells, batch, 2 * g4)
    out = lstm_scan(cells, weight, h0, c0, layout, groups=2)
    return _PermuteRows.apply(out.reshape(-1, g4 // GATES), out_of, out_of_inv).view(
        batch, height, width, 2, -1
    )


class DiagonalBiLSTMLayer(nn.Module):
    """``2h -> h``: left-to-right map + right-to-left map shifted down one row.

    The right-to-left direction is the left-to-right computation on the width-flipped map; the two
    run as one two-group scan (the 1×1 input-to-state conv commutes with the flip, so both
    directions' pre-activations come from one conv of the unflipped input). The layer works
    channels-last (B×H×W×channels), where CPU 1×1 convs are fastest; one row permutation gathers
    each skewed column's cells as whole B×channels blocks (:func:`bidirectional_gathers`).

    ``reads_image`` (the first layer): the right-to-left direction also gets the image through an
    unmasked 1×1 conv, which closes the blind spot described in the module docstring.
    """

    def __init__(self, in_channels: int, hidden: int, channels: int, reads_image: bool = False) -> None:
        super().__init__()
        self.hidden, self.bias_channels = hidden, 2 * GATES * hidden
        self.forward_dir = DiagonalLSTM(in_channels, hidden, channels)
        self.backward_dir = DiagonalLSTM(in_channels, hidden, channels)
        self.image_to_state = nn.Conv2d(channels, GATES * hidden, 1, bias=False) if reads_image else None

    def pre_activations(
        self, x: torch.Tensor, bias: torch.Tensor | None, image: torch.Tensor | None
    ) -> torch.Tensor:
        """Gate pre-activations of both directions for x (B×in×H×W): B×H×W×(2·4h), image coordinates
        (not flipped)."""
        convs = (self.forward_dir.input_to_state, self.backward_dir.input_to_state)
        weight = torch.cat([c.weight * c.mask for c in convs])
        # channels-last: a 1×1 conv is several times faster there on CPU
        x = x.contiguous(memory_format=torch.channels_last)
        pre = F.conv2d(x, weight, torch.cat([c.bias for c in convs]))
        if bias is not None:
            pre = pre + bias
        if self.image_to_state is not None:
            if image is None:
                raise ValueError("this Diagonal BiLSTM layer reads the image: pass image=")
            from_image = self.image_to_state(image.contiguous(memory_format=torch.channels_last))
            pre = pre + F.pad(from_image, (0, 0, 0, 0, GATES * self.hidden, 0))
        return pre.permute(0, 2, 3, 1)

    def forward(
        self, x: torch.Tensor, bias: torch.Tensor | None = None, image: torch.Tensor | None = None
    ) -> torch.Tensor:
        pre = self.pre_activations(x, bias, image).unflatten(-1, (2, -1))
        both = diagonal_scan(pre, (self.forward_dir, self.backward_dir))
        left, right = both.unbind(3)
        # Down shift: row i receives row i-1; row 0 receives the learned initial state.
        top = self.backward_dir.scan.h0.expand(x.shape[0], 1, x.shape[-1], -1)
        return (left + torch.cat([top, right[:, :-1]], dim=1)).permute(0, 3, 1, 2)  # channels-last

    def session(
        self, inputs: torch.Tensor, bias: torch.Tensor | None, image_rows: Callable[[int], torch.Tensor]
    ) -> DiagonalBiLSTMSession:
        return DiagonalBiLSTMSession(self, inputs, bias, image_rows)


def _state_map(scan: ConvLSTMScan, n: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(h, c) maps n×h×(H+1)×(W+1) filled with the initial state (the border rows/columns keep it)."""
    shape = (n, scan.hidden, height + 1, width + 1)
    return scan.h0.view(1, -1, 1, 1).expand(shape).clone(), scan.c0.view(1, -1, 1, 1).expand(shape).clone()


def _diagonal_step(scan: ConvLSTMScan, pre: torch.Tensor, above: torch.Tensor, side: torch.Tensor,
                   c_side: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One Diagonal LSTM cell: state conv taps (0: the pixel above, 1: the previous pixel in the row)."""
    rec = state_conv_at(scan, torch.stack([above, side], dim=-1))
    return lstm_cell(pre + rec, c_side)


class DiagonalBiLSTMSession(LayerSession):
    """Cached Diagonal BiLSTM state.

    Left to right, per pixel: h(i, j) from h(i-1, j) and (h, c)(i, j-1). Right to left, once row i
    is complete (its image row is read unmasked by the first layer): the whole row from the right,
    h(i, j) from h(i-1, j) and (h, c)(i, j+1); pixel (i+1, j) then adds h(i, j) (the down shift).
    """

    def __init__(self, layer: DiagonalBiLSTMLayer, inputs: torch.Tensor, bias: torch.Tensor | None,
                 image_rows: Callable[[int], torch.Tensor]) -> None:
        self.layer, self.inputs, self.bias, self.image_rows = layer, inputs, bias, image_rows
        n, _, height, width = inputs.shape
        self.b_l = None if bias is None else bias.chunk(2, dim=1)[0]
        # left: [i+1, j+1] = pixel (i, j); right: [i+1, j] = pixel (i, j), row 0 = the down shift's top
        self.hl, self.cl = _state_map(layer.forward_dir.scan, n, height, width)
        self.hr, self.cr = _state_map(layer.backward_dir.scan, n, height, width)

    def step(self, i: int, j: int) -> torch.Tensor:
        fwd = self.layer.forward_dir
        pre = conv_at(fwd.input_to_state, self.inputs, i, j)[:, :, 0, 0] + bias_at(self.b_l, i, j)
        h, c = _diagonal_step(fwd.scan, pre, self.hl[:, :, i, j + 1], self.hl[:, :, i + 1, j],
                              self.cl[:, :, i + 1, j])
        self.hl[:, :, i + 1, j + 1], self.cl[:, :, i + 1, j + 1] = h, c
        return (h + self.hr[:, :, i, j])[:, :, None, None]

    def row_complete(self, i: int) -> None:
        bias = self.bias
        if bias is not None and bias.shape[-2] > 1:  # a bias map (not a class bias): this row of it
            bias = bias[:, :, i : i + 1]
        image = self.image_rows(i) if self.layer.image_to_state is not None else None
        pre = self.layer.pre_activations(self.inputs[:, :, i : i + 1], bias, image).chunk(2, dim=-1)[1]
        for j in reversed(range(self.inputs.shape[-1])):
            h, c = _diagonal_step(self.layer.backward_dir.scan, pre[:, 0, j], self.hr[:, :, i, j],
                                  self.hr[:, :, i + 1, j + 1], self.cr[:, :, i + 1, j + 1])
            self.hr[:, :, i + 1, j], self.cr[:, :, i + 1, j] = h, c


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
def build_diagonal_bilstm(
    *, channels: int, levels: int, height: int, width: int, n_classes: int | None = None, **args
) -> PixelRNN:
    return diagonal_bilstm(channels=channels, levels=levels, n_classes=n_classes, **args)
