"""Output heads and losses: the categorical distribution over K levels per sub-pixel (PixelRNN §2.2) and
the discretized logistic mixture of PixelCNN++ (Salimans et al. 2017, §2.1–2.2), exact for any K.

One place for the numbers training and evaluation report: NLL in nats per image (summed over C, H, W)
and bits/dim = nats / (C·H·W·ln 2). No dequantization: the likelihood is discrete.

A model's output goes through its *head* (:func:`head_of`): models that return logits B×K×C×H×W use
the categorical head (the default, unchanged); a model with a ``likelihood_head`` attribute (e.g.
:class:`DiscretizedLogisticMixture`) returns that head's parameters instead. Every head answers the
same questions, so evaluation, bits maps, sampling and the audit treat all models alike:

- ``nll_per_subpixel(out, x)``: −log p(x_c | everything earlier in generation order), B×C×H×W;
- ``conditional_logits(out, x)``: log-probabilities of every level of every sub-pixel given the
  earlier ones, B×K×C×H×W (the audit differentiates them; ``x`` may be float levels);
- ``logits_at(out, x, c, i, j)``: the n×K logits of one sub-pixel, for the samplers;
- ``network_outputs(out)`` and ``whole_pixel``: the raw network output as B×P×C×H×W for the audit, and
  whether it describes whole pixels (its parameters of pixel p must not see any channel of p).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _check(logits: torch.Tensor, x: torch.Tensor, levels: bool = True) -> None:
    if logits.dim() != 5 or x.dim() != 4:
        raise ValueError(
            f"expected logits B×K×C×H×W and x B×C×H×W, got {tuple(logits.shape)} and {tuple(x.shape)}"
        )
    b, k, c, h, w = logits.shape
    if tuple(x.shape) != (b, c, h, w):
        raise ValueError(f"logits {tuple(logits.shape)} do not match images {tuple(x.shape)}")
    if x.is_floating_point():
        raise TypeError("x must hold integer levels (LongTensor), not floats")
    if not levels:  # the caller checked the range once for all its images (reading it is a host sync)
        return
    lo, hi = int(x.min()), int(x.max())
    if lo < 0 or hi >= k:
        raise ValueError(f"pixel levels must lie in [0, {k}) for a {k}-way head, found [{lo}, {hi}]")


def nll_per_subpixel(
    logits: torch.Tensor, x: torch.Tensor, head: Head | None = None, check_levels: bool = True
) -> torch.Tensor:
    """Negative log-likelihood of every sub-pixel in nats: shape B×C×H×W, computed in float32.

    ``head`` None (or :data:`CATEGORICAL`): ``logits`` are B×K×C×H×W; otherwise the head's output.
    ``check_levels=False``: the caller has checked that x lies in [0, K) (the training loop, once).
    """
    if head is not None and head is not CATEGORICAL:
        return head.nll_per_subpixel(logits, x, check_levels)
    _check(logits, x, check_levels)
    logits = logits.float()
    if logits.permute(0, 3, 4, 2, 1).is_contiguous():  # memory B×H×W×C×K
        return _cross_entropy_levels_last(logits, x)
    return F.cross_entropy(logits, x.long(), reduction="none")  # class dim is K


def _cross_entropy_levels_last(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``F.cross_entropy(logits, x, reduction="none")`` for logits whose memory is B×H×W×C×K (the
    channels-last maps of the conv stacks): one row of K levels per sub-pixel, read and written in place,
    so neither the loss nor its gradient is copied into another layout (the gradient reaches the last
    layer channels-last, as its convolution wants it). Same values, row by row."""
    b, k, c, h, w = logits.shape
    rows = logits.permute(0, 3, 4, 2, 1).reshape(-1, k)  # a view: the memory is already in this order
    nats = F.cross_entropy(rows, x.long().permute(0, 2, 3, 1).reshape(-1), reduction="none")
    return nats.view(b, h, w, c).permute(0, 3, 1, 2)


def nll_per_image(
    logits: torch.Tensor, x: torch.Tensor, head: Head | None = None, check_levels: bool = True
) -> torch.Tensor:
    """Negative log-likelihood of each image in nats: shape (B,), computed in float32.

    Callers summing over a dataset should accumulate in float64.
    """
    return nll_per_subpixel(logits, x, head, check_levels).flatten(1).sum(1)


