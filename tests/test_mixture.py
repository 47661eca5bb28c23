"""Discretized logistic mixture head: exact probabilities by enumeration, coupling, sampling."""

import itertools
import math

import pytest
import torch

from pixelzoo.likelihood import CATEGORICAL, DiscretizedLogisticMixture, head_of, log1mexp, nll_per_image


def _params(head: DiscretizedLogisticMixture, n: int, gen: torch.Generator) -> torch.Tensor:
    """Random parameters n×P with extreme log-scales (clamped and huge) and means far outside [−1, 1]."""
    p = torch.randn(n, head.params, generator=gen, dtype=torch.float64) * 3
    m, c = head.n_mix, head.channels
    means = slice(m, m + c * m)
    scales = slice(m + c * m, m + 2 * c * m)
    p[:, means] *= 2  # means up to about ±20
    p[0, scales] = -30.0  # below the clamp: the sharpest logistic
    p[1, scales] = 12.0  # almost flat over [−1, 1]
    p[2, means] = 40.0  # everything in the top edge bin
    p[3, means] = -40.0
    return p


def _enumerate(head: DiscretizedLogisticMixture, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log p of every value of a pixel (K^C values) for each of the n parameter rows -> (values, n×K^C)."""
    k, c = head.levels, head.channels
    values = torch.tensor(list(itertools.product(range(k), repeat=c)))  # V×C
    n, v = params.shape[0], len(values)
    out = params.repeat_interleave(v, 0)[:, :, None, None]  # (n·V)×P×1×1
    x = values.repeat(n, 1)[:, :, None, None]
    log_p = head.log_prob_pixels(out, x).view(n, v)
    return values, log_p


@pytest.mark.parametrize("levels,channels,n_mix", [(4, 3, 5), (256, 1, 10), (2, 3, 3)])
def test_probabilities_of_every_pixel_value_sum_to_one(levels, channels, n_mix):
    head = DiscretizedLogisticMixture(levels, channels, n_mix)
    gen = torch.Generator().manual_seed(levels + channels)
    params = _params(head, 8, gen)
    values, log_p = _enumerate(head, params)
    total = torch.logsumexp(log_p, dim=1).exp()
    worst = float((total - 1).abs().max())
    print(f"K={levels} C={channels} M={n_mix}: worst |sum p − 1| = {worst:.3e}")
    assert worst < 1e-12
    # the per-pixel NLL through the head equals −log of the enumerated probability
    n, v = log_p.shape
    x = values.repeat(n, 1)[:, :, None, None]
    nll = nll_per_image(params.repeat_interleave(v, 0)[:, :, None, None], x, head).view(n, v)
    torch.testing.assert_close(nll, -log_p, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("levels,channels", [(4, 3), (256, 3), (7, 1)])
def test_conditionals_are_distributions_and_chain_to_the_joint(levels, channels):
    head = DiscretizedLogisticMixture(levels, channels, 4)
    gen = torch.Generator().manual_seed(1)
    params = _params(head, 6, gen)
    x = torch.randint(0, levels, (6, channels), generator=gen)
    cond = head.conditional_logits(params, x)  # n×K×C
    torch.testing.assert_close(torch.logsumexp(cond, 1), torch.zeros(6, channels, dtype=torch.float64),
                               atol=1e-12, rtol=0)
    picked = cond.gather(1, x[:, None]).squeeze(1)  # log p(x_c | x_<c)
    joint = head.log_prob_pixels(params[:, :, None, None], x[:, :, None, None])[:, 0, 0]
    torch.testing.assert_close(picked.sum(1), joint, rtol=1e-10, atol=1e-10)
    per_sub = head.nll_per_subpixel(params[:, :, None, None], x[:, :, None, None])[:, :, 0, 0]
    torch.testing.assert_close(per_sub, -picked, rtol=1e-9, atol=1e-9)


def test_coupling_moves_green_with_red_only_through_the_mean():
    head = DiscretizedLogisticMixture(256, 3, 1)
    p = torch.zeros(1, head.params, dtype=torch.float64)
    p[0, 1 + 3 + 3] = 10.0  # alpha = tanh(10) ≈ 1: G's mean follows R
    p[0, 4:7] = -5.0  # sharp
    for r in (10, 128, 240):
        x = torch.tensor([[r, 0, 0]])
        g = head.conditional_logits(p, x)[0, :, 1].argmax()
        assert abs(int(g) - r) <= 1  # mean_G = 0 + 1·x_R


def test_log1mexp_is_stable():
    d = torch.tensor([1e-300, 1e-10, 0.5, math.log(2.0), 2.0, 50.0, 800.0], dtype=torch.float64)
    ref = torch.tensor([math.log(-math.expm1(-v)) if v < 30 else -math.exp(-v) for v in d.tolist()],
                       dtype=torch.float64)
    torch.testing.assert_close(log1mexp(d), ref, rtol=1e-12, atol=0)


def test_sampling_from_the_conditionals_matches_the_exact_probabilities():
    """Draw whole pixels channel by channel (R, then G given R, B given R, G): frequencies of the 64
    values of a K=4 pixel agree with the enumerated probabilities (chi-square, fixed seed)."""
    head = DiscretizedLogisticMixture(4, 3, 3)
    gen = torch.Generator().manual_seed(3)
    params = torch.randn(1, head.params, generator=gen, dtype=torch.float64)
    n = 40_000
    x = torch.zeros(n, 3, dtype=torch.long)
    for c in range(3):
        probs = torch.softmax(head.pixel_logits(params.expand(n, -1), x, c), dim=1)
        x[:, c] = torch.multinomial(probs, 1, generator=gen)[:, 0]
    values, log_p = _enumerate(head, params)
    code = (x * torch.tensor([16, 4, 1])).sum(1)
    counts = torch.bincount(code, minlength=64).double()
    expected = log_p[0].exp() * n
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 120, chi2  # 63 degrees of freedom: the 99.99th percentile is about 116


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(ValueError, match="components"):
        DiscretizedLogisticMixture(256, 3, 0)
    with pytest.raises(ValueError, match="1 or 3 channels"):
        DiscretizedLogisticMixture(256, 2, 5)
    head = DiscretizedLogisticMixture(16, 3, 2)
    out = torch.zeros(2, head.params, 4, 4)
    with pytest.raises(ValueError, match=r"\[0, 16\)"):
        head.nll_per_subpixel(out, torch.full((2, 3, 4, 4), 16))
    with pytest.raises(ValueError, match="needs 20 output channels"):
        head.nll_per_subpixel(torch.zeros(2, 7, 4, 4), torch.zeros(2, 3, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="models 3 channels"):
        head.nll_per_subpixel(out, torch.zeros(2, 1, 4, 4, dtype=torch.long))


def test_models_without_a_head_are_categorical():
    assert head_of(torch.nn.Linear(1, 1)) is CATEGORICAL
