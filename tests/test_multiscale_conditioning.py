"""Issue 16: the multi-scale conditional stage sees the whole small image.

At the paper CIFAR configuration's shape (params.yaml's multi-scale CIFAR-10 experiment: image size,
scale, base, upsampling depth; small widths so it runs on a CPU), every conditional output (a sub-pixel
off the coarse grid) must change when any single coarse-grid sub-pixel changes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pixelzoo.models import build_model
from pixelzoo.pipeline.settings import load_params

ROOT = Path(__file__).resolve().parents[1]
SMALL_WIDTH = {"hidden": 3, "layers": 1, "head_hidden": 6, "cond_channels": 4}  # 3 colour groups each


def cifar_multiscale_args() -> dict:
    params = load_params(ROOT / "params.yaml")
    (args,) = [e["model_args"] for e in params["experiments"].values()
               if e["model"] == "multiscale_pixelrnn" and e["dataset"] == "cifar10"]
    return {**args, **SMALL_WIDTH}


def test_every_conditional_output_depends_on_every_coarse_sub_pixel() -> None:
    """Structural: with non-negative weights and inputs every ReLU is on and no two paths cancel, so
    a zero change means no path (random weights would hide paths behind ReLUs that happen to be off)."""
    args = cifar_multiscale_args()
    channels, size, r = 3, 32, args["scale"]
    torch.manual_seed(0)
    model = build_model("multiscale_pixelrnn", channels=channels, levels=4, height=size, width=size, **args)
    model = model.double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.abs_()
    coarse = torch.zeros(channels, size, size, dtype=torch.bool)
    coarse[:, ::r, ::r] = True
    n_coarse = int(coarse.sum())
    base = torch.rand(1, channels, size, size, dtype=torch.float64)
    xs = base.repeat(n_coarse + 1, 1, 1, 1)  # image 1 + k: coarse sub-pixel k raised
    xs[1:].view(n_coarse, -1)[torch.arange(n_coarse), coarse.view(-1).nonzero()[:, 0]] += 0.5
    with torch.no_grad():
        out = model.forward_scaled(xs)  # (1 + n_coarse)×K×C×H×W
    change = (out[1:] - out[:1]).abs().sum(dim=1).reshape(n_coarse, -1).T  # [output sub-pixel, coarse]
    seen = change > 1e-13 * float(change.max())
    missing = int((~seen[~coarse.view(-1)]).sum())
    assert missing == 0, f"{missing} (conditional output, coarse sub-pixel) pairs unseen"


def test_upsampling_depth_that_cannot_reach_the_small_image_is_refused() -> None:
    with pytest.raises(ValueError, match="upsample_layers >= 4"):
        build_model("multiscale_pixelrnn", channels=3, levels=4, height=32, width=32,
                    **{**cifar_multiscale_args(), "upsample_layers": 3})
