"""Autoregressive sampling: the naive reference (one full forward pass per sub-pixel, PixelRNN §2,
eq. 1–2) and the cached sampler, which asks the model's ``sampling_session`` for each sub-pixel.

Both run the same loop: sub-pixels are drawn in the order
:func:`pixelzoo.models.registry.generation_order` gives for the model (raster, then R,G,B within a
pixel, unless the model says otherwise, e.g. multi-scale), known sub-pixels are skipped, and every
draw comes from one seeded CPU ``torch.Generator``, so the same seed gives the same images on any
device. Only where the logits come from differs, so the cached sampler draws the naive sampler's
samples for the same generator (tests/test_cached_sampling.py).

The session protocol: ``model.sampling_session(x, y) -> session`` with ``session.logits(c, i, j)``
returning the n×K logits of sub-pixel (c, i, j) given the current ``x``, which the sampler fills in
place (for a model with a non-categorical head: the head's exact conditional log-probabilities of
that sub-pixel, :meth:`pixelzoo.likelihood.Head.logits_at`). Calls come in strictly increasing
generation order but may skip sub-pixels (known pixels); at a call every earlier sub-pixel holds its
final value, later ones arbitrary values.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from pixelzoo.likelihood import head_of, sample_from_logits
from pixelzoo.models import generation_order
from pixelzoo.nn.masks import fixed_weights

METHODS = ("cached", "naive")
LogitsFn = Callable[[int, int, int], torch.Tensor]


def logits_source(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, method: str) -> LogitsFn:
    """``(c, i, j) -> n×K logits`` of one sub-pixel for ``method``; the model is in eval mode."""
    if method == "naive":
        head = head_of(model)  # categorical: the logits themselves; a mixture: its exact conditionals
        return lambda c, i, j: head.logits_at(model(x, y), x, c, i, j)
    if method == "cached":
        session = getattr(model, "sampling_session", None)
        if session is None:
            raise ValueError(
                f"{type(model).__name__} has no sampling_session, so it cannot be sampled with "
                "method='cached'; use method='naive' (sample.method in params.yaml)"
            )
        return session(x, y).logits
    raise ValueError(f"sampling method must be one of {METHODS}, got {method!r}")


@torch.no_grad()
def sample(
    model: nn.Module,
    n: int,
    *,
    channels: int,
    height: int,
    width: int,
    levels: int,
    y: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    x_init: torch.Tensor | None = None,
    known: torch.Tensor | None = None,
    method: str = "cached",
) -> torch.Tensor:
    """Draw ``n`` images (LongTensor n×C×H×W of levels) from ``model``.

    ``y``: class indices (n,) or soft labels (n, N) for conditional models. ``x_init`` and ``known``
    (bool C×H×W) give sub-pixels that are fixed rather than sampled (image completion); the model
    still sees them as context for every later draw. ``method``: "cached" (the model's
    ``sampling_session``) or "naive" (one full forward per sub-pixel, the reference).
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    if x_init is None:
        x = torch.zeros(n, channels, height, width, dtype=torch.long, device=device)
    else:
        if tuple(x_init.shape) != (n, channels, height, width):
            raise ValueError(
                f"x_init must have shape {(n, channels, height, width)}, got {tuple(x_init.shape)}"
            )
        x = x_init.to(device).long().clone()
    if known is None:
        known = torch.zeros(channels, height, width, dtype=torch.bool)
    elif known.shape != (channels, height, width) or x_init is None:
        raise ValueError("`known` must be a bool C×H×W mask and needs `x_init` holding the known values")
    y = None if y is None else y.to(device)
    known_flat = known.reshape(-1).cpu()
    try:
        with fixed_weights(model):
            logits_of = logits_source(model, x, y, method)
            for flat in generation_order(model, channels, height, width).tolist():
                if known_flat[flat]:
                    continue
                c, rem = divmod(flat, height * width)
                i, j = divmod(rem, width)
                logits = logits_of(c, i, j)  # n × K: the distribution of this sub-pixel given the past
                # the draw on the CPU, where the generator lives (x / 1.0 is exact: the same stream)
                x[:, c, i, j] = sample_from_logits(logits.float().cpu(), generator).to(device)
    finally:
        model.train(was_training)
    return x


def to_unit(x: torch.Tensor, levels: int) -> torch.Tensor:
    """Levels in [0, levels) -> floats in [0, 1] for PNG output."""
    return x.float() / (levels - 1)


def grid_image(x: torch.Tensor, levels: int, nrow: int, pad: int = 1, pad_value: float = 0.5) -> torch.Tensor:
    """Tile a batch of level images into one uint8 H×W×3 array, ``nrow`` per row (torchvision's
    ``make_grid`` layout, without importing torchvision: it costs a stage seconds of start-up)."""
    img = to_unit(x.cpu(), levels)
    n, c, h, w = img.shape
    img = img.expand(n, 3, h, w) if c == 1 else img
    cols = min(nrow, n)
    rows = -(-n // cols)
    grid = torch.full((3, rows * (h + pad) + pad, cols * (w + pad) + pad), pad_value)
    for k in range(n):
        r, col = divmod(k, cols)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[:, top : top + h, left : left + w] = img[k]
    return grid.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous()


def save_grid(x: torch.Tensor, levels: int, path: Path, nrow: int) -> None:
    """Save a batch of level images as one PNG grid (``nrow`` images per row)."""
    from PIL import Image

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid_image(x, levels, nrow).numpy()).save(path)


def class_rows(n_classes: int, per_class: int) -> torch.Tensor:
    """Labels 0,0,..,1,1,.. : one grid row per class."""
    return torch.arange(n_classes).repeat_interleave(per_class)


def soft_label_rows(pairs: list[list[int]], n_classes: int, per_pair: int) -> torch.Tensor:
    """One row of 0.5/0.5 soft labels per class pair (seed 004: "images between two classes")."""
    rows = []
    for pair in pairs:
        if len(pair) != 2 or not all(0 <= c < n_classes for c in pair) or pair[0] == pair[1]:
            raise ValueError(f"soft-label pair {pair} must be two distinct classes in [0, {n_classes})")
        v = torch.zeros(n_classes)
        v[list(pair)] = 0.5
        rows.append(v.expand(per_pair, n_classes))
    return torch.cat(rows)


def top_half_known(channels: int, height: int, width: int) -> torch.Tensor:
    """Mask of the rows above the middle (all channels): the part of a test image kept for completion."""
    known = torch.zeros(channels, height, width, dtype=torch.bool)
    known[:, : height // 2] = True
    return known
