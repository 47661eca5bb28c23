"""Output heads and losses: the categorical distribution over K levels per sub-pixel (PixelRNN §2.2).

One place for the numbers training and evaluation report: NLL in nats per image (cross-entropy summed
over C, H, W) and bits/dim = nats / (C·H·W·ln 2). No dequantization: the likelihood is discrete.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _check(logits: torch.Tensor, x: torch.Tensor, levels: bool = True) -> None:
    if logits.dim() != 5 or x.dim() != 4:
        raise ValueError(
            f"expected logits B×K×C×H×W and x B×C×H×W, got {tuple(logits.shape)} and {tuple(x.shape)}"
        )
    b, k, c, h, w = logits.shape
    if tuple(x.shape) != (b, c, h, w):
        raise ValueError(f"logits {tuple(logits.shape)} do not match images {tuple(x.shape)}")
    if x.is_floating_point():
        raise TypeError("x must hold integer levels (LongTensor), not floats")
    if not levels:  # the caller checked the range once for all its images (reading it is a host sync)
        return
    lo, hi = int(x.min()), int(x.max())
    if lo < 0 or hi >= k:
        raise ValueError(f"pixel levels must lie in [0, {k}) for a {k}-way head, found [{lo}, {hi}]")


def nll_per_subpixel(logits: torch.Tensor, x: torch.Tensor, check_levels: bool = True) -> torch.Tensor:
    """Negative log-likelihood of every sub-pixel in nats: shape B×C×H×W, computed in float32.
    ``check_levels=False``: the caller has checked that x lies in [0, K) (the training loop, once)."""
    _check(logits, x, check_levels)
    return F.cross_entropy(logits.float(), x.long(), reduction="none")  # class dim is K


def nll_per_image(logits: torch.Tensor, x: torch.Tensor, check_levels: bool = True) -> torch.Tensor:
    """Negative log-likelihood of each image in nats: shape (B,), computed in float32.

    Callers summing over a dataset should accumulate in float64.
    """
    return nll_per_subpixel(logits, x, check_levels).flatten(1).sum(1)


def bits_per_dim(nats: float | torch.Tensor, dims: int) -> float | torch.Tensor:
    """Convert nats (per image, or a mean per image) to bits per sub-pixel; ``dims`` = C·H·W."""
    if dims <= 0:
        raise ValueError(f"dims must be C·H·W > 0, got {dims}")
    return nats / (dims * math.log(2.0))


def sample_from_logits(
    logits: torch.Tensor, generator: torch.Generator | None = None, temperature: float = 1.0
) -> torch.Tensor:
    """Draw one level per row of ``logits`` (B×K at one sub-pixel) -> LongTensor (B,).

    Uses ``torch.multinomial`` with the given generator so that samplers sharing a random stream
    draw identical values.
    """
    if logits.dim() != 2:
        raise ValueError(f"expected logits B×K for one sub-pixel, got shape {tuple(logits.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    probs = torch.softmax(logits.float() / temperature, dim=1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)
