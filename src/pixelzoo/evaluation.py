"""Exact test NLL: every image of the split counts exactly once, sums in float64.

No DataLoader, no sampler, no ``drop_last``: the split is walked in contiguous slices, the last one
shorter when the batch size does not divide N (PITFALLS: padded or dropped evaluation batches). The
forward runs in plain fp32 with TF32 switched off, so the reported number does not depend on the
training precision.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from pixelzoo.likelihood import bits_per_dim, nll_per_image


@contextmanager
def exact_fp32() -> Iterator[None]:
    """[CUDA] disable TF32 matmuls/convolutions for the duration (no-op effect on CPU)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@torch.no_grad()
def evaluate_nll(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None,
    batch_size: int,
    device: torch.device | str,
) -> dict[str, float | int]:
    """NLL of every image of ``x`` (uint8/long N×C×H×W levels), conditioned on ``y`` if given.

    Returns ``nats_per_image``, ``bits_per_dim`` (= nats / (C·H·W·ln 2)), ``n_images`` and
    ``total_nats`` (the float64 sum).
    """
    if batch_size < 1:
        raise ValueError(f"evaluation batch_size must be >= 1, got {batch_size}")
    n = len(x)
    if n == 0:
        raise ValueError("cannot evaluate on an empty split")
    if y is not None and len(y) != n:
        raise ValueError(f"{n} images but {len(y)} labels")
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64)
    counted = 0
    with exact_fp32():
        for start in range(0, n, batch_size):
            xb = x[start:start + batch_size].to(device).long()
            yb = None if y is None else y[start:start + batch_size].to(device)
            nats = nll_per_image(model(xb, yb).float(), xb)
            total += nats.double().sum().cpu()
            counted += len(xb)
    model.train(was_training)
    if counted != n:  # cannot happen with contiguous slices; kept as the invariant the metric rests on
        raise RuntimeError(f"evaluated {counted} images, expected {n}")
    dims = math.prod(x.shape[1:])
    nats_per_image = float(total) / n
    return {
        "nats_per_image": nats_per_image,
        "bits_per_dim": float(bits_per_dim(nats_per_image, dims)),
        "n_images": n,
        "total_nats": float(total),
    }
