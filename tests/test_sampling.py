"""The naive reference sampler: seeded determinism, the model's generation order, fixed (known) pixels."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pixelzoo import sampling
from pixelzoo.models import build_model, tiny_args


class CountAlongOrder(nn.Module):
    """Predicts, with certainty, (value of the previous sub-pixel in ``order``) + 1 mod K; the first is 0.

    Sampled in the right order it writes 0, 1, 2, ... along ``order``; a sampler that visits a
    sub-pixel before its predecessor reads a not-yet-drawn 0 there and writes 1 instead.
    """

    def __init__(self, order: torch.Tensor, levels: int) -> None:
        super().__init__()
        self.order, self.levels = order, levels
        self.dummy = nn.Parameter(torch.zeros(()))  # the sampler reads the device from the parameters

    def generation_order(self, channels: int, height: int, width: int) -> torch.Tensor:
        return self.order

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        flat = x.reshape(b, -1)
        target = torch.zeros_like(flat)
        target[:, self.order[1:]] = (flat[:, self.order[:-1]] + 1) % self.levels
        logits = F.one_hot(target, self.levels).float() * 100.0  # b × CHW × K
        return logits.transpose(1, 2).reshape(b, self.levels, c, h, w)

    def sampling_session(self, x: torch.Tensor, y: torch.Tensor | None = None) -> SimpleNamespace:
        """A session that reads the full forward: the cached path runs the same loop as the naive one."""
        return SimpleNamespace(logits=lambda c, i, j: self(x, y)[:, :, c, i, j])


@pytest.mark.parametrize("method", sampling.METHODS)
def test_sampler_follows_the_models_generation_order(method: str) -> None:
    c, h, w, k = 2, 3, 4, 5
    order = torch.randperm(c * h * w, generator=torch.Generator().manual_seed(3))
    x = sampling.sample(
        CountAlongOrder(order, k),
        2,
        channels=c,
        height=h,
        width=w,
        levels=k,
        generator=torch.Generator().manual_seed(0),
        method=method,
    )
    expected = torch.empty(c * h * w, dtype=torch.long)
    expected[order] = torch.arange(c * h * w) % k
    assert torch.equal(x, expected.view(1, c, h, w).expand(2, -1, -1, -1))


@pytest.mark.parametrize("method", sampling.METHODS)
def test_known_sub_pixels_are_kept_and_used_as_context(method: str) -> None:
    c, h, w, k = 1, 4, 3, 7
    order = torch.arange(c * h * w)  # raster
    known = sampling.top_half_known(c, h, w)
    x_init = torch.full((1, c, h, w), 3)
    x = sampling.sample(
        CountAlongOrder(order, k),
        1,
        channels=c,
        height=h,
        width=w,
        levels=k,
        x_init=x_init,
        known=known,
        generator=torch.Generator().manual_seed(0),
        method=method,
    )
    assert torch.equal(x[0, 0, :2], x_init[0, 0, :2])  # given half untouched
    # the first drawn sub-pixel continues from the last known value 3: 4, 5, 6, 0, 1, 2
    assert x[0, 0, 2:].reshape(-1).tolist() == [4, 5, 6, 0, 1, 2]
    with pytest.raises(ValueError, match="x_init"):
        sampling.sample(CountAlongOrder(order, k), 1, channels=c, height=h, width=w, levels=k, known=known)


def test_same_seed_same_samples_other_seed_other_samples() -> None:
    torch.manual_seed(0)
    model = build_model("pixelcnn", channels=3, levels=4, height=4, width=4, **tiny_args("pixelcnn"))

    def draw(seed: int) -> torch.Tensor:
        return sampling.sample(
            model, 3, channels=3, height=4, width=4, levels=4, generator=torch.Generator().manual_seed(seed)
        )

    a, b, other = draw(1), draw(1), draw(2)
    assert torch.equal(a, b)
    assert not torch.equal(a, other)
    assert a.dtype == torch.long and a.min() >= 0 and a.max() < 4 and a.shape == (3, 3, 4, 4)


def test_class_and_soft_label_conditioning(tmp_path) -> None:
    torch.manual_seed(0)
    model = build_model(
        "seed004_pixelcnn",
        channels=1,
        levels=4,
        height=5,
        width=5,
        n_classes=10,
        **tiny_args("seed004_pixelcnn"),
    )
    soft = sampling.soft_label_rows([[1, 7], [3, 8]], 10, per_pair=2)
    assert soft.shape == (4, 10) and torch.equal(soft.sum(1), torch.ones(4))
    assert soft[0, 1] == soft[0, 7] == 0.5 and soft[2, 3] == soft[2, 8] == 0.5
    x = sampling.sample(
        model, 4, channels=1, height=5, width=5, levels=4, y=soft, generator=torch.Generator().manual_seed(0)
    )
    assert x.shape == (4, 1, 5, 5)
    rows = sampling.class_rows(10, 2)
    assert rows.tolist()[:4] == [0, 0, 1, 1] and len(rows) == 20
    sampling.save_grid(x, 4, tmp_path / "g.png", nrow=2)
    assert (tmp_path / "g.png").stat().st_size > 0
    assert sampling.to_unit(torch.tensor([0, 3]), 4).tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match="pair"):
        sampling.soft_label_rows([[2, 2]], 10, 1)
