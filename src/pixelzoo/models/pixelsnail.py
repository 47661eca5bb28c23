"""PixelSNAIL (Chen, Mishra, Rohaninejad & Abbeel, ICML 2018, "PixelSNAIL: An Improved Autoregressive
Generative Model"): causal convolutions interleaved with causal self-attention over every earlier pixel.

The layout follows the public reference (neocxi/pixelsnail-public, ``model.py``
``_base_noup_smallkey_spec``, the ``h12_noup_smallkey`` model of the CIFAR-10 command):

- One "up and to the left" stream of PixelCNN++ gated ResNet blocks (:class:`GatedResNet`, imported)
  over 2×2 down-right-shifted convolutions, started as PixelCNN++ starts its ul stream (a down-shifted
  1×3 plus a right-shifted 2×1 convolution of the image and a channel of ones). There is no u stream.
- ``attn_blocks`` times: ``nr_resnet`` gated blocks, then one causal attention block. Keys and values
  come from a 1×1 gated block over concat(image, ul, background), queries from one over
  concat(ul, background); background = the (row, column) position channels (i − H/2)/H, (j − W/2)/W.
  The attention's output enters a last 1×1 gated block as its skip input.
- The causal mask excludes the query's own pixel: the keys and values of pixel j read the raw image at
  j, so query i attends to j < i only (strictly lower-triangular, raster order). The first pixel attends
  to nothing and its attention output is 0 (the reference divides by Σ + 1e-6 and gets 0; here the
  fully masked row is set to zero explicitly, since ``scaled_dot_product_attention`` would give NaN).
- Output: ``elu`` then a 1×1 convolution to the head's parameters: the discretized logistic mixture of
  PixelCNN++ (whole pixels, R→G→B coupling) by default, the categorical head for binarized one-channel
  data (``head="auto"``: categorical when K = 2 and C = 1).
- Class conditioning (``n_classes``): a learned per-block bias on every gated block's gate (the
  reference's ``h`` reaches every ``gated_resnet``).

Defaults = the CIFAR-10 model: 12 attention blocks, 256 filters, 10 mixture components, key (and query)
size 16, values of 256 / 2 = 128 channels, one head (the reference's ``causal_attention`` is single-head;
``heads`` > 1 splits keys and values into heads), dropout 0.5. ``nr_resnet`` = 4: the CIFAR command does
not set it, so train.py's default applies (the spec function's own default, 5, is never used there).
Deviations, stated: the non-linearity in every block is concat_elu (the spec's default; train.py's
``--resnet_nonlinearity`` default is "elu" and we have not confirmed that it reaches the spec), and
weight normalisation with data-dependent init is not implemented (as in our PixelCNN++).

The forward is written once against an evaluator (the PixelCNN++ :class:`FullEval`, plus the
attention, the background and channel slices); the cached sampler (:mod:`pixelzoo.models.snail_session`)
replays the same graph position by position, the key/value maps acting as the attention's cache.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pixelzoo.likelihood import DiscretizedLogisticMixture
from pixelzoo.models.pixelcnn_pp import FullEval, GatedResNet
from pixelzoo.models.registry import register
from pixelzoo.nn.attention import CausalAttention, background
from pixelzoo.nn.shifted_convs import ShiftedConv2d

HEADS = ("auto", "mixture", "categorical")


class NinGatedResNet(GatedResNet):
    """The PixelCNN++ gated block with 1×1 convolutions (position-wise) and a skip input of any width."""

    def __init__(self, channels: int, skip_channels: int, dropout: float, n_classes: int | None) -> None:
        super().__init__(channels, "down_right", 0, dropout, n_classes)
        self.conv_in = nn.Conv2d(2 * channels, channels, 1)
        self.conv_out = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.nin_skip = nn.Conv2d(2 * skip_channels, channels, 1) if skip_channels else None


class AttentionBlock(nn.Module):
    """``nr_resnet`` down-right gated blocks, then causal attention mixed back in by a 1×1 gated block."""

    def __init__(
        self, channels: int, filters: int, nr_resnet: int, key_size: int, heads: int, dropout: float,
        n_classes: int | None,
    ) -> None:
        super().__init__()
        f, self.key_size, self.values = filters, key_size, filters // 2
        self.res = nn.ModuleList(
            GatedResNet(f, "down_right", 0, dropout, n_classes) for _ in range(nr_resnet)
        )
        self.kv_res = NinGatedResNet(channels + f + 2, 0, dropout, n_classes)
        self.kv_out = nn.Conv2d(channels + f + 2, key_size + self.values, 1)
        self.q_res = NinGatedResNet(f + 2, 0, dropout, n_classes)
        self.q_out = nn.Conv2d(f + 2, key_size, 1)
        self.attn = CausalAttention(heads)
        self.out_res = NinGatedResNet(f, self.values, dropout, n_classes)

    def run(self, ev: Any, ul: Any, image: Any, bg: Any, y: torch.Tensor | None) -> Any:
        for block in self.res:
            ul = block.run(ev, ul, None, y)
        kv = ev.conv(self.kv_out, self.kv_res.run(ev, ev.cat(ev.cat(image, ul), bg), None, y))
        q = ev.conv(self.q_out, self.q_res.run(ev, ev.cat(ul, bg), None, y))
        key, value = ev.narrow(kv, 0, self.key_size), ev.narrow(kv, self.key_size, self.values)
        return self.out_res.run(ev, ul, ev.attend(self.attn, q, key, value), y)


class SnailEval(FullEval):
    """The whole-map evaluator, plus the ops PixelSNAIL adds to the PixelCNN++ graph."""

    def narrow(self, h: torch.Tensor, start: int, length: int) -> torch.Tensor:
        return h[:, start : start + length]

    def background(self, h: torch.Tensor) -> torch.Tensor:
        bg = background(h.shape[2], h.shape[3], h.dtype, h.device, self.monotone)
        return bg.expand(h.shape[0], -1, -1, -1)

    def attend(self, m: CausalAttention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return m(q, k, v)


class PixelSNAIL(nn.Module):
    """model(x, y=None) -> mixture parameters B×P×H×W, or logits B×K×1×H×W (see ``likelihood_head``)."""

    def __init__(
        self, channels: int, levels: int, head: str, attn_blocks: int, nr_resnet: int, filters: int,
        n_mix: int, key_size: int, heads: int, dropout: float, n_classes: int | None,
    ) -> None:
        super().__init__()
        self.channels, self.levels, self.n_classes = channels, levels, n_classes
        if head == "mixture":
            self.likelihood_head = DiscretizedLogisticMixture(levels, channels, n_mix)
            n_out = self.likelihood_head.params
        else:  # categorical: K logits per (single) channel, the default head of the zoo
            n_out = levels * channels
        c_in, f = channels + 1, filters
        self.ul_init = nn.ModuleList([ShiftedConv2d(c_in, f, (1, 3), "down"),
                                      ShiftedConv2d(c_in, f, (2, 1), "down_right")])
        self.blocks = nn.ModuleList(
            AttentionBlock(channels, f, nr_resnet, key_size, heads, dropout, n_classes)
            for _ in range(attn_blocks)
        )
        self.nin_out = nn.Conv2d(f, n_out, 1)
        self.monotone = False

    def monotone_(self) -> None:
        """For the structural audit: positive slopes everywhere (concat_elu, attention, background)."""
        self.monotone = True
        for block in self.blocks:
            block.attn.monotone = True

    def graph(self, ev: Any, x: Any, y: torch.Tensor | None) -> Any:
        """The network on evaluator ``ev`` (whole maps, or position by position in the cached sampler)."""
        h = ev.input(x, self.nin_out.weight.dtype)
        image, bg = ev.narrow(h, 0, self.channels), ev.background(h)
        above = ev.shift(ev.conv(self.ul_init[0], h), 1, 0)
        ul = ev.add(above, ev.shift(ev.conv(self.ul_init[1], h), 0, 1))
        for block in self.blocks:
            ul = block.run(ev, ul, image, bg, y)
        return ev.conv(self.nin_out, ev.elu(ul))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.n_classes and y is None:  # conditional: never silently unconditional
            raise ValueError("this model is class-conditional (n_classes set): pass y")
        out = self.graph(SnailEval(self.levels, self.monotone), x, y)
        if hasattr(self, "likelihood_head"):
            return out
        b, _, h, w = out.shape
        return out.view(b, self.levels, self.channels, h, w)

    def sampling_session(self, x: torch.Tensor, y: torch.Tensor | None = None) -> Any:
        """Cached sampler: convolution caches plus key/value caches (:mod:`pixelzoo.models.snail_session`)."""
        from pixelzoo.models.snail_session import PixelSNAILSession

        return PixelSNAILSession(self, x, y)


def _check(head: str, channels: int, attn_blocks: int, nr_resnet: int, filters: int, key_size: int,
           heads: int, n_mix: int, dropout: float) -> None:
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    if head == "categorical" and channels != 1:
        raise ValueError("the categorical head needs one channel (the network describes whole pixels); "
                         f"got {channels}: use head='mixture'")
    if attn_blocks < 1 or nr_resnet < 0 or filters < 2:
        raise ValueError(f"need attn_blocks >= 1, nr_resnet >= 0, filters >= 2; got {attn_blocks}, "
                         f"{nr_resnet}, {filters}")
    if key_size % heads or (filters // 2) % heads:
        raise ValueError(f"key_size ({key_size}) and the values (filters // 2 = {filters // 2}) must "
                         f"divide into {heads} heads")
    if n_mix < 1:
        raise ValueError(f"n_mix (mixture components) must be >= 1, got {n_mix}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")


@register("pixelsnail", tiny={"attn_blocks": 1, "nr_resnet": 1, "filters": 8, "n_mix": 2, "key_size": 4})
def build_pixelsnail(
    *,
    channels: int,
    levels: int,
    height: int,
    width: int,
    n_classes: int | None = None,
    head: str = "auto",
    attn_blocks: int = 12,
    nr_resnet: int = 4,
    filters: int = 256,
    n_mix: int = 10,
    key_size: int = 16,
    heads: int = 1,
    dropout: float = 0.5,
) -> PixelSNAIL:
    """Defaults: the CIFAR-10 model (h12_noup_smallkey: 12 blocks of 4 gated layers + attention, 256 filters).

    ``head`` "auto": categorical for binarized one-channel data (K = 2, C = 1), else the mixture.
    """
    del height, width  # attention spans whatever size it is given; convolutions are size-free
    _check(head, channels, attn_blocks, nr_resnet, filters, key_size, heads, n_mix, dropout)
    if head == "auto":
        head = "categorical" if levels == 2 and channels == 1 else "mixture"
    return PixelSNAIL(channels, levels, head, attn_blocks, nr_resnet, filters, n_mix, key_size, heads,
                      dropout, n_classes)
