"""PixelCNN++ (Salimans, Karpathy, Chen & Kingma, ICLR 2017, "PixelCNN++: Improving the PixelCNN with
Discretized Logistic Mixture Likelihood and Other Modifications").

- Output: a discretized logistic mixture per whole pixel with the linear R→G→B coupling of the means
  (:class:`pixelzoo.likelihood.DiscretizedLogisticMixture`, exact for the dataset's K); the network's
  output at pixel p sees only earlier pixels, the colours of p enter only through the coupling.
- No masks: two streams of shifted convolutions (:mod:`pixelzoo.nn.shifted_convs`), u (rows strictly
  above, 2×3 "down" kernels) and ul (above and to the left, 2×2 "down-right" kernels), so there is no
  blind spot. The input carries a channel of ones, which lets the network see the image border.
- Gated ResNet blocks with concat_elu and dropout: x + a ⊙ σ(b), [a, b] = conv(dropout(celu(conv(celu x)
  + nin(celu skip)))); the ul stream reads the u stream through that skip input.
- Three resolutions (32, 16, 8 at CIFAR size): ``nr_resnet`` blocks per resolution on the way up (down-
  sampling by stride-2 shifted convolutions), then nr_resnet, nr_resnet+1, nr_resnet+1 blocks on the
  way down (up-sampling by cropped transposed convolutions), each fed the matching activation of the
  way up (the paper's shortcut connections).
- Class conditioning (``n_classes``): a learned per-block bias on the gate pre-activation.

Paper CIFAR-10 size is the default: 5 blocks per resolution, 160 filters, 10 mixture components.
``weight_norm`` (off by default): every convolution, transposed convolution and nin layer is weight-
normalised (Salimans & Kingma 2016, ``torch.nn.utils.parametrizations.weight_norm``) and
:meth:`PixelCNNPP.data_init_` gives it the official code's data-dependent init.

The forward is written once against a small evaluator (:class:`FullEval` runs it on whole maps); the
cached sampler (:mod:`pixelzoo.models.pp_session`) replays the same graph position by position.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm as _weight_norm

from pixelzoo.likelihood import DiscretizedLogisticMixture
from pixelzoo.models.registry import register
from pixelzoo.nn import ClassBias, scale_input
from pixelzoo.nn.shifted_convs import ShiftedConv2d, ShiftedDeconv2d, concat_elu


class FullEval:
    """The graph's operations on whole tensors (the ordinary forward)."""

    def __init__(self, levels: int, monotone: bool = False) -> None:
        self.levels, self.monotone = levels, monotone

    def input(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        xs = scale_input(x, self.levels).to(dtype)
        return torch.cat([xs, torch.ones_like(xs[:, :1])], dim=1)

    def conv(self, m: nn.Module, h: torch.Tensor) -> torch.Tensor:
        return m(h)

    def up(self, m: ShiftedDeconv2d, h: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Up-sample and crop to the size of the shortcut ``like`` (odd sizes halve upwards)."""
        return m(h)[:, :, : like.shape[2], : like.shape[3]]

    def shift(self, h: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        """out[i, j] = h[i − rows, j − cols], zeros where that lies outside."""
        height, width = h.shape[2:]
        return F.pad(h, (cols, 0, rows, 0))[:, :, :height, :width]

    def celu(self, h: torch.Tensor) -> torch.Tensor:
        # monotone (structural audit only): the same connections, both halves with positive slope
        return F.elu(torch.cat([h, h], dim=1)) if self.monotone else concat_elu(h)

    def elu(self, h: torch.Tensor) -> torch.Tensor:
        return F.elu(h)

    def add(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b

    def cat(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.cat([a, b], dim=1)

    def gate(self, h: torch.Tensor) -> torch.Tensor:
        a, b = h.chunk(2, dim=1)
        return a * torch.sigmoid(b)

    def drop(self, m: nn.Dropout, h: torch.Tensor) -> torch.Tensor:
        return m(h)

    def bias(self, cond: ClassBias, y: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return h + cond(y).to(h.dtype)


class GatedResNet(nn.Module):
    """x + a ⊙ σ(b) (paper §2.4); ``skip`` extra inputs (of ``filters`` channels each) join after conv_in."""

    def __init__(
        self, filters: int, kind: str, skip: int, dropout: float, n_classes: int | None
    ) -> None:
        super().__init__()
        kernel = (2, 3) if kind == "down" else (2, 2)
        self.conv_in = ShiftedConv2d(2 * filters, filters, kernel, kind)
        self.nin_skip = nn.Conv2d(2 * skip * filters, filters, 1) if skip else None
        self.dropout = nn.Dropout(dropout)
        self.conv_out = ShiftedConv2d(2 * filters, 2 * filters, kernel, kind)
        self.cond = ClassBias(n_classes, 2 * filters) if n_classes else None

    def run(self, ev: Any, x: Any, a: Any, y: torch.Tensor | None) -> Any:
        t = ev.conv(self.conv_in, ev.celu(x))
        if a is not None:
            t = ev.add(t, ev.conv(self.nin_skip, ev.celu(a)))
        t = ev.conv(self.conv_out, ev.drop(self.dropout, ev.celu(t)))
        if self.cond is not None and y is not None:
            t = ev.bias(self.cond, y, t)
        return ev.add(x, ev.gate(t))


class PixelCNNPP(nn.Module):
    """model(x, y=None) -> mixture parameters B×P×H×W (see ``likelihood_head``)."""

    def __init__(
        self,
        channels: int,
        levels: int,
        nr_resnet: int,
        filters: int,
        n_mix: int,
        dropout: float,
        n_classes: int | None,
        weight_norm: bool = False,
    ) -> None:
        super().__init__()
        self.channels, self.levels, self.n_classes = channels, levels, n_classes
        self.likelihood_head = DiscretizedLogisticMixture(levels, channels, n_mix)
        f, c_in = filters, channels + 1

        def blocks(kind: str, skip: int, n: int) -> nn.ModuleList:
            return nn.ModuleList(GatedResNet(f, kind, skip, dropout, n_classes) for _ in range(n))

        self.u_init = ShiftedConv2d(c_in, f, (2, 3), "down")
        self.ul_init = nn.ModuleList([ShiftedConv2d(c_in, f, (1, 3), "down"),
                                      ShiftedConv2d(c_in, f, (2, 1), "down_right")])
        self.up_u = nn.ModuleList(blocks("down", 0, nr_resnet) for _ in range(3))
        self.up_ul = nn.ModuleList(blocks("down_right", 1, nr_resnet) for _ in range(3))
        self.down_u = nn.ModuleList(blocks("down", 1, n) for n in (nr_resnet, nr_resnet + 1, nr_resnet + 1))
        self.down_ul = nn.ModuleList(
            blocks("down_right", 2, n) for n in (nr_resnet, nr_resnet + 1, nr_resnet + 1)
        )
        self.downsize_u = nn.ModuleList(ShiftedConv2d(f, f, (2, 3), "down", stride=2) for _ in range(2))
        self.downsize_ul = nn.ModuleList(
            ShiftedConv2d(f, f, (2, 2), "down_right", stride=2) for _ in range(2)
        )
        self.upsize_u = nn.ModuleList(ShiftedDeconv2d(f, f, (2, 3), "down") for _ in range(2))
        self.upsize_ul = nn.ModuleList(ShiftedDeconv2d(f, f, (2, 2), "down_right") for _ in range(2))
        self.nin_out = nn.Conv2d(f, self.likelihood_head.params, 1)
        self.monotone = False
        self.weight_norm = weight_norm
        if weight_norm:  # off: not one parameter, key or RNG draw differs from the plain model
            for m in _convolutions(self):
                _weight_norm(m, dim=1 if isinstance(m, nn.ConvTranspose2d) else 0)  # g per output channel

    @torch.no_grad()
    def data_init_(self, x: torch.Tensor, y: torch.Tensor | None = None) -> bool:
        """Data-dependent init of the weight-normalised layers on the batch ``x`` (openai/pixel-cnn
        ``nn.py``): in forward order, each layer's g and bias are set so that its output on ``x`` has per-
        channel mean 0 and std ``init_scale`` (0.1 for the second convolution of a gated ResNet block,
        1 elsewhere). One forward pass: a hook rescales each output, so later layers already see rescaled
        inputs. Runs in the model's current mode (dropout draws when training). Returns whether it
        changed anything (not without weight_norm: then it is a no-op)."""
        if not self.weight_norm:
            return False
        small = {block.conv_out.conv for block in self.modules() if isinstance(block, GatedResNet)}
        hooks = [m.register_forward_hook(_data_init_hook(0.1 if m in small else 1.0))
                 for m in _convolutions(self)]
        try:
            self(x, y)
        finally:
            for h in hooks:
                h.remove()
        return True

    def monotone_(self) -> None:
        """For the structural audit: concat_elu's −x half becomes +x (same connections, positive slopes)."""
        self.monotone = True

    def graph(self, ev: Any, x: Any, y: torch.Tensor | None) -> Any:
        """The network on evaluator ``ev`` (whole maps, or position by position in the cached sampler)."""
        h = ev.input(x, self.nin_out.weight.dtype)
        u_list = [ev.shift(ev.conv(self.u_init, h), 1, 0)]
        above = ev.shift(ev.conv(self.ul_init[0], h), 1, 0)
        ul_list = [ev.add(above, ev.shift(ev.conv(self.ul_init[1], h), 0, 1))]
        for s in range(3):
            for u_block, ul_block in zip(self.up_u[s], self.up_ul[s], strict=True):
                u_list.append(u_block.run(ev, u_list[-1], None, y))
                ul_list.append(ul_block.run(ev, ul_list[-1], u_list[-1], y))
            if s < 2:
                u_list.append(ev.conv(self.downsize_u[s], u_list[-1]))
                ul_list.append(ev.conv(self.downsize_ul[s], ul_list[-1]))
        u, ul = u_list.pop(), ul_list.pop()
        for s in range(3):
            for u_block, ul_block in zip(self.down_u[s], self.down_ul[s], strict=True):
                u = u_block.run(ev, u, u_list.pop(), y)
                ul = ul_block.run(ev, ul, ev.cat(u, ul_list.pop()), y)
            if s < 2:
                u, ul = ev.up(self.upsize_u[s], u, u_list[-1]), ev.up(self.upsize_ul[s], ul, ul_list[-1])
        assert not u_list and not ul_list  # every shortcut of the way up was used once
        return ev.conv(self.nin_out, ev.elu(ul))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.n_classes and y is None:  # conditional: never silently unconditional
            raise ValueError("this model is class-conditional (n_classes set): pass y")
        return self.graph(FullEval(self.levels, self.monotone), x, y)

    def sampling_session(self, x: torch.Tensor, y: torch.Tensor | None = None) -> Any:
        """Cached sampler in the Fast PixelCNN++ manner (:mod:`pixelzoo.models.pp_session`)."""
        from pixelzoo.models.pp_session import PixelCNNPPSession

        return PixelCNNPPSession(self, x, y)


def _convolutions(model: nn.Module) -> list[nn.Module]:
    """Every Conv2d / ConvTranspose2d, in module order (collected first: weight_norm edits the tree)."""
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]


def _data_init_hook(init_scale: float) -> Any:
    def hook(m: nn.Module, inputs: Any, out: torch.Tensor) -> torch.Tensor:
        # out = conv(x, g·v/|v|) + b; with s = init_scale / std(out): g ← g·s, b ← s·(b − mean(out))
        # makes the layer output s·(out − mean), which is returned so that later layers see it.
        mean, var = out.mean((0, 2, 3)), out.var((0, 2, 3), unbiased=False)
        s = init_scale / torch.sqrt(var + 1e-8)  # the official code's epsilon for convolutions
        g = m.parametrizations.weight.original0
        g.mul_(s.view_as(g))
        m.bias.copy_(s * (m.bias - mean))
        return (out - mean[:, None, None]) * s[:, None, None]

    return hook


@register("pixelcnn_pp", tiny={"nr_resnet": 1, "filters": 8, "n_mix": 2})
def build_pixelcnn_pp(
    *,
    channels: int,
    levels: int,
    height: int,
    width: int,
    n_classes: int | None = None,
    nr_resnet: int = 5,
    filters: int = 160,
    n_mix: int = 10,
    dropout: float = 0.5,
    weight_norm: bool = False,
) -> PixelCNNPP:
    """Defaults: the paper's CIFAR-10 model (5 blocks per resolution, 160 filters, 10 components);
    ``weight_norm`` as in the paper's code (needs :meth:`PixelCNNPP.data_init_` before training)."""
    del height, width  # fully convolutional (odd sizes: the up-sampling is cropped to the shortcut)
    if nr_resnet < 1 or filters < 1:
        raise ValueError(f"nr_resnet and filters must be >= 1, got {nr_resnet} and {filters}")
    if n_mix < 1:
        raise ValueError(f"n_mix (mixture components) must be >= 1, got {n_mix}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    return PixelCNNPP(channels, levels, nr_resnet, filters, n_mix, dropout, n_classes, weight_norm)
