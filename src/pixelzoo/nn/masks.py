"""Autoregressive masks with R,G,B channel groups (van den Oord et al. 2016, PixelRNN §3.4).

Pixels are generated in raster order and, within a pixel, channel by channel (R, then G, then B).
Every masked layer splits its input and output feature maps into ``groups`` contiguous blocks
(one per image channel). At the kernel centre, output group ``g`` may read input group ``g'`` iff
``g' < g`` (mask A, first layer: the current sub-pixel is hidden) or ``g' <= g`` (mask B, later
layers). Kernel positions before the centre in raster order are fully visible; positions after it
are hidden. With one image channel this reduces to the familiar A/B masks.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def channel_groups(n_channels: int, groups: int) -> torch.Tensor:
    """Group index (0..groups-1) of each of ``n_channels`` feature maps; contiguous blocks."""
    if n_channels < groups:
        raise ValueError(f"{n_channels} feature maps cannot be split into {groups} channel groups")
    return torch.arange(n_channels) * groups // n_channels


def causal_mask(
    mask_type: str, in_channels: int, out_channels: int, kernel_size: tuple[int, int], groups: int
) -> torch.Tensor:
    """0/1 mask of shape (out, in, kh, kw) for a raster-order causal convolution.

    The kernel centre is ``(kh // 2, kw // 2)``; use odd kernel sizes (or pad the input so that the
    centre lands on the current pixel).
    """
    if mask_type not in ("A", "B"):
        raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
    kh, kw = kernel_size
    ch, cw = kh // 2, kw // 2
    mask = torch.zeros(out_channels, in_channels, kh, kw)
    mask[:, :, :ch, :] = 1  # rows above
    mask[:, :, ch, :cw] = 1  # same row, to the left
    g_out = channel_groups(out_channels, groups)[:, None]
    g_in = channel_groups(in_channels, groups)[None, :]
    centre = g_in < g_out if mask_type == "A" else g_in <= g_out
    mask[:, :, ch, cw] = centre.float()
    return mask


class MaskedConv2d(nn.Conv2d):
    """Conv2d whose weight is multiplied by a fixed causal mask inside the functional call.

    The mask is a buffer; the stored weight is never modified, so optimiser state, weight decay
    and checkpoints see the real parameters and the mask cannot be "forgotten" by a code path that
    bypasses ``forward``. Padding is "same" so the output is aligned with the input.
    """

    def __init__(
        self,
        mask_type: str,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        groups: int = 1,
        bias: bool = True,
    ) -> None:
        ks = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        super().__init__(in_channels, out_channels, ks, padding=(ks[0] // 2, ks[1] // 2), bias=bias)
        self.mask_type = mask_type
        self.register_buffer("mask", causal_mask(mask_type, in_channels, out_channels, ks, groups))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel_size == (1, 1) and x.shape[-2:] == (1, 1):
            # One pixel (cached sampling): a matrix product. On CPU, conv2d on a 1×1 map costs
            # ~100 µs a call, ~20× the product.
            return F.linear(x.flatten(1), self.masked_matrix(), self.bias)[:, :, None, None]
        plan = self._crop_plan() if _CROPPED else None
        if plan is not None:
            return cropped_conv(x, self.weight, self.bias, plan)
        return F.conv2d(x, self.weight * self.mask, self.bias, self.stride, self.padding)

    def _crop_plan(self) -> CropPlan | None:
        """The cropped form of this layer's mask, recomputed whenever the mask buffer changes.

        Keyed on the buffer's identity and version, so a test (or a user) that edits or replaces the
        mask gets the convolution that mask describes, leaks included (the audit relies on it).
        """
        if torch.compiler.is_compiling():  # traced graphs keep the plan of the eager warm-up call
            return getattr(self, "_crop", (None, None))[1]
        mask = self.mask
        try:
            version = mask._version
        except RuntimeError:  # an inference-mode tensor has no version counter and cannot change later
            version = -1
        key = (id(mask), mask.data_ptr(), version, self.stride, self.padding, self.dilation, self.groups)
        cached = getattr(self, "_crop", None)
        if cached is None or cached[0] != key:
            self._crop = (key, crop_plan(mask) if self._crop_pays() else None)
        return self._crop[1]

    def _crop_pays(self) -> bool:
        """Stride 1, no dilation, one weight group, "same" padding (what the plan assumes), and not a
        1×1 that narrows: on CPU (one thread, batch 16) a 256 -> 128 grouped 1×1 ran ~10% slower split
        into its R,G,B runs than as one masked GEMM; widening 1×1s and k×k kernels ran faster."""
        kh, kw = self.kernel_size
        plain = (
            self.stride == (1, 1) and self.dilation == (1, 1) and self.groups == 1
            and self.padding == (kh // 2, kw // 2) and kh % 2 == 1 and kw % 2 == 1
        )
        return plain and not (self.kernel_size == (1, 1) and self.out_channels < self.in_channels)

    def masked_matrix(self) -> torch.Tensor:
        """``weight * mask`` as an out × (in·kh·kw) matrix (computed once inside :func:`fixed_weights`)."""
        fixed = getattr(self, "_fixed_matrix", None)
        return fixed if fixed is not None else (self.weight * self.mask).flatten(1)

    def extra_repr(self) -> str:
        return f"mask={self.mask_type}, " + super().extra_repr()


# The cropped forward of masked convolutions (below) is on unless a test or a benchmark turns it off
# with :func:`masked_reference`: an internal choice, not a user setting (the outputs are the same).
_CROPPED = True


@dataclass(frozen=True)
class CropPlan:
    """A causal mask as the few dense pieces that have non-zero weights.

    The kernel centre is (``top``, ``left``) = (kh // 2, kw // 2). The rows above it (all taps
    visible) are one ``top × kw`` convolution over the input shifted down; the taps left of it in
    its row one ``1 × left`` convolution over the input shifted right; the centre tap a 1×1
    convolution in which output channels ``o0:o1`` read input channels ``:e`` (one run per R,G,B
    group, or per group of each gate block). ``centre_full``: every output reads every input at the
    centre (mask B with one group), so the centre joins the row convolution as its last column.
    """

    top: int
    left: int
    runs: tuple[tuple[int, int, int], ...]
    centre_full: bool


def crop_plan(mask: torch.Tensor) -> CropPlan | None:
    """The :class:`CropPlan` of an out × in × kh × kw 0/1 mask, or None if it is not raster-causal.

    Raster-causal: every tap above the centre row and left of the centre is 1, every tap after the
    centre is 0, and at the centre each output channel reads a prefix of the input channels (the
    contiguous channel groups of :func:`causal_mask` give exactly that). Anything else (an edited
    mask, say) is not cropped and runs as ``weight * mask``.
    """
    m = mask.detach().to("cpu", torch.float64)
    n_out, n_in, kh, kw = m.shape
    ch, cw = kh // 2, kw // 2
    before = torch.zeros(kh, kw, dtype=torch.bool)
    before[:ch] = True
    before[ch, :cw] = True
    after = ~before
    after[ch, cw] = False
    if not (bool((m[:, :, before] == 1).all()) and bool((m[:, :, after] == 0).all())):
        return None
    centre = m[:, :, ch, cw]
    if not bool(((centre == 0) | (centre == 1)).all()):
        return None
    ends = centre.sum(1).long()
    prefix = torch.arange(n_in)[None, :] < ends[:, None]
    if not torch.equal(centre.bool(), prefix):
        return None
    runs, o0 = [], 0
    for o in range(1, n_out + 1):
        if o == n_out or ends[o] != ends[o0]:
            runs.append((o0, o, int(ends[o0])))
            o0 = o
    full = all(e == n_in for _, _, e in runs)
    return CropPlan(ch, cw, tuple(runs), full)


def cropped_conv(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, plan: CropPlan
) -> torch.Tensor:
    """``F.conv2d(x, weight * mask, bias, padding="same")`` computed from the visible taps only.

    The weight is sliced, never copied into a new parameter: the k×k weight stays the layer's
    parameter (checkpoints and optimiser state are those of the masked layer), and the hidden taps
    get exactly zero gradient, as under the mask.
    """
    top, left = plan.top, plan.left
    parts = []
    if top:  # rows above: input shifted down by `top` rows (its last rows are never read)
        above = F.pad(x[..., : x.shape[-2] - 1, :], (left, left, top, 0))
        parts.append(F.conv2d(above, weight[:, :, :top], bias))
        bias = None
    row_taps = left + (1 if plan.centre_full else 0)
    if row_taps:  # same row, left of the centre (and the centre itself when it is unmasked)
        shift = 0 if plan.centre_full else 1
        row = F.pad(x[..., : x.shape[-1] - shift], (left, 0)) if left else x
        parts.append(F.conv2d(row, weight[:, :, top : top + 1, :row_taps], bias))
        bias = None
    if not plan.centre_full:
        parts.append(_centre(x, weight[:, :, top, left], bias, plan.runs))
    out = parts[0]
    for part in parts[1:]:
        out = out + part
    return out


def _centre(
    x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None, runs: tuple[tuple[int, int, int], ...]
) -> torch.Tensor:
    """The centre tap: output channels o0:o1 read input channels :e (a block-triangular 1×1)."""
    pieces = []
    for o0, o1, e in runs:
        b = None if bias is None else bias[o0:o1]
        if e == 0:
            piece = x.new_zeros(x.shape[0], o1 - o0, *x.shape[2:])
            pieces.append(piece if b is None else piece + b[:, None, None])
        else:
            pieces.append(F.conv2d(x[:, :e], w[o0:o1, :e, None, None], b))
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces, 1)


@contextmanager
def masked_reference() -> Iterator[None]:
    """Inside, masked convolutions run as ``conv(x, weight * mask)`` (the reference the cropped
    forward must match; for tests and before/after benchmarks)."""
    global _CROPPED
    old, _CROPPED = _CROPPED, False
    try:
        yield
    finally:
        _CROPPED = old


def scale_input(x: torch.Tensor, levels: int) -> torch.Tensor:
    """Map integer levels in [0, levels) to floats in [-1, 1] (the network's view of the image).

    A floating-point ``x`` holding level values keeps its dtype and its autograd graph: the causality
    audit feeds float64 levels that require grad and differentiates the logits with respect to them.
    """
    xf = x if x.is_floating_point() else x.float()
    return xf * (2.0 / (levels - 1)) - 1.0


@contextmanager
def fixed_weights(model: nn.Module) -> Iterator[None]:
    """Inside, every :class:`MaskedConv2d` of ``model`` computes ``weight * mask`` once, not per call.

    For cached sampling, which calls each masked layer once per pixel on one pixel, while the weights
    cannot change (no optimiser step runs inside ``sampling.sample``).
    """
    convs = [m for m in model.modules() if isinstance(m, MaskedConv2d)]
    with torch.no_grad():
        for conv in convs:
            conv._fixed_matrix = (conv.weight * conv.mask).flatten(1)
    try:
        yield
    finally:
        for conv in convs:
            conv._fixed_matrix = None
