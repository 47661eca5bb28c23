"""Causal self-attention over raster order and the position ("background") channels of PixelSNAIL
(Chen et al. 2018; neocxi/pixelsnail-public ``nn.causal_attention``, ``model.py``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class CausalAttention(nn.Module):
    """Multi-head attention of every pixel over the strictly earlier pixels in raster order.

    No parameters: the projections are the 1×1 gated blocks around it. ``strict`` False is a planted
    leak for the tests (the query's own pixel joins its keys); ``monotone`` is for the structural audit.
    """

    def __init__(self, heads: int) -> None:
        super().__init__()
        self.heads, self.strict, self.monotone = heads, True, False

    def mask(self, n: int, device: torch.device | None = None) -> torch.Tensor:
        """n×n boolean, True where query i may attend to key j: j < i (j ≤ i if not ``strict``)."""
        return torch.ones(n, n, dtype=torch.bool, device=device).tril(-1 if self.strict else 0)

    def split(self, t: torch.Tensor) -> torch.Tensor:
        """B×(h·d)×N -> B×h×N×d."""
        b, ch, n = t.shape
        return t.view(b, self.heads, ch // self.heads, n).transpose(2, 3)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q, k: B×D×H×W, v: B×V×H×W -> B×V×H×W (the value mix each pixel reads from earlier pixels)."""
        b, _, h, w = v.shape
        qs, ks, vs = (self.split(t.flatten(2)) for t in (q, k, v))
        allowed = self.mask(h * w, q.device)
        empty = ~allowed.any(1)  # the first pixel: no earlier pixel to attend to
        if self.monotone:
            out = self._monotone(qs, ks, vs, allowed)
        else:
            # a fully masked row gives NaN in SDPA: let it see key 0, then zero its output below
            first_key = torch.zeros_like(allowed)
            first_key[:, 0] = True
            out = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=allowed | (empty[:, None] & first_key))
        out = torch.where(empty[:, None], torch.zeros((), dtype=out.dtype, device=out.device), out)
        return out.transpose(2, 3).reshape(b, -1, h, w)

    @staticmethod
    def _monotone(
        qs: torch.Tensor, ks: torch.Tensor, vs: torch.Tensor, allowed: torch.Tensor
    ) -> torch.Tensor:
        # The structural copy's form: the same connections with positive slopes in q, k and v (softmax
        # normalisation has negative ones): mean over the allowed keys of exp(q·k/√d) v.
        scores = torch.exp(qs @ ks.transpose(2, 3) / math.sqrt(qs.shape[-1])) * allowed
        return scores @ vs / allowed.sum(1, keepdim=True).clamp(min=1)


def background(
    height: int, width: int, dtype: torch.dtype, device: torch.device | None = None, monotone: bool = False
) -> torch.Tensor:
    """1×2×H×W position channels (i − H/2)/H and (j − W/2)/W (the reference's); +1 in the structural copy
    (positive inputs keep every slope positive; a constant offset changes no connection)."""
    rows = (torch.arange(height, dtype=dtype, device=device) - height / 2) / height
    cols = (torch.arange(width, dtype=dtype, device=device) - width / 2) / width
    bg = torch.stack([rows[:, None].expand(height, width), cols[None, :].expand(height, width)])[None]
    return bg + 1.0 if monotone else bg
