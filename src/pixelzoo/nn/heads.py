"""Pieces every PixelRNN/PixelCNN shares: the mask-A input layer and the categorical output stack."""

from __future__ import annotations

import torch
from torch import nn

from pixelzoo.nn.masks import MaskedConv2d


def input_conv(channels: int, hidden: int, kernel_size: int = 7) -> MaskedConv2d:
    """First layer of the paper's models: a k×k mask-A convolution (k=7 in PixelRNN)."""
    return MaskedConv2d("A", channels, hidden, kernel_size, groups=channels)


class OutputHead(nn.Module):
    """Two ReLU + 1×1 mask-B layers, then K logits per colour channel (PixelRNN §3.4, §5.1).

    The 1×1 layers are masked too: with three colour channels the R,G,B groups must stay apart
    up to the very last layer, or the logits of R could read features computed from G.
    """

    def __init__(self, in_channels: int, hidden: int, channels: int, levels: int) -> None:
        super().__init__()
        self.channels, self.levels = channels, levels
        self.net = nn.Sequential(
            nn.ReLU(),
            MaskedConv2d("B", in_channels, hidden, 1, groups=channels),
            nn.ReLU(),
            MaskedConv2d("B", hidden, channels * levels, 1, groups=channels),
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return to_logits(self.net(h), self.channels, self.levels)


def to_logits(out: torch.Tensor, channels: int, levels: int) -> torch.Tensor:
    """B×(C·K)×H×W from a masked layer (groups contiguous: [R levels | G levels | B levels]) -> B×K×C×H×W."""
    b, _, height, width = out.shape
    return out.view(b, channels, levels, height, width).transpose(1, 2)
