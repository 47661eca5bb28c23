"""Skew and unskew of feature maps for the Diagonal BiLSTM (PixelRNN, van den Oord et al. 2016, §3.2).

Skewing shifts row ``r`` right by ``r`` positions, so the H×W map becomes H×(W+H-1) (the paper's
n×(2n-1) for square images) and each diagonal of the image becomes one column of the skewed map:
``skewed[..., r, r + j] = x[..., r, j]``. Both directions are a pad, a flat reshape and a slice — no
per-row Python loop — using the fact that re-reading a row-major buffer with a row length one shorter
shifts every row one place further than the row above it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def skew(x: torch.Tensor) -> torch.Tensor:
    """(..., H, W) -> (..., H, W+H-1) with ``out[..., r, r+j] = x[..., r, j]`` and zeros elsewhere."""
    *lead, h, w = x.shape
    # Rows padded to length W+H, then read back with length W+H-1: row r moves r places right.
    flat = F.pad(x, (0, h)).reshape(*lead, h * (w + h))
    return flat[..., : h * (w + h - 1)].reshape(*lead, h, w + h - 1)


def unskew(y: torch.Tensor, width: int) -> torch.Tensor:
    """Inverse of :func:`skew`: (..., H, W+H-1) -> (..., H, W) with ``out[..., r, j] = y[..., r, r+j]``."""
    *lead, h, sw = y.shape
    if sw != width + h - 1:
        raise ValueError(
            f"a skewed map of height {h} and original width {width} has width {width + h - 1}, got {sw}"
        )
    flat = F.pad(y.reshape(*lead, h * sw), (0, h))
    return flat.reshape(*lead, h, width + h)[..., :width]
