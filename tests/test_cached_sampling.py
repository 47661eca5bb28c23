"""Cached samplers: for every registered model, the same samples as the naive reference sampler.

Float64 copies of each model at its tiny args (plus the ablation switches and eval-mode BatchNorm
where a model has them), C=1/K=2 and C=3/K=4, unconditional, class-index and soft-label
conditioning, completions with known pixels, and each model's own generation order (multi-scale).
A model registered later is covered without editing this file, and must bring a session.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from draws import assert_cached_draws_naive
from torch import nn

from pixelzoo import sampling
from pixelzoo.likelihood import head_of
from pixelzoo.models import build_model, generation_order, registered, tiny_args
from pixelzoo.pipeline.settings import load_params

ROOT = Path(__file__).resolve().parents[1]
HEIGHT, WIDTH, N, N_CLASSES = 5, 6, 4, 3  # non-square, so a swapped i/j shows
# Switches that change which layers run: each must keep the session in step with the forward.
VARIANTS = [(name, {}) for name in registered()] + [
    ("pixelcnn", {"residual": False, "skip": False}),
    ("gated_pixelcnn", {"residual": False, "skip": False}),
    ("seed004_pixelcnn", {"norm": "batch"}),
]
CASES = {  # case -> (channels, levels, labels, known)
    "c1k2": (1, 2, None, False),
    "c3k4": (3, 4, None, False),
    "class": (3, 4, "index", False),
    "soft": (1, 2, "soft", False),
    "completion": (3, 4, "index", True),
}


def _model(name: str, overrides: dict, channels: int, levels: int, conditional: bool) -> nn.Module:
    torch.manual_seed(0)
    model = build_model(
        name,
        channels=channels,
        levels=levels,
        height=HEIGHT,
        width=WIDTH,
        n_classes=N_CLASSES if conditional else None,
        **{**tiny_args(name), **overrides},
    ).double()
    for m in model.modules():  # eval-mode BatchNorm with statistics that are not the identity
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _labels(kind: str | None) -> torch.Tensor | None:
    if kind == "index":
        return torch.tensor([0, 2, 1, 2])
    if kind == "soft":
        return torch.softmax(torch.randn(N, N_CLASSES, generator=torch.Generator().manual_seed(1)), 1)
    return None


def _id(v: tuple[str, dict]) -> str:
    return v[0] + "".join(f"-{k}={a}" for k, a in v[1].items())


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("variant", VARIANTS, ids=_id)
def test_cached_draws_exactly_the_naive_samples(variant: tuple[str, dict], case: str) -> None:
    name, overrides = variant
    channels, levels, labels, completion = CASES[case]
    model = _model(name, overrides, channels, levels, labels is not None)
    assert hasattr(model, "sampling_session"), f"{name} has no sampling_session: cached sampling fails"
    assert_cached_draws_naive(model, N, channels, levels, HEIGHT, WIDTH, _labels(labels), completion)


@pytest.mark.parametrize("case", ["c1k2", "c3k4", "class"])
@pytest.mark.parametrize("variant", VARIANTS, ids=_id)
def test_session_logits_equal_the_full_forward_at_every_step(variant: tuple[str, dict], case: str) -> None:
    """Stronger than equal draws: the logits themselves, at every step, with skips and garbage ahead."""
    name, overrides = variant
    channels, levels, labels, _ = CASES[case]
    model = _model(name, overrides, channels, levels, labels is not None)
    y = _labels(labels)
    gen = torch.Generator().manual_seed(3)
    # Not-yet-drawn sub-pixels hold arbitrary values (the protocol allows it); ~1 in 4 is skipped
    # (known), so sessions must catch up sub-pixels they were never asked about.
    x = torch.randint(0, levels, (N, channels, HEIGHT, WIDTH), generator=gen)
    known = (torch.rand(channels * HEIGHT * WIDTH, generator=gen) < 0.25).tolist()
    steps = 0
    with torch.no_grad():
        session = model.sampling_session(x, y)
        for flat in generation_order(model, channels, HEIGHT, WIDTH).tolist():
            if known[flat]:
                continue
            c, rem = divmod(flat, HEIGHT * WIDTH)
            i, j = divmod(rem, WIDTH)
            got, want = session.logits(c, i, j), head_of(model).logits_at(model(x, y), x, c, i, j)
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10, msg=f"{name} at {(c, i, j)}")
            x[:, c, i, j] = torch.randint(0, levels, (N,), generator=gen)  # "draw" it
            steps += 1
    assert steps > channels * HEIGHT * WIDTH // 2


def test_cached_needs_a_session_and_a_known_method() -> None:
    class NoSession(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.zeros(2))

        def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
            return self.w[None, :, None, None, None].expand(x.shape[0], 2, *x.shape[1:])

    kw = {"channels": 1, "height": 2, "width": 2, "levels": 2}
    with pytest.raises(ValueError, match="NoSession has no sampling_session.*naive"):
        sampling.sample(NoSession(), 1, **kw)
    with pytest.raises(ValueError, match="one of"):
        sampling.sample(NoSession(), 1, method="fast", **kw)
    assert sampling.sample(NoSession(), 1, method="naive", **kw).shape == (1, 1, 2, 2)


def test_sessions_refuse_train_mode_and_out_of_order_calls() -> None:
    model = build_model("pixelcnn", channels=1, levels=2, height=3, width=3, **tiny_args("pixelcnn"))
    x = torch.zeros(1, 1, 3, 3, dtype=torch.long)
    with pytest.raises(RuntimeError, match="eval"):
        model.train().sampling_session(x, None)
    session = model.eval().sampling_session(x, None)
    session.logits(0, 1, 1)
    with pytest.raises(ValueError, match="generation order"):
        session.logits(0, 0, 2)


@pytest.mark.parametrize("params_file", ["params.yaml", "ci/params.yaml"])
def test_profiles_sample_with_a_known_method(params_file: str) -> None:
    assert load_params(ROOT / params_file)["sample"]["method"] in sampling.METHODS


@pytest.mark.parametrize("name", ["row_lstm", "pixelcnn"])
def test_inference_mode_models_sample_and_weights_are_fixed_only_inside(name: str) -> None:
    """A model built under inference_mode (weights without a version counter) samples as one built
    normally, and the masked weights computed once for the sampler are dropped afterwards."""
    from pixelzoo.nn.masks import MaskedConv2d

    shape = {"channels": 1, "height": HEIGHT, "width": WIDTH, "levels": 2}
    draws = []
    for inference in (False, True):
        with torch.inference_mode(inference):
            model = _model(name, {}, 1, 2, conditional=False)
            draws.append(sampling.sample(model, N, **shape, generator=torch.Generator().manual_seed(3)))
        assert all(m._fixed_matrix is None for m in model.modules() if isinstance(m, MaskedConv2d))
    assert torch.equal(draws[0], draws[1])
