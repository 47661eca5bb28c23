"""Cached sampling sessions of the convolutional models (PixelCNN, Gated PixelCNN, seed-004 PixelCNN).

Each session evaluates its model at one pixel per call, reading the caches of earlier pixels (see
:mod:`pixelzoo.nn.incremental`), and gives the same logits as ``model(x, y)[:, :, c, i, j]`` up to
rounding. Per call every layer runs at the current pixel only; the Gated PixelCNN's vertical stack
runs once per row, when the row above is complete. The input window of ``x`` is re-read at every
call, since the sampler writes ``x`` in place. Class biases are constant per image: computed once.
"""

from __future__ import annotations

import torch
from torch import nn

from pixelzoo.nn.gated import gate
from pixelzoo.nn.incremental import ConvCache, PointConv, RasterSession, point_layers
from pixelzoo.nn.masks import scale_input


def _class_biases(conds: list[nn.Module | None], y: torch.Tensor | None) -> list[torch.Tensor | None]:
    """Per-layer class bias vectors n×C; None where the layer or the call is unconditional."""
    return [None if cond is None or y is None else cond(y)[:, :, 0, 0] for cond in conds]


class _InputWindow:
    """The image, scaled to [-1, 1], as the cached input of a mask-A convolution."""

    def __init__(self, session: RasterSession, conv: nn.Conv2d, levels: int) -> None:
        self.session, self.levels = session, levels
        s = session
        self.cache = ConvCache(conv, s.n, s.height, s.width)
        self.rows = self.cache.top  # rows above the current one that the kernel reads

    def at(self, i: int, j: int) -> torch.Tensor:
        i0 = max(0, i - self.rows)
        x = self.session.x[:, :, i0 : i + 1]
        self.cache.put_rows(i0, scale_input(x, self.levels).to(self.cache.buf.dtype))
        return self.cache.at(i, j)


class PixelCNNSession(RasterSession):
    """:class:`pixelzoo.models.pixelcnn.PixelCNN`: the 3×3 convolution of every block is cached."""

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor | None) -> None:
        super().__init__(model, x)
        self.m = model
        self.inp = _InputWindow(self, model.inp, model.levels)
        nets = [block.net for block in model.blocks]  # ReLU, 1×1, ReLU, 3×3, ReLU, 1×1
        self.before = [point_layers(net[:3]) for net in nets]
        self.conv3 = [ConvCache(net[3], self.n, self.height, self.width) for net in nets]
        self.after = [point_layers(net[4:]) for net in nets]
        self.skips = [PointConv(s) for s in model.skips] if model.skip else None
        self.bias = _class_biases(list(model.cond or [None] * len(nets)), y)
        self.head = point_layers(model.head.net)

    def pixel(self, i: int, j: int) -> torch.Tensor:
        m = self.m
        h = self.inp.at(i, j)
        out = self.skips[0](h) if self.skips else None
        for b, cache in enumerate(self.conv3):
            cache.put(i, j, self.before[b](h))
            r = self.after[b](cache.at(i, j))
            if self.bias[b] is not None:
                r = r + self.bias[b]
            h = h + r if m.residual else r
            if self.skips:
                out = out + self.skips[b + 1](h)
        return self.head(out if self.skips else h).view(self.n, self.channels, -1)