def bits_per_dim(nats: float | torch.Tensor, dims: int) -> float | torch.Tensor:
    """Convert nats (per image, or a mean per image) to bits per sub-pixel; ``dims`` = C·H·W."""
    if dims <= 0:
        raise ValueError(f"dims must be C·H·W > 0, got {dims}")
    return nats / (dims * math.log(2.0))


def sample_from_logits(
    logits: torch.Tensor, generator: torch.Generator | None = None, temperature: float = 1.0
) -> torch.Tensor:
    """Draw one level per row of ``logits`` (B×K at one sub-pixel) -> LongTensor (B,).

    Uses ``torch.multinomial`` with the given generator so that samplers sharing a random stream
    draw identical values.
    """
    if logits.dim() != 2:
        raise ValueError(f"expected logits B×K for one sub-pixel, got shape {tuple(logits.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    probs = torch.softmax(logits.float() / temperature, dim=1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


# ----------------------------------------------------------------------------------------------- heads
class Head:
    """The distribution a model's output describes (see the module docstring for the protocol)."""

    whole_pixel = False

    def nll_per_subpixel(self, out: torch.Tensor, x: torch.Tensor, check_levels: bool = True) -> torch.Tensor:
        raise NotImplementedError

    def conditional_logits(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def logits_at(self, out: torch.Tensor, x: torch.Tensor, c: int, i: int, j: int) -> torch.Tensor:
        raise NotImplementedError

    def network_outputs(self, out: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class Categorical(Head):
    """K logits per sub-pixel (PixelRNN §2.2): the model's output is already B×K×C×H×W."""

    def nll_per_subpixel(self, out: torch.Tensor, x: torch.Tensor, check_levels: bool = True) -> torch.Tensor:
        return nll_per_subpixel(out, x, check_levels=check_levels)

    def conditional_logits(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return out

    def logits_at(self, out: torch.Tensor, x: torch.Tensor, c: int, i: int, j: int) -> torch.Tensor:
        return out[:, :, c, i, j]

    def network_outputs(self, out: torch.Tensor) -> torch.Tensor:
        return out


CATEGORICAL = Categorical()


def head_of(model: torch.nn.Module) -> Head:
    """The head of ``model``: its ``likelihood_head`` attribute, else the categorical head."""
    head = getattr(model, "likelihood_head", None)
    return CATEGORICAL if head is None else head


def log1mexp(d: torch.Tensor) -> torch.Tensor:
    """log(1 − exp(−d)) for d > 0, stable at both ends (Mächler 2012: expm1 below ln 2, log1p above)."""
    # Each branch gets an argument inside its own range: the branch not taken must stay finite, or its
    # infinite gradient times where's zero is NaN (a wide unused mixture component has d -> 0).
    small = d < math.log(2.0)
    d_small, d_large = torch.where(small, d, math.log(2.0)), torch.where(small, math.log(2.0), d)
    return torch.where(small, torch.log(-torch.expm1(-d_small)), torch.log1p(-torch.exp(-d_large)))


class DiscretizedLogisticMixture(Head):
    """Mixture of M discretized logistics per pixel with the linear R→G→B coupling of the means.

    Output layout B×P×H×W, P = M·(1 + 2C + C(C−1)/2): mixture logits (M), means (C·M), log-scales
    (C·M, clamped below at ``min_log_scale`` as in the paper's code: part of the parametrisation, the
    distribution stays normalised), coupling coefficients (C(C−1)/2·M, tanh-squashed). Component k:
    μ_G,k + α_k·x_R for G, μ_B,k + β_k·x_R + γ_k·x_G for B, x the pixel's own values in [−1, 1].

    Probabilities are exact for any K: level l covers [v_l − δ, v_l + δ], v_l = 2l/(K−1) − 1,
    δ = 1/(K−1), the first bin open to −∞ and the last to +∞, so the K bins of a channel sum to 1.
    In log space: log(σ(a) − σ(b)) = log σ(a) + log σ(−b) + log1mexp(a − b); no mid-point density
    approximation anywhere (training uses the same exact form). The per-sub-pixel NLL is the chain
    rule inside the pixel: −log p(x_c | x_<c) with mixture weights updated by the earlier channels,
    so the C terms sum to −log p(pixel) and bits maps, samplers and the audit work per sub-pixel.
    """

    whole_pixel = True

    def __init__(self, levels: int, channels: int, n_mix: int, min_log_scale: float = -7.0) -> None:
        if not 2 <= levels <= 256:
            raise ValueError(f"levels must be in [2, 256], got {levels}")
        if channels not in (1, 3):
            raise ValueError(f"the logistic mixture takes 1 or 3 channels, got {channels}")
        if n_mix < 1:
            raise ValueError(f"the number of mixture components must be >= 1, got {n_mix}")
        self.levels, self.channels, self.n_mix, self.min_log_scale = levels, channels, n_mix, min_log_scale
        self.n_coeffs = channels * (channels - 1) // 2
        self.params = n_mix * (1 + 2 * channels + self.n_coeffs)

    def __repr__(self) -> str:
        return (f"DiscretizedLogisticMixture(levels={self.levels}, channels={self.channels}, "
                f"n_mix={self.n_mix})")

    # -- parameters ---------------------------------------------------------------------------------
    def _split(self, out: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """B×P×… -> log π (B×M×…), means, log-scales (B×C×M×…), coefficients (B×C(C−1)/2×M×…)."""
        if out.shape[1] != self.params:
            raise ValueError(f"a {self.n_mix}-component mixture over {self.channels} channels needs "
                             f"{self.params} output channels, got {out.shape[1]}")
        m, c, rest = self.n_mix, self.channels, out.shape[2:]
        logit_pi, means, log_s, coeffs = torch.split(out, [m, c * m, c * m, self.n_coeffs * m], dim=1)
        log_pi = torch.log_softmax(logit_pi, dim=1)
        means = means.reshape(out.shape[0], c, m, *rest)
        log_s = log_s.reshape(out.shape[0], c, m, *rest).clamp(min=self.min_log_scale)
        coeffs = torch.tanh(coeffs.reshape(out.shape[0], self.n_coeffs, m, *rest))
        return log_pi, means, log_s, coeffs

    def _coupled_mean(
        self, means: torch.Tensor, coeffs: torch.Tensor, xs: torch.Tensor, c: int
    ) -> torch.Tensor:
        """Mean of channel c (B×M×…) given the pixel's values ``xs`` (B×C×…, in [−1, 1]) of channels < c."""
        mu = means[:, c]
        if c >= 1:
            mu = mu + coeffs[:, 0] * xs[:, 0, None] if c == 1 else mu + coeffs[:, 1] * xs[:, 0, None]
        if c == 2:
            mu = mu + coeffs[:, 2] * xs[:, 1, None]
        return mu

    def _log_bin(self, level: torch.Tensor, mu: torch.Tensor, log_s: torch.Tensor) -> torch.Tensor:
        """Exact log-mass of bin ``level`` (float levels, broadcast) under logistic(mu, e^log_s)."""
        k = self.levels
        delta = 1.0 / (k - 1)
        v = level * (2.0 / (k - 1)) - 1.0
        inv_s = torch.exp(-log_s)
        a = (v + delta - mu) * inv_s  # upper edge
        b = (v - delta - mu) * inv_s  # lower edge
        log_cdf_a = -F.softplus(-a)  # log σ(a)
        log_sf_b = -F.softplus(b)  # log(1 − σ(b))
        inner = log_cdf_a + log_sf_b + log1mexp(2.0 * delta * inv_s)  # a − b = 2δ/s, exactly positive
        return torch.where(level <= 0, log_cdf_a, torch.where(level >= k - 1, log_sf_b, inner))

    def _component_logs(self, out: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log π (B×M×…) and log p_c(x_c | k, x_<c) for every channel (B×C×M×…), x float levels."""
        log_pi, means, log_s, coeffs = self._split(out)
        xs = x * (2.0 / (self.levels - 1)) - 1.0
        logs = [self._log_bin(x[:, c, None], self._coupled_mean(means, coeffs, xs, c), log_s[:, c])
                for c in range(self.channels)]
        return log_pi, torch.stack(logs, dim=1)

    def _check_x(self, out: torch.Tensor, x: torch.Tensor, levels: bool = True) -> None:
        if out.dim() != 4 or x.dim() != 4 or out.shape[0] != x.shape[0] or out.shape[2:] != x.shape[2:]:
            raise ValueError(f"mixture parameters {tuple(out.shape)} do not match images {tuple(x.shape)}")
        if x.shape[1] != self.channels:
            raise ValueError(f"this mixture head models {self.channels} channels, images have {x.shape[1]}")
        if x.is_floating_point():
            raise TypeError("x must hold integer levels (LongTensor), not floats")
        if not levels:  # the caller checked the range once (reading it is a host sync)
            return
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or hi >= self.levels:
            raise ValueError(f"pixel levels must lie in [0, {self.levels}) for a {self.levels}-level "
                             f"mixture head, found [{lo}, {hi}]")

    # -- the head protocol --------------------------------------------------------------------------
    def log_prob_pixels(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(pixel) of every pixel, B×H×W: one log-sum-exp over components of the channels' sum."""
        self._check_x(out, x)
        out = out if out.dtype == torch.float64 else out.float()
        log_pi, logs = self._component_logs(out, x.to(out.dtype))
        return torch.logsumexp(log_pi + logs.sum(1), dim=1)

    def nll_per_subpixel(self, out: torch.Tensor, x: torch.Tensor, check_levels: bool = True) -> torch.Tensor:
        """−log p(x_c | x_<c of the pixel, earlier pixels), B×C×H×W; sums over C to −log p(pixel)."""
        self._check_x(out, x, check_levels)
        out = out if out.dtype == torch.float64 else out.float()
        log_pi, logs = self._component_logs(out, x.to(out.dtype))
        joint = log_pi[:, None] + torch.cumsum(logs, dim=1)  # B×C×M×…: log π_k + Σ_{c' ≤ c} log p_c'
        log_p_upto = torch.logsumexp(joint, dim=2)  # log p(x_≤c)
        prev = torch.cat([torch.zeros_like(log_p_upto[:, :1]), log_p_upto[:, :-1]], dim=1)
        return prev - log_p_upto

    def conditional_logits(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x_c = l | x_<c, earlier pixels) for every level l: B×K×C×H×W (x: levels, may be float)."""
        log_pi, means, log_s, coeffs = self._split(out)
        xf = x.to(out.dtype)
        xs = xf * (2.0 / (self.levels - 1)) - 1.0
        shape = (1, self.levels, 1) + (1,) * (out.dim() - 2)
        grid = torch.arange(self.levels, dtype=out.dtype, device=out.device).view(shape)
        weights, outs = log_pi, []  # log of the unnormalised component weights given x_<c
        for c in range(self.channels):
            mu, ls = self._coupled_mean(means, coeffs, xs, c), log_s[:, c]
            every = self._log_bin(grid, mu[:, None], ls[:, None])  # B×K×M×…
            w = torch.log_softmax(weights, dim=1)
            outs.append(torch.logsumexp(w[:, None] + every, dim=2))
            if c + 1 < self.channels:
                weights = weights + self._log_bin(xf[:, c, None], mu, ls)
        return torch.stack(outs, dim=2)

    def logits_at(self, out: torch.Tensor, x: torch.Tensor, c: int, i: int, j: int) -> torch.Tensor:
        return self.pixel_logits(out[:, :, i, j], x[:, :, i, j], c)

    def pixel_logits(self, params: torch.Tensor, xpix: torch.Tensor, c: int) -> torch.Tensor:
        """n×K log-probabilities of channel c of one pixel from its n×P parameters and levels n×C."""
        return self.conditional_logits(params, xpix)[:, :, c]

    def network_outputs(self, out: torch.Tensor) -> torch.Tensor:
        """B×P×C×H×W: the parameters of a pixel, repeated for each channel (all describe the whole pixel)."""
        return out[:, :, None].expand(-1, -1, self.channels, -1, -1)
