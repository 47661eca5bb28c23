"""Class conditioning as a learned per-layer bias (Conditional PixelCNN, van den Oord et al. 2016, §2.3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def as_soft_labels(y: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Class indices (B,) -> one-hot (B, N); soft label rows (B, N) pass through as floats."""
    if y.dim() == 1:
        if y.dtype.is_floating_point:
            raise TypeError("class indices must be an integer tensor; soft labels must be (B, n_classes)")
        return F.one_hot(y, n_classes).float()
    if y.dim() != 2 or y.shape[1] != n_classes:
        raise ValueError(f"soft labels must have shape (B, {n_classes}), got {tuple(y.shape)}")
    return y.float()


class ClassBias(nn.Module):
    """h -> V h, broadcast over all positions: a bias that depends on the class, never on pixels."""

    def __init__(self, n_classes: int, out_channels: int) -> None:
        super().__init__()
        self.n_classes = n_classes
        self.proj = nn.Linear(n_classes, out_channels, bias=False)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        labels = as_soft_labels(y, self.n_classes).to(self.proj.weight.dtype)  # float64 under the audit
        return self.proj(labels)[:, :, None, None]
