"""Autoregressive masks with R,G,B channel groups (van den Oord et al. 2016, PixelRNN §3.4).

Pixels are generated in raster order and, within a pixel, channel by channel (R, then G, then B).
Every masked layer splits its input and output feature maps into ``groups`` contiguous blocks
(one per image channel). At the kernel centre, output group ``g`` may read input group ``g'`` iff
``g' < g`` (mask A, first layer: the current sub-pixel is hidden) or ``g' <= g`` (mask B, later
layers). Kernel positions before the centre in raster order are fully visible; positions after it
are hidden. With one image channel this reduces to the familiar A/B masks.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn


def channel_groups(n_channels: int, groups: int) -> torch.Tensor:
    """Group index (0..groups-1) of each of ``n_channels`` feature maps; contiguous blocks."""
    if n_channels < groups:
        raise ValueError(f"{n_channels} feature maps cannot be split into {groups} channel groups")
    return torch.arange(n_channels) * groups // n_channels


def causal_mask(
    mask_type: str, in_channels: int, out_channels: int, kernel_size: tuple[int, int], groups: int
) -> torch.Tensor:
    """0/1 mask of shape (out, in, kh, kw) for a raster-order causal convolution.

    The kernel centre is ``(kh // 2, kw // 2)``; use odd kernel sizes (or pad the input so that the
    centre lands on the current pixel).
    """
    if mask_type not in ("A", "B"):
        raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
    kh, kw = kernel_size
    ch, cw = kh // 2, kw // 2
    mask = torch.zeros(out_channels, in_channels, kh, kw)
    mask[:, :, :ch, :] = 1  # rows above
    mask[:, :, ch, :cw] = 1  # same row, to the left
    g_out = channel_groups(out_channels, groups)[:, None]
    g_in = channel_groups(in_channels, groups)[None, :]
    centre = g_in < g_out if mask_type == "A" else g_in <= g_out
    mask[:, :, ch, cw] = centre.float()
    return mask


class MaskedConv2d(nn.Conv2d):
    """Conv2d whose weight is multiplied by a fixed causal mask inside the functional call.

    The mask is a buffer; the stored weight is never modified, so optimiser state, weight decay
    and checkpoints see the real parameters and the mask cannot be "forgotten" by a code path that
    bypasses ``forward``. Padding is "same" so the output is aligned with the input.
    """

    def __init__(
        self,
        mask_type: str,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        groups: int = 1,
        bias: bool = True,
    ) -> None:
        ks = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        super().__init__(in_channels, out_channels, ks, padding=(ks[0] // 2, ks[1] // 2), bias=bias)
        self.mask_type = mask_type
        self.register_buffer("mask", causal_mask(mask_type, in_channels, out_channels, ks, groups))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel_size == (1, 1) and x.shape[-2:] == (1, 1):
            # One pixel (cached sampling): a matrix product. On CPU, conv2d on a 1×1 map costs
            # ~100 µs a call, ~20× the product.
            return F.linear(x.flatten(1), self.masked_matrix(), self.bias)[:, :, None, None]
        return F.conv2d(x, self.weight * self.mask, self.bias, self.stride, self.padding)

    def masked_matrix(self) -> torch.Tensor:
        """``weight * mask`` as an out × (in·kh·kw) matrix (computed once inside :func:`fixed_weights`)."""
        fixed = getattr(self, "_fixed_matrix", None)
        return fixed if fixed is not None else (self.weight * self.mask).flatten(1)

    def extra_repr(self) -> str:
        return f"mask={self.mask_type}, " + super().extra_repr()


def scale_input(x: torch.Tensor, levels: int) -> torch.Tensor:
    """Map integer levels in [0, levels) to floats in [-1, 1] (the network's view of the image).

    A floating-point ``x`` holding level values keeps its dtype and its autograd graph: the causality
    audit feeds float64 levels that require grad and differentiates the logits with respect to them.
    """
    xf = x if x.is_floating_point() else x.float()
    return xf * (2.0 / (levels - 1)) - 1.0


@contextmanager
def fixed_weights(model: nn.Module) -> Iterator[None]:
    """Inside, every :class:`MaskedConv2d` of ``model`` computes ``weight * mask`` once, not per call.

    For cached sampling, which calls each masked layer once per pixel on one pixel, while the weights
    cannot change (no optimiser step runs inside ``sampling.sample``).
    """
    convs = [m for m in model.modules() if isinstance(m, MaskedConv2d)]
    with torch.no_grad():
        for conv in convs:
            conv._fixed_matrix = (conv.weight * conv.mask).flatten(1)
    try:
        yield
    finally:
        for conv in convs:
            conv._fixed_matrix = None
