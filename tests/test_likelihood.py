"""Categorical head: NLL per image, bits/dim, sampling."""

import math

import pytest
import torch

from pixelzoo.likelihood import bits_per_dim, nll_per_image, sample_from_logits


def test_nll_matches_log_softmax_gather():
    torch.manual_seed(0)
    b, k, c, h, w = 3, 5, 3, 4, 2
    logits = torch.randn(b, k, c, h, w)
    x = torch.randint(0, k, (b, c, h, w))
    manual = -torch.log_softmax(logits, 1).gather(1, x[:, None]).squeeze(1).flatten(1).sum(1)
    torch.testing.assert_close(nll_per_image(logits, x), manual)


@pytest.mark.parametrize("k", [2, 256])
def test_uniform_logits_give_log_k_per_subpixel(k):
    x = torch.randint(0, k, (2, 3, 4, 4))
    nats = nll_per_image(torch.zeros(2, k, 3, 4, 4), x)
    torch.testing.assert_close(nats, torch.full((2,), 48 * math.log(k)))
    assert bits_per_dim(float(nats[0]), 48) == pytest.approx(math.log2(k))


def test_bad_inputs_are_explained():
    logits = torch.zeros(2, 4, 1, 3, 3)
    with pytest.raises(ValueError, match="do not match"):
        nll_per_image(logits, torch.zeros(2, 1, 3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        nll_per_image(logits, torch.full((2, 1, 3, 3), 4))
    with pytest.raises(TypeError, match="integer levels"):
        nll_per_image(logits, torch.zeros(2, 1, 3, 3))
    with pytest.raises(ValueError, match="dims"):
        bits_per_dim(1.0, 0)


def test_sampling_is_reproducible_and_follows_the_logits():
    logits = torch.tensor([[0.0, 50.0, 0.0], [0.0, 0.0, 50.0]])
    assert sample_from_logits(logits).tolist() == [1, 2]
    flat = torch.zeros(1000, 7)
    a = sample_from_logits(flat, torch.Generator().manual_seed(3))
    b = sample_from_logits(flat, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.min() >= 0 and a.max() <= 6 and len(a.unique()) == 7
    with pytest.raises(ValueError):
        sample_from_logits(torch.zeros(2, 3, 4))


def test_log1mexp_gradient_is_finite_at_both_ends():
    # The branch torch.where does not take must not poison the gradient (NaN after a confident fit).
    from pixelzoo.likelihood import log1mexp

    d = torch.tensor([1e-20, 1e-12, 1e-3, 0.5, 2.0, 50.0], dtype=torch.float64, requires_grad=True)
    log1mexp(d).sum().backward()
    assert torch.isfinite(d.grad).all()
    torch.testing.assert_close(log1mexp(d.detach()), torch.log(-torch.expm1(-d.detach())))


@pytest.mark.parametrize("channels", [1, 3])
def test_levels_last_logits_give_the_same_nll_and_gradient_without_a_copy(channels):
    """Channels-last maps (the conv stacks) reach the loss with the K levels innermost: the loss reads
    them in place (no layout copy forward or backward: on CIFAR-size PixelCNN the copies cost ~0.3 s of
    a 5 s step), and matches cross-entropy on the usual layout in value and gradient."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from pixelzoo.nn.heads import to_logits

    class Ops(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.names: list[str] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
            sizes = [a.numel() for a in args if isinstance(a, torch.Tensor)]
            if func.__name__.split(".")[0] in ("copy_", "clone", "_to_copy") and max(sizes) > x.numel():
                self.names.append(func.__name__)  # a copy of logits (K per sub-pixel), not of indices
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    k, b, h, w = 7, 2, 4, 5
    out = torch.randn(b, channels * k, h, w)  # the loss runs in float32 whatever the model's dtype
    x = torch.randint(0, k, (b, channels, h, w))
    grads, copies = [], []
    for fmt in (torch.contiguous_format, torch.channels_last):
        leaf = out.clone().contiguous(memory_format=fmt).requires_grad_()
        logits = to_logits(leaf, channels, k)
        manual = -torch.log_softmax(logits, 1).gather(1, x[:, None]).squeeze(1).flatten(1).sum(1)
        with Ops() as ops:
            nats = nll_per_image(logits, x)
            nats.sum().backward()
        torch.testing.assert_close(nats, manual)
        grads.append(leaf.grad)
        copies.append(ops.names)
    torch.testing.assert_close(grads[1], grads[0])
    assert grads[1].is_contiguous(memory_format=torch.channels_last)
    assert copies[1] == [], copies
