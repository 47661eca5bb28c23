"""Gated PixelCNN of "Conditional Image Generation with PixelCNN Decoders" (van den Oord et al., 2016, §2).

Two stacks remove the blind spot of the PixelCNN. The vertical stack convolves with a (k//2+1)×k
kernel padded on top only, so at row i it sees rows up to i; it never enters the prediction directly,
only through a 1×1 link applied after a one-row down shift, which makes it "rows strictly above" and
lets it be unmasked (every colour of the current pixel may see every earlier row). The horizontal
stack sees the current row up to the current pixel through a 1×k mask (mask A in the first layer,
B after) with R,G,B channel groups at the centre (both gate halves grouped alike, see nn.gated), and
carries the residual and the skip connections.
Each layer is y = tanh(W_f∗x + V_f h) ⊙ σ(W_g∗x + V_g h); ``h`` is the class (index or soft labels)
through a learned per-layer bias on both stacks.

Paper size: ImageNet 20 layers, 384 units, 5×5 filters. CIFAR-10 is not sized in the paper; we use
20 layers of 5×5 (20·2 = 40 rows and columns of context, so every earlier pixel of a 32×32 image
is reachable, which is the point of removing the blind spot) and 128 units, the PixelCNN baseline's
h, with the 1024-unit output head of PixelRNN: about 15M parameters (256 units would be about 59M,
384 about 131M, sized for ImageNet on 32 GPUs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pixelzoo.models.conv_sessions import GatedPixelCNNSession
from pixelzoo.models.registry import register
from pixelzoo.nn import (
    ClassBias,
    GatedMaskedConv2d,
    MaskedConv2d,
    OutputHead,
    down_shift,
    gate,
    network_input,
)


class GatedLayer(nn.Module):
    """One vertical + horizontal layer (paper Fig. 2); ``first`` reads the image with mask A."""

    def __init__(
        self, in_ch: int, hidden: int, kernel_size: int, channels: int, first: bool, n_classes: int | None
    ) -> None:
        super().__init__()
        self.pad = kernel_size // 2
        self.v_conv = nn.Conv2d(in_ch, 2 * hidden, (self.pad + 1, kernel_size))
        mask = "A" if first else "B"
        self.h_conv = GatedMaskedConv2d(mask, in_ch, hidden, (1, kernel_size), groups=channels)
        self.link = nn.Conv2d(2 * hidden, 2 * hidden, 1)  # sees only rows above after the down shift
        self.h_out = MaskedConv2d("B", hidden, hidden, 1, groups=channels)
        self.v_cond = ClassBias(n_classes, 2 * hidden) if n_classes else None
        self.h_cond = ClassBias(n_classes, 2 * hidden) if n_classes else None

    def forward(
        self, v: torch.Tensor, h: torch.Tensor, y: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        v_pre = self.v_conv(F.pad(v, (self.pad, self.pad, self.pad, 0)))  # rows i-pad..i
        h_pre = self.h_conv(h) + self.link(down_shift(v_pre))
        if self.v_cond is not None and y is not None:
            v_pre = v_pre + self.v_cond(y)
            h_pre = h_pre + self.h_cond(y)
        v_new = gate(v_pre)
        h_gated = gate(h_pre)
        return v_new, h_gated, self.h_out(h_gated)


class GatedPixelCNN(nn.Module):
    """model(x, y=None) -> logits B×K×C×H×W; skip outputs of all layers feed the output head."""

    def __init__(
        self,
        channels: int,
        levels: int,
        layers: int,
        hidden: int,
        kernel_size: int,
        head_hidden: int,
        residual: bool = True,
        skip: bool = True,
        n_classes: int | None = None,
    ) -> None:
        super().__init__()
        self.levels, self.residual, self.skip = levels, residual, skip
        self.layers = nn.ModuleList(
            GatedLayer(channels if i == 0 else hidden, hidden, kernel_size, channels, i == 0, n_classes)
            for i in range(layers)
        )
        self.skips = nn.ModuleList(
            MaskedConv2d("B", hidden, hidden, 1, groups=channels) for _ in range(layers)
        ) if skip else None
        self.head = OutputHead(hidden, head_hidden, channels, levels)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.layers[0].v_cond is not None and y is None:  # conditional: never silently unconditional
            raise ValueError("this model is class-conditional (n_classes set): pass y")
        v = h = network_input(x, self.levels, self.head.net[1].weight.dtype)
        out = None
        for i, layer in enumerate(self.layers):
            v, h_gated, h_res = layer(v, h, y)
            # The first layer's input has C channels, not `hidden`: no residual there.
            h = h + h_res if self.residual and i > 0 else h_res
            if self.skip:
                s = self.skips[i](h_gated)
                out = s if out is None else out + s
        return self.head(out if self.skip else h)

    def sampling_session(self, x: torch.Tensor, y: torch.Tensor | None = None) -> GatedPixelCNNSession:
        """Cached sampler: vertical stack once per row, horizontal stack at the current pixel."""
        return GatedPixelCNNSession(self, x, y)


@register("gated_pixelcnn", tiny={"layers": 4, "hidden": 12, "kernel_size": 5, "head_hidden": 12})
def build_gated_pixelcnn(
    *,
    channels: int,
    levels: int,
    height: int,
    width: int,
    n_classes: int | None = None,
    layers: int = 20,
    hidden: int = 128,
    kernel_size: int = 5,
    head_hidden: int = 1024,
    residual: bool = True,
    skip: bool = True,
) -> GatedPixelCNN:
    """Defaults are our CIFAR-10 size (see module docstring); ImageNet: hidden=384."""
    del height, width  # fully convolutional
    if hidden < channels:
        raise ValueError(f"hidden={hidden} must be >= channels={channels}: one feature group per colour")
    if kernel_size < 3 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd and >= 3, got {kernel_size}")
    return GatedPixelCNN(
        channels, levels, layers, hidden, kernel_size, head_hidden, residual, skip, n_classes
    )
