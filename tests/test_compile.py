"""Issue 24.2: ``compile: true`` (torch.compile of the training forward). On the CPU a compiled small model
gives the eager model's logits (to float32 rounding: the compiler fuses operations) and its gradients."""

from __future__ import annotations

import torch

from pixelzoo.likelihood import nll_per_image
from pixelzoo.models.registry import build_model


def test_compiled_small_model_matches_eager() -> None:
    torch.manual_seed(0)
    model = build_model("pixelcnn", channels=1, levels=4, height=6, width=6, layers=2, hidden=6,
                        head_hidden=12)
    x = torch.randint(0, 4, (3, 1, 6, 6))
    eager = nll_per_image(model(x), x).sum()
    (g_eager,) = torch.autograd.grad(eager, [next(model.parameters())])
    compiled = torch.compile(model)
    fast = nll_per_image(compiled(x), x).sum()
    (g_fast,) = torch.autograd.grad(fast, [next(model.parameters())])
    torch.testing.assert_close(fast, eager, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g_fast, g_eager, rtol=1e-4, atol=1e-6)
