"""PixelSNAIL at paper size (the builder's defaults, 91.3M parameters): sampling and training costs on CPU.

- Sampling, batch 1, float32, at 28×28×1 (K=2, categorical head) and 32×32×3 (K=256, mixture): the naive
  sampler timed over its first ``--naive-subpixels`` sub-pixels (one full forward each, wherever it is:
  the extrapolation to the image is exact up to noise), the cached one over its first ``--cached-rows``
  rows (its attention costs grow along the image, so this is a lower bound on the cached time and the
  ratio is an upper bound; say so when quoting it). The remaining sub-pixels are marked known.
- One training step (forward, backward, Adam) at batch 8, 32×32×3: CPU seconds, peak RSS, and the
  share of the step spent in attention (the 12 attention calls alone, forward and backward, at the same
  shapes, timed separately).

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/pixelsnail.py --out benchmarks/results/pixelsnail.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import resource
import time
from pathlib import Path

import torch

from pixelzoo import sampling
from pixelzoo.likelihood import head_of, nll_per_image
from pixelzoo.models import build_model
from pixelzoo.nn.attention import CausalAttention

SETTINGS = {"28x28x1": (1, 28, 2), "32x32x3": (3, 32, 256)}


def _time_sampling(model: torch.nn.Module, channels: int, size: int, levels: int, method: str,
                   pixels: int) -> tuple[float, int]:
    """Seconds to draw the first ``pixels`` pixels (all channels) of one image, and the sub-pixel count."""
    known = torch.ones(channels, size, size, dtype=torch.bool)
    known.view(channels, -1)[:, :pixels] = False
    t0 = time.process_time()
    sampling.sample(model, 1, channels=channels, height=size, width=size, levels=levels,
                    generator=torch.Generator().manual_seed(0), method=method,
                    x_init=torch.zeros(1, channels, size, size, dtype=torch.long), known=known)
    return time.process_time() - t0, pixels * channels


def sampling_ratio(setting: str, naive_subpixels: int, cached_rows: int) -> dict:
    channels, size, levels = SETTINGS[setting]
    torch.manual_seed(0)
    model = build_model("pixelsnail", channels=channels, levels=levels, height=size, width=size).eval()
    total = channels * size * size
    naive_pixels = max(1, naive_subpixels // channels)
    naive_s, n_naive = _time_sampling(model, channels, size, levels, "naive", naive_pixels)
    cached_s, n_cached = _time_sampling(model, channels, size, levels, "cached", cached_rows * size)
    naive_image, cached_image = naive_s * total / n_naive, cached_s * total / n_cached
    return {"setting": setting, "batch": 1, "naive": {"timed_subpixels": n_naive, "cpu_s": naive_s,
            "image_s": naive_image}, "cached": {"timed_subpixels": n_cached, "cpu_s": cached_s,
            "image_s_lower_bound": cached_image}, "ratio_upper_bound": naive_image / cached_image}


def training_step(batch: int) -> dict:
    torch.manual_seed(0)
    model = build_model("pixelsnail", channels=3, levels=256, height=32, width=32)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randint(0, 256, (batch, 3, 32, 32))
    t0 = time.process_time()
    loss = nll_per_image(model(x), x, head_of(model)).mean() / 3072
    opt.zero_grad()
    loss.backward()
    opt.step()
    step = time.process_time() - t0
    # The attention calls alone at the same shapes (keys 16, values 128, 1024 positions), 12 blocks.
    attn = CausalAttention(1)
    q, k = (torch.randn(batch, 16, 32, 32, requires_grad=True) for _ in range(2))
    v = torch.randn(batch, 128, 32, 32, requires_grad=True)
    t0 = time.process_time()
    for _ in range(len(model.blocks)):
        attn(q, k, v).sum().backward()
    attention = time.process_time() - t0
    return {"batch": batch, "params": sum(p.numel() for p in model.parameters()), "step_cpu_s": step,
            "attention_cpu_s": attention, "attention_share": attention / step,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "bits_per_dim_at_init": float(loss) / 0.6931471805599453}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--naive-subpixels", type=int, default=3)
    p.add_argument("--cached-rows", type=int, default=2)
    p.add_argument("--batch", type=int, nargs="+", default=[8])
    p.add_argument("--out", type=Path)
    a = p.parse_args()
    torch.set_num_threads(1)
    result = {"meta": {"date": datetime.date.today().isoformat(), "machine": platform.processor() or
                       platform.machine(), "torch": torch.__version__, "threads": 1, "dtype": "float32",
                       "model_args": "builder defaults (paper CIFAR-10 size)"},
              "sampling": [], "training": []}
    for setting in SETTINGS:
        result["sampling"].append(sampling_ratio(setting, a.naive_subpixels, a.cached_rows))
        print(json.dumps(result["sampling"][-1]), flush=True)
    for batch in a.batch:
        result["training"].append(training_step(batch))
        print(json.dumps(result["training"][-1]), flush=True)
    if a.out:
        a.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
