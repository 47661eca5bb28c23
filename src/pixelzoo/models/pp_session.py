"""Cached sampling of PixelCNN++ in the Fast PixelCNN++ manner (Ramachandran et al. 2017).

Every activation of the network (each node of :meth:`PixelCNNPP.graph`, at every resolution) is kept
in a per-node cache. Each position of each node has a *ready step*: one more than the latest pixel (in
raster order) it depends on, found by running the graph once on dependency maps (a convolution's
output is ready when the latest input in its window is; zero padding is ready at step 0). Before
the call for pixel p every earlier pixel is final, so every position whose ready step is ≤ p can be
computed, and is computed exactly once, in graph order: full-resolution layers one position per
pixel, the strided layers (and the layers behind them) only when their input windows are complete.
The network's output at p is ready by step p (checked when the session is built: that is the
model's whole-pixel causality). The head turns the pixel's parameters into the exact conditional
of each channel given the channels already drawn (R, then G, then B). The convolutions are the
model's own weights applied to windows of the caches, so the logits equal the naive forward's up
to rounding and the same random stream draws the same images (tests/test_pixelcnn_pp.py).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from pixelzoo.nn import scale_input
from pixelzoo.nn.shifted_convs import ShiftedConv2d, ShiftedDeconv2d, concat_elu


@dataclass
class Node:
    """One activation map of the graph: its operation, inputs, cache and ready steps."""

    op: str
    inputs: tuple[Node, ...]
    ready: torch.Tensor  # long h×w
    channels: int
    module: Any = None
    extra: Any = None
    buf: torch.Tensor = field(default=None, repr=False)  # n×C×h×w


def _pad_ready(r: torch.Tensor, pad: tuple[int, int, int, int]) -> torch.Tensor:
    return F.pad(r[None, None].double(), pad)[0, 0]


class _Tracer:
    """An evaluator for :meth:`PixelCNNPP.graph` that records nodes and their ready steps."""

    def __init__(self, height: int, width: int, channels: int) -> None:
        self.h, self.w, self.c = height, width, channels
        self.nodes: list[Node] = []

    def _node(self, op: str, inputs: tuple[Node, ...], ready: torch.Tensor, channels: int, **kw: Any) -> Node:
        node = Node(op, inputs, ready.long(), channels, **kw)
        self.nodes.append(node)
        return node

    def input(self, x: Any, dtype: torch.dtype) -> Node:
        ready = torch.arange(1, self.h * self.w + 1).view(self.h, self.w)
        return self._node("input", (), ready, self.c + 1)

    def conv(self, m: nn.Module, a: Node) -> Node:
        if isinstance(m, ShiftedConv2d):
            conv = m.conv
            r = F.max_pool2d(_pad_ready(a.ready, m.pad)[None], conv.kernel_size, conv.stride)[0]
            return self._node("conv", (a,), r, conv.out_channels, module=m)
        if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1):
            return self._node("nin", (a,), a.ready, m.out_channels, module=m)
        raise TypeError(f"no cached form for {type(m).__name__}")

    def up(self, m: ShiftedDeconv2d, a: Node, like: Node) -> Node:
        h, w = like.ready.shape
        ready = self._deconv_ready(m, a.ready)[:h, :w]
        return self._node("deconv", (a,), ready, m.deconv.out_channels, module=m)

    @staticmethod
    def _deconv_ready(m: ShiftedDeconv2d, r: torch.Tensor) -> torch.Tensor:
        """Output (i, j) reads input row i // 2 and columns b with 0 <= j + offset − 2b < kw."""
        h, w = r.shape
        kw = m.kernel[1]
        out = torch.zeros(2 * h, 2 * w, dtype=torch.long)
        for j in range(2 * w):
            jj = j + m.col_offset
            cols = [b for b in range(w) if 0 <= jj - 2 * b < kw]
            out[:, j] = r[:, cols].amax(1).repeat_interleave(2)
        return out

    def shift(self, a: Node, rows: int, cols: int) -> Node:
        r = F.pad(a.ready, (cols, 0, rows, 0))[: a.ready.shape[0], : a.ready.shape[1]]
        return self._node("shift", (a,), r, a.channels, extra=(rows, cols))

    def celu(self, a: Node) -> Node:
        return self._node("celu", (a,), a.ready, 2 * a.channels)

    def elu(self, a: Node) -> Node:
        return self._node("elu", (a,), a.ready, a.channels)

    def add(self, a: Node, b: Node) -> Node:
        return self._node("add", (a, b), torch.maximum(a.ready, b.ready), a.channels)

    def cat(self, a: Node, b: Node) -> Node:
        return self._node("cat", (a, b), torch.maximum(a.ready, b.ready), a.channels + b.channels)

    def gate(self, a: Node) -> Node:
        return self._node("gate", (a,), a.ready, a.channels // 2)

    def drop(self, m: nn.Dropout, a: Node) -> Node:
        if m.training:
            raise RuntimeError("cached sampling needs the model in eval mode (dropout is not position-wise)")
        return a  # identity in eval mode

    def bias(self, cond: nn.Module, y: torch.Tensor, a: Node) -> Node:
        return self._node("bias", (a,), a.ready, a.channels, module=cond)


def _window(buf: torch.Tensor, r0: int, r1: int, c0: int, c1: int) -> torch.Tensor:
    """buf[:, :, r0:r1, c0:c1] with zeros where the window leaves the map."""
    h, w = buf.shape[2:]
    part = buf[:, :, max(r0, 0) : min(r1, h), max(c0, 0) : min(c1, w)]
    pad = (max(0, -c0), max(0, c1 - w), max(0, -r0), max(0, r1 - h))
    return F.pad(part, pad) if any(pad) else part


class PixelCNNPPSession:
    """``logits(c, i, j)``: the exact conditional of sub-pixel (c, i, j); caches computed up to i·W+j."""

    tracer_class = _Tracer  # a model with more operations (PixelSNAIL's attention) brings a subclass

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor | None) -> None:
        if model.training:
            raise RuntimeError("cached sampling needs the model in eval mode (call model.eval())")
        if x.dim() != 4 or x.dtype != torch.long:
            raise ValueError(f"x must be a LongTensor n×C×H×W of levels, got {x.dtype} {tuple(x.shape)}")
        if model.n_classes and y is None:
            raise ValueError("this model is class-conditional (n_classes set): pass y")
        self.m, self.x, self.y = model, x, y
        self.n, self.channels, self.height, self.width = x.shape
        tracer = self.tracer_class(self.height, self.width, self.channels)
        self.out = model.graph(tracer, None, y)
        self.nodes = tracer.nodes
        hw = self.height * self.width
        late = self.out.ready.reshape(-1) > torch.arange(hw)
        if late.any():  # the network's output at p would need pixel p or later: not causal
            raise RuntimeError(f"the network output at pixel {int(late.nonzero()[0])} depends on that pixel "
                               "or a later one: the model is not causal, it cannot be sampled")
        dtype, device = model.nin_out.weight.dtype, model.nin_out.weight.device
        for node in self.nodes:
            hh, ww = node.ready.shape
            node.buf = torch.zeros(self.n, node.channels, hh, ww, dtype=dtype, device=device)
            if node.op == "bias":
                node.extra = node.module(y).to(dtype)[:, :, 0, 0, None]  # n×C×1: constant per image
        self.schedule = self._schedule(hw)
        self.done = -1  # steps [0, done] computed
        self.last = (-1, -1)

    def _schedule(self, hw: int) -> list[list[tuple[Node, int, int, int]]]:
        """Per step, in graph order: (node, row, first column, end column) runs of newly ready positions."""
        steps: list[list[tuple[Node, int, int, int]]] = [[] for _ in range(hw + 1)]
        for node in self.nodes:
            runs: dict[int, list[tuple[int, int]]] = defaultdict(list)
            for (i, j), s in zip(torch.cartesian_prod(torch.arange(node.ready.shape[0]),
                                                      torch.arange(node.ready.shape[1])).tolist(),
                                 node.ready.reshape(-1).tolist(), strict=True):
                if s > hw - 1:
                    continue  # only needed after the last pixel: never
                rs = runs[s]
                if rs and rs[-1][0] == i and rs[-1][1] + 1 == j:
                    rs[-1] = (i, j)
                    steps[s][-1] = (node, i, steps[s][-1][2], j + 1)
                else:
                    rs.append((i, j))
                    steps[s].append((node, i, j, j + 1))
        return steps

    def _run(self, node: Node, i: int, c0: int, c1: int) -> None:
        op, ins = node.op, node.inputs
        if op == "input":
            xs = scale_input(self.x[:, :, i, c0:c1], self.m.levels).to(node.buf.dtype)
            node.buf[:, : self.channels, i, c0:c1] = xs
            node.buf[:, self.channels, i, c0:c1] = 1.0
            return
        if op == "conv":
            conv = node.module.conv
            left, _, top, _ = node.module.pad
            (kh, kw), (s, _) = conv.kernel_size, conv.stride
            win = _window(ins[0].buf, s * i - top, s * i - top + kh, s * c0 - left, s * (c1 - 1) - left + kw)
            val = F.conv2d(win, conv.weight, conv.bias, stride=s)[:, :, 0]
        elif op == "deconv":
            m = node.module
            a, kw = i // 2, m.kernel[1]
            lo, hi = c0 + m.col_offset, c1 - 1 + m.col_offset  # uncropped output columns
            b0, b1 = max(0, -(-(lo - kw + 1) // 2)), min(ins[0].buf.shape[3] - 1, hi // 2)
            local = F.conv_transpose2d(ins[0].buf[:, :, a : a + 1, b0 : b1 + 1], m.deconv.weight,
                                       m.deconv.bias, stride=2)
            val = local[:, :, i - 2 * a, lo - 2 * b0 : hi - 2 * b0 + 1]
        elif op == "nin":
            v = ins[0].buf[:, :, i, c0:c1]
            val = torch.einsum("oc,ncl->nol", node.module.weight[:, :, 0, 0], v) + node.module.bias[:, None]
        elif op == "shift":
            rows, cols = node.extra
            val = _window(ins[0].buf, i - rows, i - rows + 1, c0 - cols, c1 - cols)[:, :, 0]
        else:
            v = ins[0].buf[:, :, i, c0:c1]
            if op == "celu":
                val = concat_elu(v)
            elif op == "elu":
                val = F.elu(v)
            elif op == "add":
                val = v + ins[1].buf[:, :, i, c0:c1]
            elif op == "cat":
                val = torch.cat([v, ins[1].buf[:, :, i, c0:c1]], dim=1)
            elif op == "gate":
                a, b = v.chunk(2, dim=1)
                val = a * torch.sigmoid(b)
            elif op == "bias":
                val = v + node.extra
            else:
                raise AssertionError(op)
        node.buf[:, :, i, c0:c1] = val

    def logits(self, c: int, i: int, j: int) -> torch.Tensor:
        """n×K log-probabilities of sub-pixel (c, i, j) given the current ``x``."""
        p = i * self.width + j
        if (p, c) <= self.last:
            raise ValueError(f"sub-pixel (c={c}, i={i}, j={j}) requested after (c={self.last[1]}, raster "
                             f"pixel {self.last[0]}): calls must follow the generation order")
        with parametrize.cached():  # weight-normalised layers: each weight once per call, not per run
            for s in range(self.done + 1, p + 1):  # every pixel before p is final now
                for node, row, c0, c1 in self.schedule[s]:
                    self._run(node, row, c0, c1)
        self.done = max(self.done, p)
        self.last = (p, c)
        return self.pixel_logits(self.out.buf[:, :, i, j], self.x[:, :, i, j], c)

    def pixel_logits(self, params: torch.Tensor, xpix: torch.Tensor, c: int) -> torch.Tensor:
        """n×K log-probabilities of channel c from the network's n×P output at the pixel."""
        return self.m.likelihood_head.pixel_logits(params, xpix, c)
