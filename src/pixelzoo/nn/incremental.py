"""Incremental evaluation of convolutional autoregressive models, for cached sampling.

Fast PixelCNN style (Ramachandran et al. 2017, "Fast Generation for Convolutional Autoregressive
Models"): while sampling, a layer's output is needed at one position only (the current pixel), and
its input there and around it is already known. So each k×k convolution keeps its input map in a
zero-padded buffer (:class:`ConvCache`) and is evaluated at one position by a single matrix product
of the flattened window; 1×1 convolutions and pointwise modules act on the n×C vector of the current
position (:func:`point_layers`). :class:`RasterSession` holds the bookkeeping every convolutional
session shares: call order, and catching up pixels whose caches a skipped (known) sub-pixel left stale.

Masked weights are fetched once per session (weight · mask, trimmed to the rows and columns the mask
keeps), so a session must not outlive a change of the model's parameters.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

Point = Callable[[torch.Tensor], torch.Tensor]


def effective_weight(conv: nn.Conv2d) -> torch.Tensor:
    """The weight the convolution really applies: ``weight * mask`` for a masked one."""
    mask = getattr(conv, "mask", None)
    return conv.weight if mask is None else conv.weight * mask


class PointConv:
    """A 1×1 (masked) convolution applied to the n×C_in vector of one position -> n×C_out."""

    def __init__(self, conv: nn.Conv2d) -> None:
        if conv.kernel_size != (1, 1):
            raise ValueError(f"PointConv needs a 1×1 convolution, got kernel {conv.kernel_size}")
        w = effective_weight(conv)
        self.w = w.reshape(w.shape[0], -1)
        self.wt = self.w.t().contiguous()
        self.bias = conv.bias

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        return v @ self.wt if self.bias is None else torch.addmm(self.bias, v, self.wt)

    def along(self, v: torch.Tensor) -> torch.Tensor:
        """Applied at every position of an n×C_in×W row -> n×C_out×W."""
        out = self.w @ v
        return out if self.bias is None else out + self.bias[:, None]


def pointwise(module: nn.Module) -> Point:
    """A position-wise module (ReLU, Identity, eval-mode BatchNorm2d, Dropout) as a map on n×C vectors."""
    if isinstance(module, nn.ReLU):
        return torch.relu
    if isinstance(module, nn.Identity):
        return lambda v: v
    if isinstance(module, nn.Conv2d):
        return PointConv(module)
    if isinstance(module, nn.modules.batchnorm._BatchNorm | nn.modules.dropout._DropoutNd):
        if module.training:
            raise RuntimeError(f"{module} is in training mode: it is not position-wise; call model.eval()")
        return lambda v: module(v[:, :, None, None])[:, :, 0, 0]
    raise TypeError(f"{type(module).__name__} has no position-wise form for cached sampling")


def point_layers(modules: nn.Module | list[nn.Module]) -> Point:
    """A Sequential (or list) of 1×1 convolutions and position-wise modules as one map on n×C vectors."""
    steps = [pointwise(m) for m in (modules if isinstance(modules, list) else list(modules.children()))]

    def run(v: torch.Tensor) -> torch.Tensor:
        for step in steps:
            v = step(v)
        return v

    return run


class ConvCache:
    """The input map of one k×k convolution, zero-padded, so the convolution can run at one position.

    ``pad = (top, bottom, left, right)`` places image position (i, j) at buffer (i + top, j + left);
    output (i, j) reads buffer rows i..i+kh-1 and columns j..j+kw-1, as ``F.conv2d`` on the padded
    map would. The default is the convolution's own symmetric padding; the Gated PixelCNN's vertical
    convolution pads (top = k//2, bottom = 0) itself and passes that.
    """

    def __init__(
        self,
        conv: nn.Conv2d,
        n: int,
        height: int,
        width: int,
        pad: tuple[int, int, int, int] | None = None,
    ) -> None:
        ph, pw = conv.padding if pad is None else (0, 0)
        self.top, bottom, self.left, right = (ph, ph, pw, pw) if pad is None else pad
        self.height, self.width = height, width
        w = effective_weight(conv)
        self.weight, self.bias = w, conv.bias
        # Trim the kernel to the rows/columns the mask keeps (a causal mask hides the rows below).
        mask = getattr(conv, "mask", torch.ones_like(w))
        keep = mask.sum((0, 1)) > 0
        rows, cols = keep.any(1).nonzero()[:, 0], keep.any(0).nonzero()[:, 0]
        self.r0, self.r1 = int(rows.min()), int(rows.max()) + 1
        self.c0, self.c1 = int(cols.min()), int(cols.max()) + 1
        self.wt = w[:, :, self.r0 : self.r1, self.c0 : self.c1].reshape(w.shape[0], -1).t().contiguous()
        self.buf = w.new_zeros(n, w.shape[1], height + self.top + bottom, width + self.left + right)

    def put(self, i: int, j: int, v: torch.Tensor) -> None:
        """Store the n×C_in input vector of position (i, j)."""
        self.buf[:, :, i + self.top, j + self.left] = v

    def put_rows(self, i0: int, rows: torch.Tensor) -> None:
        """Store an n×C_in×R×W block of input rows starting at image row ``i0``."""
        r = i0 + self.top
        self.buf[:, :, r : r + rows.shape[2], self.left : self.left + self.width] = rows

    def at(self, i: int, j: int) -> torch.Tensor:
        """The convolution's output at (i, j): n×C_out."""
        patch = self.buf[:, :, i + self.r0 : i + self.r1, j + self.c0 : j + self.c1]
        flat = patch.reshape(patch.shape[0], -1)
        return flat @ self.wt if self.bias is None else torch.addmm(self.bias, flat, self.wt)

    def row(self, i: int) -> torch.Tensor:
        """The convolution's output along image row ``i``: n×C_out×W."""
        window = self.buf[:, :, i : i + self.weight.shape[2]]
        return F.conv2d(window, self.weight, self.bias)[:, :, 0]


class RasterSession:
    """Shared bookkeeping of a cached session for raster order with R, G, B within each pixel.

    A subclass implements ``pixel(i, j) -> n×C×K logits``: every layer evaluated at pixel (i, j) from
    ``x`` there and the caches of earlier pixels, storing its own activations in the caches. Hidden
    activations at a pixel never depend on that pixel's last sub-pixel (mask A hides it from every
    group that could read it), so a pixel's caches are final once the call for its last channel has
    run. A call that skips sub-pixels (known pixels of a completion) may leave earlier pixels with
    stale caches (computed before all their sub-pixels were final); those are recomputed first, in
    raster order, by the same per-pixel code.
    """

    def __init__(self, model: nn.Module, x: torch.Tensor) -> None:
        if model.training:
            raise RuntimeError("cached sampling needs the model in eval mode (call model.eval())")
        if x.dim() != 4 or x.dtype != torch.long:
            raise ValueError(f"x must be a LongTensor n×C×H×W of levels, got {x.dtype} {tuple(x.shape)}")
        self.x = x
        self.n, self.channels, self.height, self.width = x.shape
        self.final = 0  # pixels [0, final) in raster order hold caches computed from final values
        self.last = (-1, -1)  # (pixel, channel) of the previous call

    def pixel(self, i: int, j: int) -> torch.Tensor:
        raise NotImplementedError

    def logits(self, c: int, i: int, j: int) -> torch.Tensor:
        """Logits n×K of sub-pixel (c, i, j) given the current ``x``."""
        p = i * self.width + j
        if (p, c) <= self.last:
            raise ValueError(f"sub-pixel (c={c}, i={i}, j={j}) requested after (c={self.last[1]}, raster "
                             f"pixel {self.last[0]}): calls must follow the generation order")
        for q in range(self.final, p):  # earlier pixels whose caches may be stale
            self.pixel(*divmod(q, self.width))
        out = self.pixel(i, j)
        self.final = p + 1 if c == self.channels - 1 else p
        self.last = (p, c)
        return out[:, c]