class GatedPixelCNNSession(RasterSession):
    """:class:`pixelzoo.models.gated_pixelcnn.GatedPixelCNN`: vertical stack per row, horizontal per pixel."""

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor | None) -> None:
        super().__init__(model, x)
        self.m, n, hgt, wid = model, self.n, self.height, self.width
        layers = list(model.layers)
        # Vertical input of layer L (the image for L = 0), padded as GatedLayer pads it: k//2 on top.
        self.v_in = [ConvCache(la.v_conv, n, hgt, wid, pad=(la.pad, 0, la.pad, la.pad)) for la in layers]
        self.h_in = [ConvCache(la.h_conv, n, hgt, wid) for la in layers]
        # link(down_shift(v_pre)) per layer and row; row 0 sees the zero row, i.e. the link's bias.
        w = layers[0].link.weight
        self.link = [w.new_zeros(n, w.shape[0], hgt, wid) + la.link.bias[:, None, None] for la in layers]
        self.link_1x1 = [PointConv(la.link) for la in layers]
        self.h_out = [PointConv(la.h_out) for la in layers]
        self.v_bias = _class_biases([la.v_cond for la in layers], y)
        self.h_bias = _class_biases([la.h_cond for la in layers], y)
        self.skips = [PointConv(s) for s in model.skips] if model.skip else None
        self.head = point_layers(model.head.net)
        self.rows_done = 0  # vertical stack computed for rows [0, rows_done)

    def _vertical_row(self, r: int) -> None:
        """Vertical stack over (complete) row r: the link term of row r+1 and the next layers' input."""
        xs = scale_input(self.x[:, :, r : r + 1], self.m.levels).to(self.v_in[0].buf.dtype)
        self.v_in[0].put_rows(r, xs)
        for L, cache in enumerate(self.v_in):
            v_pre = cache.row(r)  # n×2h×W
            if r + 1 < self.height:
                self.link[L][:, :, r + 1] = self.link_1x1[L].along(v_pre)
            if self.v_bias[L] is not None:
                v_pre = v_pre + self.v_bias[L][:, :, None]
            if L + 1 < len(self.v_in):
                self.v_in[L + 1].put_rows(r, gate(v_pre)[:, :, None])

    def pixel(self, i: int, j: int) -> torch.Tensor:
        while self.rows_done < i:  # rows above i are complete whenever a call reaches row i
            self._vertical_row(self.rows_done)
            self.rows_done += 1
        xs = scale_input(self.x[:, :, i : i + 1], self.m.levels).to(self.h_in[0].buf.dtype)
        self.h_in[0].put_rows(i, xs)
        h = xs[:, :, 0, j]
        out = None
        for L, cache in enumerate(self.h_in):
            pre = cache.at(i, j) + self.link[L][:, :, i, j]
            if self.h_bias[L] is not None:
                pre = pre + self.h_bias[L]
            gated = gate(pre)
            res = self.h_out[L](gated)
            h = h + res if self.m.residual and L > 0 else res
            if L + 1 < len(self.h_in):
                self.h_in[L + 1].put(i, j, h)
            if self.skips:
                s = self.skips[L](gated)
                out = s if out is None else out + s
        return self.head(out if self.skips else h).view(self.n, self.channels, -1)


class Seed004Session(RasterSession):
    """:class:`pixelzoo.models.seed004.Seed004PixelCNN`: the 3×3 gated convolution of every block is cached.

    The U-Net shortcuts are 1×1 (same position); the border term (a convolution of a ones map) does
    not depend on pixels and is computed once; eval-mode BatchNorm is a per-channel affine.
    """

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor | None) -> None:
        super().__init__(model, x)
        self.m = model
        self.inp = _InputWindow(self, model.inp, model.levels)
        w = model.border.weight
        self.border = model.border(w.new_ones(1, 1, self.height, self.width))[0]  # C×H×W
        self.inp_post = point_layers(model.inp_post)
        blocks = list(model.up) + list(model.down)
        self.conv = [ConvCache(b.conv, self.n, self.height, self.width) for b in blocks]
        self.aux = [point_layers(b.aux) if b.aux is not None else None for b in blocks]
        self.norm = [point_layers([b.norm]) for b in blocks]
        self.bias = _class_biases([b.cond for b in blocks], y)
        self.out = point_layers(model.out)

    def _block(self, b: int, i: int, j: int, h: torch.Tensor, aux: torch.Tensor | None) -> torch.Tensor:
        self.conv[b].put(i, j, h)
        pre = self.conv[b].at(i, j)
        if self.aux[b] is not None:
            pre = (pre + self.aux[b](aux)) / 2
        if self.bias[b] is not None:
            pre = pre + self.bias[b]
        return h + self.norm[b](gate(pre))

    def pixel(self, i: int, j: int) -> torch.Tensor:
        h = self.inp_post(self.inp.at(i, j) + self.border[:, i, j])
        n_up = len(self.m.up)
        features = [h]
        for b in range(n_up):
            h = self._block(b, i, j, h, None)
            features.append(h)
        for b in range(n_up, len(self.conv)):
            h = self._block(b, i, j, h, features.pop())
        return self.out(h).view(self.n, self.channels, -1)
