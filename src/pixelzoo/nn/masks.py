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
        if isinstance(plan, CropPlan):
            return cropped_conv(x, self.weight, self.mask, self.bias, plan)
        if (isinstance(plan, PrefixPlan) and x.is_contiguous(memory_format=torch.channels_last)
                and not torch.compiler.is_compiling() and not torch.is_autocast_enabled(x.device.type)):
            # (autocast does not reach the hand-written backward: bf16/fp16 keep weight * mask)
            return _PrefixConv.apply(x, self.weight, self.mask, self.bias, plan)
        return F.conv2d(x, self.weight * self.mask, self.bias, self.stride, self.padding)

    def _crop_plan(self) -> CropPlan | PrefixPlan | None:
        """The cropped form of this layer's mask (k×k: :class:`CropPlan`; 1×1: :class:`PrefixPlan`),
        recomputed whenever the mask buffer changes.

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
            self._crop = (key, self._plan_of(mask))
        return self._crop[1]

    def _plan_of(self, mask: torch.Tensor) -> CropPlan | PrefixPlan | None:
        """Plans assume stride 1, no dilation, one weight group and "same" padding (odd kernels)."""
        kh, kw = self.kernel_size
        if not (self.stride == (1, 1) and self.dilation == (1, 1) and self.groups == 1
                and self.padding == (kh // 2, kw // 2) and kh % 2 == 1 and kw % 2 == 1):
            return None
        return prefix_plan(mask) if (kh, kw) == (1, 1) else crop_plan(mask)

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
    """A raster-causal k×k mask as the part that can have non-zero weights.

    The kernel centre is (``top``, ``left``) = (kh // 2, kw // 2). Every tap below the centre row is
    hidden, so the layer is one ``(top + 1) × kw`` convolution over the input padded ``top`` rows at
    the top only, its half kernel still multiplied by the mask (the taps right of the centre and the
    channel groups at the centre: a few hidden taps cost less than a second convolution call). A 1×k
    row kernel (``top == 0``) is a ``1 × (left + 1)`` convolution over the input padded on the left.
    """

    top: int
    left: int


def crop_plan(mask: torch.Tensor) -> CropPlan | None:
    """The :class:`CropPlan` of an out × in × kh × kw 0/1 mask, or None if it is not raster-causal.

    Raster-causal: no tap below the centre row is visible (and for a 1×k row kernel, none right of
    the centre). Anything else (an edited mask, say) is not
    cropped and runs as ``weight * mask``; the rest of the mask is applied as it is, so an edited tap in
    or above the centre row still leaks (the audit's planted leaks rely on that).
    """
    top, left = mask.shape[-2] // 2, mask.shape[-1] // 2
    hidden = mask[:, :, top + 1 :] if top else mask[..., left + 1 :]
    if bool(hidden.detach().any()):
        return None
    return CropPlan(top, left)


def cropped_conv(
    x: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor, bias: torch.Tensor | None, plan: CropPlan
) -> torch.Tensor:
    """``F.conv2d(x, weight * mask, bias, padding="same")`` without the hidden rows below the centre.

    The weight is sliced, never copied into a new parameter: the k×k weight stays the layer's
    parameter (checkpoints and optimiser state are those of the masked layer), and the hidden taps
    get exactly zero gradient, as under the mask.
    """
    top, left = plan.top, plan.left
    if top == 0:  # a 1×k row kernel: the taps right of the centre go
        return F.conv2d(F.pad(x, (left, 0)), weight[..., : left + 1] * mask[..., : left + 1], bias)
    half = weight[:, :, : top + 1] * mask[:, :, : top + 1]
    return F.conv2d(F.pad(x, (left, left, top, 0)), half, bias)


# A 1×1's colour-group runs pay as separate products only when each is wide: PixelCNN's CIFAR head
# (1024→768, runs of 256; 256→1024, runs of 341) ran 1.27× and 1.15× faster forward + backward, its
# 256→256 skips (runs of ~85) 0.70× (one thread, batch 16; benchmarks/README.md).
PREFIX_MIN_RUN = 256


@dataclass(frozen=True)
class PrefixPlan:
    """A 1×1 mask in which each output run reads a prefix of the inputs: with R,G,B groups (mask B) the R
    outputs read the R inputs, G reads R and G, B reads all. ``runs``: (first output, end, inputs read).
    The products skip the hidden third of the weight (the block triangle above the diagonal)."""

    runs: tuple[tuple[int, int, int], ...]


def prefix_plan(mask: torch.Tensor, min_run: int | None = None) -> PrefixPlan | None:
    """The :class:`PrefixPlan` of an out × in × 1 × 1 0/1 mask, or None: not prefix-shaped (an edited
    mask, say: it then runs as ``weight * mask``), or a run narrower than ``min_run`` outputs
    (:data:`PREFIX_MIN_RUN` if None)."""
    m = mask.detach()[:, :, 0, 0] != 0
    reads = m.sum(1)
    prefix = torch.arange(m.shape[1], device=m.device)[None, :] < reads[:, None]
    if not torch.equal(m, prefix):
        return None
    bounds = [0] + [o for o in range(1, len(reads)) if reads[o] != reads[o - 1]] + [len(reads)]
    runs = tuple((a, b, int(reads[a])) for a, b in zip(bounds, bounds[1:], strict=False))
    wide = min(b - a for a, b, _ in runs) >= (PREFIX_MIN_RUN if min_run is None else min_run)
    return PrefixPlan(runs) if len(runs) > 1 and wide else None


class _PrefixConv(torch.autograd.Function):
    """``F.conv2d(x, weight * mask, bias)`` for a 1×1 with a :class:`PrefixPlan`, on channels-last maps:
    one product per run, over the inputs it reads. The gradients are those of the masked layer: hidden
    weights get exactly zero, and the input gradient sums each run's share."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor,  # noqa: ANN001
                bias: torch.Tensor | None, plan: PrefixPlan) -> torch.Tensor:
        w = weight * mask
        outs = []
        for a, b, reads in plan.runs:
            part_bias = None if bias is None else bias[a:b]
            if reads == 0:  # mask A's first group sees no input at the centre
                shape = (x.shape[0], b - a, *x.shape[2:])
                zero = x.new_zeros(shape).contiguous(memory_format=torch.channels_last)
                outs.append(zero if part_bias is None else zero + part_bias[:, None, None])
            else:
                outs.append(F.conv2d(x[:, :reads], w[a:b, :reads], part_bias))
        ctx.save_for_backward(x, w)
        ctx.plan, ctx.has_bias = plan, bias is not None
        return torch.cat(outs, 1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # noqa: ANN001
        x, w = ctx.saved_tensors
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_x, grad_w = None, torch.zeros_like(w) if need_w else None
        for a, b, reads in sorted(ctx.plan.runs, key=lambda run: -run[2]):  # the widest read first
            if reads == 0:
                continue
            gx, gw, _ = torch.ops.aten.convolution_backward(
                grad[:, a:b].contiguous(memory_format=torch.channels_last), x[:, :reads], w[a:b, :reads],
                None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1, [need_x, need_w, False])
            if need_w:
                grad_w[a:b, :reads] = gw
            if need_x and grad_x is None and reads == x.shape[1]:
                grad_x = gx  # the run that reads every input: the first value, no zero fill
            elif need_x:
                if grad_x is None:
                    grad_x = torch.zeros_like(x, memory_format=torch.channels_last)
                grad_x[:, :reads] += gx
        grad_bias = grad.sum((0, 2, 3)) if ctx.has_bias and ctx.needs_input_grad[3] else None
        return grad_x, grad_w, None, grad_bias, None


@contextmanager
def masked_reference() -> Iterator[None]:
    """Inside, masked convolutions run as ``conv(x, weight * mask)`` on NCHW maps (the reference the
    cropped, channels-last forward must match; for tests and before/after benchmarks)."""
    global _CROPPED
    old, _CROPPED = _CROPPED, False
    try:
        yield
    finally:
        _CROPPED = old


def network_input(x: torch.Tensor, levels: int, dtype: torch.dtype) -> torch.Tensor:
    """:func:`scale_input` in ``dtype``, laid out channels-last for the convolution stacks.

    Channels-last runs the masked (cropped) convolutions and the 1×1s that dominate PixelCNN's step
    faster on CPU (one thread, CIFAR paper size, batch 16: 1.2-1.4× a training step, benchmarks/README.md)
    and is the layout tensor-core kernels want on a GPU; every later map inherits it. Same values, another
    summation order. Inside :func:`masked_reference` the input stays NCHW (the "before" of the benchmark).
    """
    xs = scale_input(x, levels).to(dtype)
    return xs.contiguous(memory_format=torch.channels_last) if _CROPPED else xs


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
