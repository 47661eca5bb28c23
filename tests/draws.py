"""The cached-vs-naive draw check every cached sampler's test shares (test_cached_sampling.py,
test_pixelcnn_pp.py, test_pixelsnail.py)."""

from __future__ import annotations

import torch

from pixelzoo import sampling


def labels_for(kind: str | None, n: int, n_classes: int) -> torch.Tensor | None:
    """None, "index" (classes 0, 2, 1) or "soft" (random class probabilities) for ``n`` = 3 images."""
    if kind == "index":
        return torch.tensor([0, 2, 1])
    if kind == "soft":
        return torch.softmax(torch.randn(n, n_classes, generator=torch.Generator().manual_seed(1)), 1)
    return None


def assert_cached_draws_naive(model: torch.nn.Module, n: int, channels: int, levels: int, h: int, w: int,
                              y: torch.Tensor | None, completion: bool) -> None:
    """The cached sampler draws exactly the naive sampler's images for the same random stream (and a
    completion keeps the given top half)."""
    kw: dict = {"channels": channels, "height": h, "width": w, "levels": levels, "y": y}
    if completion:
        gen = torch.Generator().manual_seed(2)
        kw["x_init"] = torch.randint(0, levels, (n, channels, h, w), generator=gen)
        kw["known"] = sampling.top_half_known(channels, h, w)

    def draw(method: str) -> torch.Tensor:
        return sampling.sample(model, n, generator=torch.Generator().manual_seed(7), method=method, **kw)

    naive, cached = draw("naive"), draw("cached")
    assert torch.equal(cached, naive), f"{type(model).__name__}: {(cached != naive).sum()} sub-pixels differ"
    drawn = naive if not completion else naive[:, :, h // 2 :]
    assert drawn.unique().numel() > 1, "degenerate draws: the comparison would prove nothing"
    if completion:
        assert torch.equal(naive[:, :, : h // 2], kw["x_init"][:, :, : h // 2])
