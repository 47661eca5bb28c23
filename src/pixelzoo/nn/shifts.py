"""Shifts that move context one row down or one column right, padding with zeros (Gated PixelCNN §2.2).

A down shift turns "rows up to and including i" into "rows strictly above i": the vertical stack of
the Gated PixelCNN may look at the current row internally, and only its down-shifted output is
allowed into the horizontal stack.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def down_shift(x: torch.Tensor, rows: int = 1) -> torch.Tensor:
    """out[..., i, :] = x[..., i - rows, :], zeros in the first ``rows`` rows."""
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    return F.pad(x, (0, 0, rows, 0))[..., : x.shape[-2], :]


def right_shift(x: torch.Tensor, cols: int = 1) -> torch.Tensor:
    """out[..., j] = x[..., j - cols], zeros in the first ``cols`` columns."""
    if cols < 1:
        raise ValueError(f"cols must be >= 1, got {cols}")
    return F.pad(x, (cols, 0))[..., : x.shape[-1]]
