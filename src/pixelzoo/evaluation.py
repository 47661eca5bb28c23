"""Exact test NLL: every image of the split counts exactly once, sums in float64.

No DataLoader, no sampler, no ``drop_last``: the split is walked in contiguous slices, the last one
shorter when the batch size does not divide N (PITFALLS: padded or dropped evaluation batches). The
forward runs in plain fp32 with TF32 switched off, so the reported number does not depend on the
training precision.

The same pass yields the per-sub-pixel picture (:class:`BitsMap`): the mean bits of every sub-pixel over
the split and the bits maps of the first few images. Image totals and the map are sums of the same
float64 per-sub-pixel values, so the map's mean is the reported bits/dim up to float64 rounding.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pixelzoo.likelihood import bits_per_dim, head_of, nll_per_subpixel

LN2 = math.log(2.0)


@dataclass(frozen=True)
class BitsMap:
    """Where a model spends its bits: per sub-pixel, over the evaluated split."""

    mean_bits: np.ndarray  # float64 C×H×W: mean over all images of the bits at each sub-pixel
    example_index: np.ndarray  # int64 (n,): positions in the split of the example images
    example_images: np.ndarray  # uint8 n×C×H×W levels
    example_bits: np.ndarray  # float64 n×C×H×W
    # float64 (N,): the NLL in nats of every image of the split, in order (pixelzoo.api, the MLflow model)
    image_nats: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def save(self, path: Path) -> Path:
        """Arrays in one ``.npz`` (names as the fields)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, **self.__dict__)
        return path

    @classmethod
    def load(cls, path: Path) -> BitsMap:
        with np.load(path) as z:
            return cls(**{k: z[k] for k in cls.__dataclass_fields__ if k in z})


@contextmanager
def exact_fp32() -> Iterator[None]:
    """[CUDA] disable TF32 matmuls/convolutions for the duration (no-op effect on CPU)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


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
    return evaluate_with_map(model, x, y, batch_size, device, n_examples=0)[0]


@torch.no_grad()
def evaluate_with_map(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None,
    batch_size: int,
    device: torch.device | str,
    n_examples: int = 4,
) -> tuple[dict[str, float | int], BitsMap]:
    """:func:`evaluate_nll` and the :class:`BitsMap` of the same pass (first ``n_examples`` images)."""
    if batch_size < 1:
        raise ValueError(f"evaluation batch_size must be >= 1, got {batch_size}")
    n = len(x)
    if n == 0:
        raise ValueError("cannot evaluate on an empty split")
    if y is not None and len(y) != n:
        raise ValueError(f"{n} images but {len(y)} labels")
    was_training = model.training
    model.eval()
    nats_map = torch.zeros(tuple(x.shape[1:]), dtype=torch.float64)
    examples: list[torch.Tensor] = []
    per_image: list[torch.Tensor] = []
    counted = 0
    with exact_fp32():
        for start in range(0, n, batch_size):
            xb = x[start : start + batch_size].to(device).long()
            yb = None if y is None else y[start : start + batch_size].to(device)
            nats = nll_per_subpixel(model(xb, yb), xb, head_of(model)).double().cpu()  # B×C×H×W
            nats_map += nats.sum(0)
            per_image.append(nats.flatten(1).sum(1))
            if counted < n_examples:
                examples.append(nats[: n_examples - counted])
            counted += len(xb)
    model.train(was_training)
    if counted != n:  # cannot happen with contiguous slices; kept as the invariant the metric rests on
        raise RuntimeError(f"evaluated {counted} images, expected {n}")
    dims = math.prod(x.shape[1:])
    total = float(nats_map.sum())
    nats_per_image = total / n
    metrics = {
        "nats_per_image": nats_per_image,
        "bits_per_dim": float(bits_per_dim(nats_per_image, dims)),
        "n_images": n,
        "total_nats": total,
    }
    k = min(n_examples, n)
    ex = torch.cat(examples)[:k] if examples else torch.zeros(0, *x.shape[1:], dtype=torch.float64)
    bits = BitsMap(
        mean_bits=(nats_map / (n * LN2)).numpy(),
        example_index=np.arange(k, dtype=np.int64),
        example_images=x[:k].cpu().numpy().astype(np.uint8),
        example_bits=(ex / LN2).numpy(),
        image_nats=torch.cat(per_image).numpy(),
    )
    return metrics, bits


def save_bits_map_figures(bits: BitsMap, levels: int, out_dir: Path, title: str) -> dict[str, Path]:
    """PNGs of a :class:`BitsMap`: ``bits_map.png`` (mean, one panel per channel) and ``bits_examples.png``
    (each example image beside its map). Pixels are drawn as blocks (nearest), colour bars in bits."""
    # matplotlib's object-oriented API, not pyplot: no GUI backend machinery to import (stage start-up)
    from matplotlib.figure import Figure

    out_dir.mkdir(parents=True, exist_ok=True)
    c = bits.mean_bits.shape[0]
    names = ["R", "G", "B"] if c == 3 else [""] * c
    panel = 2.0
    fig = Figure(figsize=(max(panel * c + 0.9, 3.4), panel + 0.7))
    axes = fig.subplots(1, c, squeeze=False)
    vmax = float(bits.mean_bits.max())
    for ch, ax in enumerate(axes[0]):
        im = ax.imshow(bits.mean_bits[ch], cmap="magma", vmin=0, vmax=vmax, interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(f"{names[ch]} mean bits".strip(), fontsize=8)
    fig.colorbar(im, ax=list(axes[0]), shrink=0.85, label="bits")
    fig.suptitle(title, fontsize=7, wrap=True)
    paths = {"bits_map": out_dir / "bits_map.png"}
    fig.savefig(paths["bits_map"], dpi=110)

    n = len(bits.example_images)
    if n:
        fig = Figure(figsize=(panel * (1 + c) + 0.9, panel * n + 0.4))
        axes = fig.subplots(n, 1 + c, squeeze=False)
        vmax = float(bits.example_bits.max())
        for r in range(n):
            img = bits.example_images[r].transpose(1, 2, 0) / (levels - 1)
            axes[r][0].imshow(img.squeeze(-1) if c == 1 else img, cmap="gray", vmin=0, vmax=1,
                              interpolation="nearest")
            axes[r][0].set_title(f"test image {int(bits.example_index[r])}", fontsize=8)
            for ch in range(c):
                im = axes[r][1 + ch].imshow(bits.example_bits[r, ch], cmap="magma", vmin=0, vmax=vmax,
                                            interpolation="nearest")
                axes[r][1 + ch].set_title(f"{names[ch]} bits: {bits.example_bits[r, ch].sum():.0f}".strip(),
                                          fontsize=8)
            for ax in axes[r]:
                ax.set_axis_off()
        fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.6, label="bits")
        paths["bits_examples"] = out_dir / "bits_examples.png"
        fig.savefig(paths["bits_examples"], dpi=110)
    return paths
