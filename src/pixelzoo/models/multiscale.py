"""Multi-scale PixelRNN (van den Oord, Kalchbrenner, Kavukcuoglu 2016, "Pixel RNNs", §3.5).

An unconditional PixelRNN generates a small s×s image; a conditional PixelRNN generates the n×n
image, every one of its layers receiving a bias from a 1×1 unmasked convolution of a c×n×n map
upsampled from the small image.

The paper leaves open how the small image relates to the big one. Here it *is* part of the big
one, so that the sum of both parts is exactly the log-likelihood of the full image:

- the small image is the sub-lattice ``x[:, :, ::r, ::r]`` (r = n/s; any n works, the small
  image is then ceil(n/r) wide and the upsampled map is cropped to n), generated first, in raster
  order with R, G, B within a pixel, by the small model: ``log p(x_sub)``;
- the remaining pixels are generated next, in raster order with R, G, B within a pixel, by the
  conditional model, which sees the whole small image through the bias and the earlier pixels of
  the full image through its masked layers: ``log p(x_rest | x_sub)``.

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

from typing import Any, Literal

import torch
from torch import nn

from pixelzoo.models.diagonal_bilstm import diagonal_bilstm
from pixelzoo.models.registry import register
from pixelzoo.models.row_lstm import row_lstm
from pixelzoo.nn.masks import scale_input
from pixelzoo.nn.recurrent import PixelRNN, check_image

BASES = {"row_lstm": row_lstm, "diagonal_bilstm": diagonal_bilstm}
DEFAULT_BASE = "diagonal_bilstm"


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
        # Small image (C×s×s) -> c×n×n: embed, upsample by a learned transposed conv, mix. Unmasked:
        # the whole small image is known before the conditional stage starts.
        self.upsample = nn.Sequential(
            nn.Conv2d(channels, cond_channels, 3, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(cond_channels, cond_channels, scale, stride=scale),
            nn.ReLU(),
        )
        self.cond = nn.ModuleList(nn.Conv2d(cond_channels, bc, 1) for bc in self.full.bias_channels)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Integer levels B×C×H×W -> logits B×K×C×H×W (see the module docstring for what each holds)."""
        check_image(x, self.channels, self.levels)
        return self.forward_scaled(scale_input(x, self.levels).to(self.full.input.weight.dtype), y)

    def forward_scaled(self, xs: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        r, (height, width) = self.scale, xs.shape[-2:]
        small = xs[:, :, ::r, ::r]  # ceil(H/r)×ceil(W/r): any image size works
        u = self.upsample(small)[..., :height, :width]
        logits = self.full.forward_scaled(xs, y, [conv(u) for conv in self.cond]).clone()
        logits[..., ::r, ::r] = self.small.forward_scaled(small, y)
        return logits

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
def build(
    *, channels: int, levels: int, height: int, width: int, n_classes: int | None = None, **args: Any
) -> MultiScalePixelRNN:
    return MultiScalePixelRNN(
        channels=channels, levels=levels, height=height, width=width, n_classes=n_classes, **args
    )
