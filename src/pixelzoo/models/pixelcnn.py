"""PixelCNN of "Pixel Recurrent Neural Networks" (van den Oord, Kalchbrenner, Kavukcuoglu, ICML 2016, §3.5).

A 7×7 mask-A convolution, then ``layers`` residual blocks (Fig. 5: ReLU–1×1 2h→h, ReLU–3×3 mask B
h→h, ReLU–1×1 h→2h, plus the block input), optional learnable 1×1 skip connections from every layer
to the output, and the two-layer ReLU + 1×1 output head with a K-way softmax per colour channel.
Every layer, 1×1 ones included, is masked with R,G,B channel groups. Paper size on CIFAR-10:
15 layers, h = 128, head 1024. Stacked 3×3 masks leave a blind spot above-right of each pixel.
"""

from __future__ import annotations

import torch
from torch import nn

from pixelzoo.models.conv_sessions import PixelCNNSession
from pixelzoo.models.registry import register
from pixelzoo.nn import ClassBias, MaskedConv2d, OutputHead, input_conv, network_input


class ResidualBlock(nn.Module):
    """PixelRNN Fig. 5 residual block, without the addition (the caller owns the residual switch)."""

    def __init__(self, hidden: int, channels: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.ReLU(),
            MaskedConv2d("B", 2 * hidden, hidden, 1, groups=channels),
            nn.ReLU(),
            MaskedConv2d("B", hidden, hidden, 3, groups=channels),
            nn.ReLU(),
            MaskedConv2d("B", hidden, 2 * hidden, 1, groups=channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class PixelCNN(nn.Module):
    """model(x, y=None) -> logits B×K×C×H×W; y (class index or soft labels) adds a per-layer bias."""

    def __init__(
        self,
        channels: int,
        levels: int,
        layers: int,
        hidden: int,
        head_hidden: int,
        residual: bool = True,
        skip: bool = True,
        n_classes: int | None = None,
    ) -> None:
        super().__init__()
        self.levels, self.residual, self.skip = levels, residual, skip
        self.inp = input_conv(channels, 2 * hidden)
        self.blocks = nn.ModuleList(ResidualBlock(hidden, channels) for _ in range(layers))
        # Learnable skips: a masked 1×1 from the input layer and from every block to the output sum.
        self.skips = nn.ModuleList(
            MaskedConv2d("B", 2 * hidden, 2 * hidden, 1, groups=channels) for _ in range(layers + 1)
        ) if skip else None
        self.cond = nn.ModuleList(
            ClassBias(n_classes, 2 * hidden) for _ in range(layers)
        ) if n_classes else None
        self.head = OutputHead(2 * hidden, head_hidden, channels, levels)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.cond is not None and y is None:  # a conditional model never silently runs unconditionally
            raise ValueError("this model is class-conditional (n_classes set): pass y")
        h = self.inp(network_input(x, self.levels, self.inp.weight.dtype))
        out = self.skips[0](h) if self.skip else None
        for i, block in enumerate(self.blocks):
            r = block(h)
            if self.cond is not None and y is not None:
                r = r + self.cond[i](y)
            h = h + r if self.residual else r
            if self.skip:
                out = out + self.skips[i + 1](h)
        return self.head(out if self.skip else h)

    def sampling_session(self, x: torch.Tensor, y: torch.Tensor | None = None) -> PixelCNNSession:
        """Cached sampler: every layer at the current pixel only (pixelzoo.models.conv_sessions)."""
        return PixelCNNSession(self, x, y)


@register("pixelcnn", tiny={"layers": 2, "hidden": 6, "head_hidden": 12})
def build_pixelcnn(
    *,
    channels: int,
    levels: int,
    height: int,
    width: int,
    n_classes: int | None = None,
    layers: int = 15,
    hidden: int = 128,
    head_hidden: int = 1024,
    residual: bool = True,
    skip: bool = True,
) -> PixelCNN:
    """Defaults are the paper's CIFAR-10 size; use head_hidden=32 for MNIST (PixelRNN §5.1)."""
    del height, width  # fully convolutional
    if hidden < channels:
        raise ValueError(f"hidden={hidden} must be >= channels={channels}: one feature group per colour")
    return PixelCNN(channels, levels, layers, hidden, head_hidden, residual, skip, n_classes)
