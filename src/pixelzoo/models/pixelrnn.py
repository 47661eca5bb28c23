"""PixelRNN (van den Oord, Kalchbrenner, Kavukcuoglu 2016, §3): the model shared by Row LSTM and
Diagonal BiLSTM around their recurrent layers.

- :class:`PixelRNN`: mask-A 7×7 input layer, a stack of recurrent layers each wrapped with the
  paper's residual (1×1 mask-B conv ``h -> 2h`` added to the layer input) and learnable skip
  (1×1 mask-B conv of every layer output, summed) connections, each switchable (paper Table 2),
  and the two-layer ReLU + 1×1 output head.
- :class:`PixelRNNSession`: its cached sampling state (one :class:`LayerSession` per layer).

The recurrence itself (gate convolution, LSTM cell, the scan) is :mod:`pixelzoo.nn.scan`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pixelzoo.nn.conditioning import ClassBias
from pixelzoo.nn.heads import OutputHead, input_conv
from pixelzoo.nn.masks import MaskedConv2d, scale_input
from pixelzoo.nn.scan import ConvLSTMScan


def channels_last_map(pixels: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pixel-major states (H·W or H×W)×B×C -> a B×C×H×W map stored channels-last (B×H×W×C), the
    layout the PixelRNN's 1×1 convolutions run fastest in (see :meth:`PixelRNN.forward_scaled`)."""
    batch, c = pixels.shape[-2:]
    return pixels.reshape(height, width, batch, c).permute(2, 0, 1, 3).contiguous().permute(0, 3, 1, 2)


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
        # Channels-last throughout: the 1×1 convs (gates, residual, skip, head) run several times
        # faster on CPU than on B×C×H×W storage, and the recurrent layers work pixel-major anyway.
        h = self.input(xs.contiguous(memory_format=torch.channels_last))
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
    weight = conv.masked_matrix() if isinstance(conv, MaskedConv2d) else conv.weight.flatten(1)
    # one output position: a matrix product (conv2d costs ~20× more on CPU at this size)
    return F.linear(window.flatten(1), weight, conv.bias)[:, :, None, None]


def state_conv_at(scan: ConvLSTMScan, window: torch.Tensor) -> torch.Tensor:
    """The state-to-state convolution of ``scan`` at one position: B×h×k window -> B×4h."""
    return F.linear(window.flatten(1), scan.state_conv.weight.flatten(1))


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
