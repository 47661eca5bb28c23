"""Gated activation unit of the Conditional PixelCNN (van den Oord et al. 2016, eq. 2).

``y = tanh(W_f * x + V_f h) ⊙ σ(W_g * x + V_g h)``. The 2·n pre-activation is laid out ``[f | g]``:
the first n maps feed the tanh, the last n the sigmoid, and *each half* carries its own R,G,B channel
groups (``channel_groups(n, C)``), so f-map k and g-map k always belong to the same group and the
gated map k stays in that group. (Masking the 2·n maps as one block of three groups would pair a tanh
of group R with a sigmoid of group G whenever the halves straddle a group boundary: a leak of the
current sub-pixel.) This works for any width, e.g. the paper's 128 or 384 maps with C = 3.
"""

from __future__ import annotations

import torch

from pixelzoo.nn.masks import MaskedConv2d, causal_mask


def gate(x: torch.Tensor) -> torch.Tensor:
    """tanh(f) ⊙ σ(g) of a B×2n×H×W pre-activation laid out [f | g]."""
    if x.shape[1] % 2:
        raise ValueError(f"gate needs an even number of pre-activation maps [f | g], got {x.shape[1]}")
    f, g = x.chunk(2, dim=1)
    return torch.tanh(f) * torch.sigmoid(g)


class GatedMaskedConv2d(MaskedConv2d):
    """Masked convolution to 2·``out_channels`` maps [f | g], each half masked with its own groups."""

    def __init__(
        self,
        mask_type: str,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        groups: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__(mask_type, in_channels, 2 * out_channels, kernel_size, groups=groups, bias=bias)
        half = causal_mask(mask_type, in_channels, out_channels, self.kernel_size, groups)
        self.mask.copy_(torch.cat([half, half]))
