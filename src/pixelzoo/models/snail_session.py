"""Cached sampling of PixelSNAIL: the PixelCNN++ session (:mod:`pixelzoo.models.pp_session`) plus attention.

The session replays :meth:`PixelSNAIL.graph` position by position with one cache per node, each
position computed once, as soon as the pixels it depends on are final. The attention's key and value
maps are ordinary nodes, so their caches are the key/value cache: when pixel p is due, the keys and
values of every pixel the query may read are already computed, and the query attends over exactly
those (one query against the cached rows, ``scaled_dot_product_attention`` as in the forward; no
allowed key: zero output, as the forward). The ready step of an attention output is found from the
module's own mask (the latest allowed key's ready step), so a mask that lets a query see its own pixel
makes the network output late and the session refuses the model as not causal.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pixelzoo.models.pp_session import Node, PixelCNNPPSession, _Tracer
from pixelzoo.nn.attention import CausalAttention, background


class _SnailTracer(_Tracer):
    """The PixelCNN++ tracer with the ops PixelSNAIL adds (slices, position channels, attention)."""

    def narrow(self, a: Node, start: int, length: int) -> Node:
        return self._node("narrow", (a,), a.ready, length, extra=(start, length))

    def background(self, a: Node) -> Node:
        return self._node("background", (), torch.zeros_like(a.ready), 2)  # constant: ready at once

    def attend(self, m: CausalAttention, q: Node, k: Node, v: Node) -> Node:
        hw = self.h * self.w
        kv = torch.maximum(k.ready, v.ready).reshape(1, hw).expand(hw, hw)
        reach = torch.where(m.mask(hw), kv, torch.zeros_like(kv)).amax(1).view(self.h, self.w)
        return self._node("attn", (q, k, v), torch.maximum(q.ready, reach), v.channels, module=m)


class PixelSNAILSession(PixelCNNPPSession):
    """``logits(c, i, j)``: the exact conditional of sub-pixel (c, i, j), caches filled up to i·W + j."""

    tracer_class = _SnailTracer

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor | None) -> None:
        super().__init__(model, x, y)
        hw = self.height * self.width
        self.allowed: dict[int, torch.Tensor] = {}
        for node in self.nodes:
            if node.op == "background":
                node.buf.copy_(background(self.height, self.width, node.buf.dtype, node.buf.device)
                               .expand_as(node.buf))
            elif node.op == "attn" and id(node.module) not in self.allowed:
                self.allowed[id(node.module)] = node.module.mask(hw)

    def _run(self, node: Node, i: int, c0: int, c1: int) -> None:
        if node.op == "background":
            return  # filled once when the session is built
        if node.op == "narrow":
            start, length = node.extra
            node.buf[:, :, i, c0:c1] = node.inputs[0].buf[:, start : start + length, i, c0:c1]
        elif node.op == "attn":
            for j in range(c0, c1):
                node.buf[:, :, i, j] = self._attend(node, i * self.width + j)
        else:
            super()._run(node, i, c0, c1)

    def _attend(self, node: Node, p: int) -> torch.Tensor:
        """n×V: the query of pixel p against the cached keys and values it may read."""
        m: CausalAttention = node.module
        q, k, v = (inp.buf.flatten(2) for inp in node.inputs)
        keys = self.allowed[id(m)][p].nonzero().squeeze(1)
        if keys.numel() == 0:
            return torch.zeros_like(v[:, :, p])
        qs = m.split(q[:, :, p : p + 1])  # n×h×1×d
        out = F.scaled_dot_product_attention(qs, m.split(k[:, :, keys]), m.split(v[:, :, keys]))
        return out.transpose(2, 3).reshape(v.shape[0], -1)

    def pixel_logits(self, params: torch.Tensor, xpix: torch.Tensor, c: int) -> torch.Tensor:
        if hasattr(self.m, "likelihood_head"):
            return super().pixel_logits(params, xpix, c)
        return params.view(params.shape[0], self.m.levels, self.channels)[:, :, c]  # categorical logits
