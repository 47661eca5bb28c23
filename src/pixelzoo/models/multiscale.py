"""Multi-scale PixelRNN (van den Oord, Kalchbrenner, Kavukcuoglu 2016, "Pixel RNNs", §3.5).

An unconditional PixelRNN generates a small s×s image; a conditional PixelRNN generates the n×n
image, every one of its layers receiving a bias from a 1×1 unmasked convolution of a c×n×n map
upsampled from the small image.

The upsampling network (the paper's "convolutional network with deconvolutional layers") is
``upsample_layers`` unmasked 3×3 convolutions on the s×s small image with dilations 1, 2, 4, …
(reach 2^L − 1 pixels each way), then a stride-r transposed convolution to n×n. By default L is
the smallest that reaches across the whole small image (2^L ≥ s): every position of the c×n×n map,
hence every conditional pixel, depends on every sub-pixel of the small image — legitimately, since
the small image is entirely generated before the first conditional pixel.

The paper leaves open how the small image relates to the big one. Here it *is* part of the big
one, so that the sum of both parts is exactly the log-likelihood of the full image:

- the small image is the sub-lattice ``x[:, :, ::r, ::r]`` (r = n/s; any n works, the small
  image is then ceil(n/r) wide and the upsampled map is cropped to n), generated first, in raster
  order with R, G, B within a pixel, by the small model: ``log p(x_sub)``;
- the remaining pixels are generated next, in raster order with R, G, B within a pixel, by the
  conditional model, which sees every sub-pixel of the small image through the bias (all of it,
  whatever the pixel's position, see the upsampling network above) and the earlier pixels of the
  full image through its masked layers: ``log p(x_rest | x_sub)``.

``forward`` returns logits B×K×C×H×W whose sub-lattice positions come from the small model and the
others from the conditional model, so the usual per-sub-pixel sum of categorical NLLs is
``-log p(x_sub) - log p(x_rest | x_sub) = -log p(x)``, a proper likelihood. The order is exposed as
``generation_order(C, H, W)``. The conditional model's view stays causal for that order: its masked
layers read only raster-earlier pixels of the full image (sub-lattice ones come first anyway, the
others in raster order), the channel groups hide the current sub-pixel, and the conditioning reads
only sub-lattice pixels, which all precede every non-sub-lattice pixel. The conditional model's
outputs at the sub-lattice positions (which would see the whole small image) are discarded.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import nn

from pixelzoo.models.diagonal_bilstm import diagonal_bilstm
from pixelzoo.models.pixelrnn import PixelRNN, PixelRNNSession, check_image
from pixelzoo.models.registry import register
from pixelzoo.models.row_lstm import row_lstm
from pixelzoo.nn.masks import scale_input

BASES = {"row_lstm": row_lstm, "diagonal_bilstm": diagonal_bilstm}
DEFAULT_BASE = "diagonal_bilstm"


def upsampler(
    channels: int, width: int, scale: int, small_size: tuple[int, int], layers: int | None
) -> nn.Sequential:
    """Small image C×s×s -> ``width``×(r·s)×(r·s): dilated 3×3 convs reaching all of it, then a deconv.

    ``layers=None``: the fewest layers whose reach 2^L − 1 covers the small image (2^L ≥ s).
    """
    side = max(small_size)
    need = max(1, math.ceil(math.log2(side)))
    layers = need if layers is None else layers
    if layers < need:
        raise ValueError(
            f"upsample_layers={layers} reaches {2**layers - 1} pixels each way, but the small image is "
            f"{small_size[0]}×{small_size[1]}: use upsample_layers >= {need} (or null for that minimum)"
        )
    convs: list[nn.Module] = []
    for index in range(layers):  # unmasked: the whole small image precedes every conditional pixel
        dilation = 2**index
        convs += [nn.Conv2d(channels if index == 0 else width, width, 3, padding=dilation, dilation=dilation),
                  nn.ReLU()]
    return nn.Sequential(*convs, nn.ConvTranspose2d(width, width, scale, stride=scale), nn.ReLU())


class MultiScaleSession:
    """Cached sampling for :class:`MultiScalePixelRNN` in its generation order.

    The sub-lattice calls go to the small model's :class:`PixelRNNSession` over the view
    ``x[..., ::r, ::r]`` (it sees the sampler's in-place writes). At the first other call the small
    image is complete: the conditioning maps are computed once and the conditional model's session
    starts; it walks the full image in raster order, taking the sub-lattice pixels (never asked for)
    as known pixels.
    """

    def __init__(self, model: MultiScalePixelRNN, x: torch.Tensor, y: torch.Tensor | None) -> None:
        check_image(x, model.channels, model.levels)
        self.model, self.x, self.y = model, x, y
        r = model.scale
        self.small = PixelRNNSession(model.small, x[:, :, ::r, ::r], y)
        self.full: PixelRNNSession | None = None

    def logits(self, c: int, i: int, j: int) -> torch.Tensor:
        r, model = self.model.scale, self.model
        if i % r == 0 and j % r == 0:
            if self.full is not None:
                raise ValueError(
                    f"sub-lattice sub-pixel ({c}, {i}, {j}) asked after the conditional stage began"
                )
            return self.small.logits(c, i // r, j // r)
        if self.full is None:
            xs = scale_input(self.x, model.levels).to(model.full.input.weight.dtype)
            self.full = PixelRNNSession(model.full, self.x, self.y, model.conditioning(xs))
        return self.full.logits(c, i, j)


class MultiScalePixelRNN(nn.Module):
    """Small unconditional PixelRNN on ``x[..., ::r, ::r]`` + conditional PixelRNN on the rest."""

    # Image completion with this order is not a draw from p(bottom | top): the bottom half's sub-lattice
    # pixels come first, from the small model, which never sees the known top-half pixels off its
    # lattice. Exact completion would need that marginal; the sample stage puts this note on the figure.
    completion_note = ("approximate for multi-scale: the bottom half's sub-lattice pixels are drawn without "
                       "seeing the known top-half pixels off the lattice")

    def __init__(
        self,
        *,
        channels: int,
        levels: int,
        height: int,
        width: int,
        scale: int = 2,
        base: Literal["row_lstm", "diagonal_bilstm"] = DEFAULT_BASE,
        cond_channels: int = 32,
        upsample_layers: int | None = None,
        n_classes: int | None = None,
        **rnn_args: Any,
    ) -> None:
        super().__init__()
        if base not in BASES:
            raise ValueError(f"unknown base {base!r}; choose one of {sorted(BASES)}")
        if not 2 <= scale <= min(height, width):
            raise ValueError(
                f"scale must be in [2, min(height, width)] for a {height}×{width} image, got {scale}"
            )
        self.channels, self.levels, self.scale = channels, levels, scale
        self.small: PixelRNN = BASES[base](channels=channels, levels=levels, n_classes=n_classes, **rnn_args)
        self.full: PixelRNN = BASES[base](channels=channels, levels=levels, n_classes=n_classes, **rnn_args)
        small_size = (-(-height // scale), -(-width // scale))  # ceil: the sub-lattice x[..., ::r, ::r]
        self.upsample = upsampler(channels, cond_channels, scale, small_size, upsample_layers)
        self.cond = nn.ModuleList(nn.Conv2d(cond_channels, bc, 1) for bc in self.full.bias_channels)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Integer levels B×C×H×W -> logits B×K×C×H×W (see the module docstring for what each holds)."""
        check_image(x, self.channels, self.levels)
        return self.forward_scaled(scale_input(x, self.levels).to(self.full.input.weight.dtype), y)

    def conditioning(self, xs: torch.Tensor) -> list[torch.Tensor]:
        """Per-layer gate bias maps of the conditional model from the small image x[..., ::r, ::r]."""
        u = self.upsample(xs[:, :, :: self.scale, :: self.scale])[..., : xs.shape[-2], : xs.shape[-1]]
        return [conv(u) for conv in self.cond]

    def forward_scaled(self, xs: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        r = self.scale
        logits = self.full.forward_scaled(xs, y, self.conditioning(xs)).clone()
        logits[..., ::r, ::r] = self.small.forward_scaled(xs[:, :, ::r, ::r], y)  # any image size works
        return logits

    def sampling_session(self, x: torch.Tensor, y: torch.Tensor | None = None) -> MultiScaleSession:
        """Cached sampler over ``x`` (filled in place), see :class:`MultiScaleSession`."""
        return MultiScaleSession(self, x, y)

    def generation_order(self, channels: int, height: int, width: int) -> torch.Tensor:
        """Flat indices c·H·W + i·W + j: sub-lattice pixels (raster, R,G,B), then the rest (raster, R,G,B)."""
        pix = torch.arange(height * width).view(height, width)
        sub = torch.zeros(height, width, dtype=torch.bool)
        sub[:: self.scale, :: self.scale] = True
        order = torch.cat([pix[sub], pix[~sub]])  # boolean indexing keeps raster order
        return (torch.arange(channels)[None, :] * height * width + order[:, None]).reshape(-1)


@register(
    "multiscale_pixelrnn",
    tiny={
        "scale": 2,
        "base": "diagonal_bilstm",
        "hidden": 6,
        "layers": 1,
        "head_hidden": 12,
        "cond_channels": 4,
    },
    # model_args: the multi-scale ones (scale, base, cond_channels) + those of the chosen base model
    forwards=lambda args: (MultiScalePixelRNN, BASES.get(args.get("base", DEFAULT_BASE), row_lstm)),
)
def build_multiscale_pixelrnn(
    *, channels: int, levels: int, height: int, width: int, n_classes: int | None = None, **args: Any
) -> MultiScalePixelRNN:
    return MultiScalePixelRNN(
        channels=channels, levels=levels, height=height, width=width, n_classes=n_classes, **args
    )
