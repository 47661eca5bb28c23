"""Down- and down-right-shifted convolutions of PixelCNN++ (Salimans et al. 2017, §2.3–2.4), no masks.

A "down" convolution with a kh×kw kernel pads kh−1 rows on top and (kw−1)/2 columns on each side, so
output (i, j) reads rows i−kh+1..i and columns around j: the rows up to i. A "down-right" one pads
kh−1 rows on top and kw−1 columns on the left: rows up to i and columns up to j. Followed by a one-row
down shift (or one-column right shift) they see only strictly earlier pixels; inside the network the
two streams keep that property (the u stream: rows strictly above; the ul stream: above and to the
left). The transposed convolutions (stride 2) are cropped the same way (the paper's code).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

KINDS = ("down", "down_right")


def _pad(kind: str, kh: int, kw: int) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) zero padding of a shifted convolution (F.pad order)."""
    if kind == "down":
        return ((kw - 1) // 2, (kw - 1) // 2, kh - 1, 0)
    if kind == "down_right":
        return (kw - 1, 0, kh - 1, 0)
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


class ShiftedConv2d(nn.Module):
    """Zero padding on top (and left / both sides), then an unpadded convolution (stride 1 or 2)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: tuple[int, int], kind: str, stride: int = 1) -> None:
        super().__init__()
        self.kind, self.pad = kind, _pad(kind, *kernel)
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, self.pad))


class ShiftedDeconv2d(nn.Module):
    """Stride-2 transposed convolution cropped so output (i, j) reads only inputs "above" (and left)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: tuple[int, int], kind: str) -> None:
        super().__init__()
        if kernel[0] != 2:
            raise ValueError("the up-sampling kernel must be 2 rows high (each input row makes two rows)")
        _pad(kind, *kernel)  # validates kind
        self.kind, self.kernel = kind, kernel
        self.deconv = nn.ConvTranspose2d(in_ch, out_ch, kernel, stride=2, output_padding=1)
        self.col_offset = (kernel[1] - 1) // 2 if kind == "down" else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.deconv(x)
        h, w = 2 * x.shape[2], 2 * x.shape[3]
        return out[:, :, :h, self.col_offset : self.col_offset + w]


def concat_elu(x: torch.Tensor) -> torch.Tensor:
    """ELU of x and of −x, concatenated over channels (the paper's non-linearity)."""
    return F.elu(torch.cat([x, -x], dim=1))
