"""Gated activation unit of the Conditional PixelCNN (van den Oord et al. 2016, eq. 2).

``y = tanh(W_f * x + V_f h) ⊙ σ(W_g * x + V_g h)``. The convolution producing the 2·n
pre-activation is masked with R,G,B channel groups, so the split into the tanh and sigmoid halves
must respect those groups: each group's contiguous block is halved (first half -> tanh, second half
-> sigmoid) and the gated output keeps the same contiguous group layout with n channels. Splitting
the whole tensor in two instead would pair a tanh from group R with a sigmoid from group G, and G's
features would flow into R's output: a leak of the current sub-pixel.
"""

from __future__ import annotations

import torch


def gate(x: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """tanh(f) ⊙ σ(g) of a B×2n×H×W pre-activation, split within each of ``groups`` channel groups."""
    b, c2, height, width = x.shape
    if c2 % (2 * groups):
        raise ValueError(
            f"gate needs a channel count divisible by 2·groups = {2 * groups}, got {c2}; "
            f"choose a hidden width divisible by the number of image channels"
        )
    x = x.view(b, groups, 2, c2 // (2 * groups), height, width)
    out = torch.tanh(x[:, :, 0]) * torch.sigmoid(x[:, :, 1])
    return out.reshape(b, c2 // 2, height, width)
