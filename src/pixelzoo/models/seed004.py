"""Conditional PixelCNN of seed 004 (J. Taylor's blog "Conditional PixelCNN", PyTorch; after
van den Oord et al. 2016, "Conditional Image Generation with PixelCNN Decoders").

A single stream of masked convolutions (so the PixelCNN blind spot stays): a 7×7 mask-A layer, then
gated residual blocks x + norm(tanh(f + V_f y) ⊙ σ(g + V_g y)) with a 3×3 mask-B convolution and a
per-layer class bias. The net is a U-Net in depth: the outputs of the first ``layers`` stages are
pushed on a stack and each block of the second half averages its pre-activation with a masked 1×1
projection of the popped feature map. Seed defaults: 200 features, MNIST at 4 gray levels, Adam 1e-4.

Differences from the seed, each a fix:
- The seed's ``aux = torch.squeeze(x, 0)`` reads the current features instead of the shortcut, so its
  U-Net shortcuts carry nothing; here the popped first-half map really enters each second-half block.
- Normalization: BatchNorm in training mode mixes all positions (and images) of the batch, so the
  prediction of a pixel reads future pixels. The default is ``norm="none"``; ``norm="batch"`` keeps the
  seed's BatchNorm, and the causality audit reports its train-mode leak.
- Every layer (the shortcut 1×1s and the output 1×1 included) is masked with R,G,B groups, so C=3 works;
  both gate halves carry the same groups. The output returns logits; the loss lives in likelihood.py.
- The seed's constant-ones input channel (it marks the zero padding) is kept as a separate unmasked
  convolution of a ones map: it carries no pixel values, so it cannot leak.
"""

from __future__ import annotations

import torch
from torch import nn

from pixelzoo.models.conv_sessions import Seed004Session
from pixelzoo.models.registry import register
from pixelzoo.nn import (
    ClassBias,
    GatedMaskedConv2d,
    MaskedConv2d,
    gate,
    input_conv,
    network_input,
    to_logits,
)

NORMS = ("none", "batch")


def _norm(kind: str, n: int) -> nn.Module:
    return nn.BatchNorm2d(n, momentum=0.1) if kind == "batch" else nn.Identity()


class GatedRes(nn.Module):
    """x + norm(gate(conv(x) [+ shortcut]/2 + class bias)); ``shortcut`` is the U-Net input, if any."""

    def __init__(
        self, features: int, channels: int, n_classes: int | None, norm: str, shortcut: bool
    ) -> None:
        super().__init__()
        self.conv = GatedMaskedConv2d("B", features, features, 3, groups=channels)
        self.aux = nn.Sequential(
            GatedMaskedConv2d("B", features, features, 1, groups=channels), _norm(norm, 2 * features)
        ) if shortcut else None
        self.cond = ClassBias(n_classes, 2 * features) if n_classes else None
        self.norm = _norm(norm, features)

    def forward(
        self, x: torch.Tensor, y: torch.Tensor | None, aux: torch.Tensor | None = None
    ) -> torch.Tensor:
        pre = self.conv(x)
        if self.aux is not None:
            if aux is None:
                raise ValueError("this block is in the second half of the U-Net and needs its shortcut input")
            pre = (pre + self.aux(aux)) / 2
        if self.cond is not None and y is not None:
            pre = pre + self.cond(y)
        return x + self.norm(gate(pre))


class Seed004PixelCNN(nn.Module):
    """model(x, y=None) -> logits B×K×C×H×W."""

    def __init__(
        self,
        channels: int,
        levels: int,
        layers: int,
        features: int,
        n_classes: int | None,
        norm: str,
        dropout: float,
    ) -> None:
        super().__init__()
        self.channels, self.levels, self.conditional = channels, levels, n_classes is not None
        self.inp = input_conv(channels, features)
        self.border = nn.Conv2d(1, features, 7, padding=3, bias=False)
        self.inp_post = nn.Sequential(_norm(norm, features), nn.ReLU())
        block_args = (features, channels, n_classes, norm)
        self.up = nn.ModuleList(GatedRes(*block_args, shortcut=False) for _ in range(layers - 1))
        self.down = nn.ModuleList(GatedRes(*block_args, shortcut=True) for _ in range(layers))
        self.out = nn.Sequential(
            nn.Dropout2d(dropout), MaskedConv2d("B", features, channels * levels, 1, groups=channels)
        )

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.conditional and y is None:  # a conditional model never silently runs unconditionally
            raise ValueError("this model is class-conditional (n_classes set): pass y")
        xs = network_input(x, self.levels, self.inp.weight.dtype)
        ones = xs.new_ones(xs.shape[0], 1, *xs.shape[2:])
        h = self.inp_post(self.inp(xs) + self.border(ones))
        features = [h]
        for block in self.up:
            h = block(h, y)
            features.append(h)
        for block in self.down:
            h = block(h, y, features.pop())
        return to_logits(self.out(h), self.channels, self.levels)

    def sampling_session(self, x: torch.Tensor, y: torch.Tensor | None = None) -> Seed004Session:
        """Cached sampler: every block at the current pixel only (pixelzoo.models.conv_sessions)."""
        return Seed004Session(self, x, y)


@register("seed004_pixelcnn", tiny={"layers": 2, "features": 6, "dropout": 0.0})
def build_seed004(
    *,
    channels: int,
    levels: int,
    height: int,
    width: int,
    n_classes: int | None = None,
    layers: int = 4,
    features: int = 200,
    norm: str = "none",
    dropout: float = 0.5,
) -> Seed004PixelCNN:
    """Seed setting: MNIST at 4 levels, 200 features (the seed's n_layers is not stated; 4 per half here)."""
    del height, width  # fully convolutional
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if features < channels:
        raise ValueError(f"features={features} must be >= channels={channels}: one group per colour")
    if layers < 1:
        raise ValueError(f"layers must be >= 1, got {layers}")
    return Seed004PixelCNN(channels, levels, layers, features, n_classes, norm, dropout)
