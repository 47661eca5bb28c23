"""Naive vs cached sampling speed per architecture (issue 12). Not run by CI.

Two settings, batch 16, float32, threads pinned (``--threads``):
- ``28x28x1``: K=2 at the binarized-MNIST sizes (params.yaml ``<model>-binarized_mnist``; models
  without such an entry get the same 7 layers of 16 units and a 32-unit head, see MNIST_FALLBACK);
- ``32x32x3``: K=256 at the CIFAR-10 paper sizes (params.yaml ``<model>-cifar10``; seed 004 has no
  CIFAR-10 entry and runs at its ``-mnist4`` size).

Both samplers run through ``pixelzoo.sampling.sample`` with the same generator, in the same process,
one after the other. A run may time only the first ``m`` sub-pixels in generation order (the others
are marked known, so neither sampler computes them) and scale the time by total/m: the naive sampler
costs one full forward per sub-pixel wherever it is, so this extrapolation is exact up to noise; for
the cached sampler ``m`` is a whole number of image rows, so per-row work (the Gated PixelCNN's
vertical stack) is counted in proportion. Runs of the two samplers alternate. Reported: median
images/s over ``--runs`` timed runs after one warm-up, the ratio, and the share of timed sub-pixels
that both samplers drew alike (float32 rounding may flip a rare draw; float64 equality is a test,
tests/test_cached_sampling.py).

    PYTHONPATH=src python benchmarks/sampling.py --threads 1
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from pixelzoo import sampling
from pixelzoo.models import build_model, generation_order, registered
from pixelzoo.pipeline.settings import load_params

ROOT = Path(__file__).resolve().parents[1]
# Same depth and width as the binarized-MNIST entries, for models params.yaml does not size there.
MNIST_FALLBACK: dict[str, dict[str, Any]] = {
    "gated_pixelcnn": {"layers": 7, "hidden": 16, "kernel_size": 5, "head_hidden": 32},
    "seed004_pixelcnn": {"layers": 4, "features": 16, "dropout": 0.0},  # 4 per half: 7 gated blocks
    "multiscale_pixelrnn": {
        "scale": 2, "base": "row_lstm", "layers": 7, "hidden": 16, "head_hidden": 32, "cond_channels": 16
    },
}
# Paper sizes of models params.yaml has no CIFAR-10 entry for yet (PixelCNN++: the builder's defaults,
# 5 blocks per resolution, 160 filters, 10 components). Time its cached sampler over whole 4-row
# periods (--cached-rows 28 4): its half- and quarter-resolution layers run on some rows only.
CIFAR_FALLBACK: dict[str, dict[str, Any]] = {"pixelcnn_pp": {}}
SETTINGS = {  # name -> (channels, size, levels, datasets searched in params.yaml, in order)
    "28x28x1": (1, 28, 2, ("binarized_mnist",)),
    "32x32x3": (3, 32, 256, ("cifar10", "mnist4")),
}


def model_args(params: dict, name: str, setting: str) -> dict[str, Any]:
    """The model args params.yaml gives ``name`` for the setting's dataset (see the module docstring)."""
    for dataset in SETTINGS[setting][3]:
        for exp in params["experiments"].values():
            if exp["model"] == name and exp["dataset"] == dataset:
                return dict(exp.get("model_args") or {})
    if setting == "28x28x1" and name in MNIST_FALLBACK:
        return dict(MNIST_FALLBACK[name])
    if setting == "32x32x3" and name in CIFAR_FALLBACK:
        return dict(CIFAR_FALLBACK[name])
    raise KeyError(f"no size for {name} at {setting} in params.yaml or MNIST_FALLBACK")


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else the platform's processor string."""
    info = Path("/proc/cpuinfo")
    for line in info.read_text().splitlines() if info.exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def timed_sample(
    model: torch.nn.Module, batch: int, shape: dict[str, int], steps: int, method: str
) -> tuple[float, torch.Tensor]:
    """Seconds to draw the first ``steps`` sub-pixels in generation order (the rest known) and the images."""
    c, h, w = shape["channels"], shape["height"], shape["width"]
    known = torch.ones(c * h * w, dtype=torch.bool)
    known[generation_order(model, c, h, w)[:steps]] = False
    x0 = torch.zeros(batch, c, h, w, dtype=torch.long)
    start = time.perf_counter()
    x = sampling.sample(
        model, batch, **shape, generator=torch.Generator().manual_seed(0), method=method,
        x_init=x0, known=known.view(c, h, w),
    )
    return time.perf_counter() - start, x


def bench(
    model: torch.nn.Module, batch: int, shape: dict[str, int], steps: dict[str, int], runs: int
) -> dict[str, Any]:
    total = shape["channels"] * shape["height"] * shape["width"]
    times: dict[str, list[float]] = {"naive": [], "cached": []}
    images = {}
    for method in times:  # warm-up: allocator, kernels
        timed_sample(model, batch, shape, 1, method)
    for _ in range(runs):  # alternate, so that a change of machine load hits both samplers alike
        for method in times:
            t, images[method] = timed_sample(model, batch, shape, steps[method], method)
            times[method].append(t * total / steps[method])  # extrapolated to the whole image
    out: dict[str, Any] = {
        method: {
            "timed_subpixels": steps[method],
            "image_s": [round(t, 3) for t in ts],
            "images_per_s": batch / statistics.median(ts),
        }
        for method, ts in times.items()
    }
    out["ratio"] = out["cached"]["images_per_s"] / out["naive"]["images_per_s"]
    common = min(steps.values())
    order = generation_order(model, shape["channels"], shape["height"], shape["width"])[:common]
    same = images["naive"].flatten(1)[:, order] == images["cached"].flatten(1)[:, order]
    out["same_draws"] = same.float().mean().item()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=registered())
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch", type=int, nargs="+", default=[16], help="one or more batch sizes")
    parser.add_argument("--naive-steps", type=int, nargs=2, default=[112, 1], metavar=("MNIST", "CIFAR"),
                        help="sub-pixels the naive sampler is timed on, per setting")
    parser.add_argument("--cached-rows", type=int, nargs=2, default=[28, 1], metavar=("MNIST", "CIFAR"),
                        help="image rows the cached sampler is timed on, per setting")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "sampling.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    params = load_params(ROOT / "params.yaml")
    rows = []
    for setting in args.settings:
        channels, size, levels, _ = SETTINGS[setting]
        k = list(SETTINGS).index(setting)
        shape = {"channels": channels, "height": size, "width": size, "levels": levels}
        steps = {"naive": args.naive_steps[k], "cached": args.cached_rows[k] * size * channels}
        for name in args.models:
            margs = model_args(params, name, setting)
            torch.manual_seed(0)
            model = build_model(name, channels=channels, levels=levels, height=size, width=size, **margs)
            model.eval()
            for batch in args.batch:
                row = {"setting": setting, "model": name, "model_args": margs, "batch": batch}
                if not hasattr(model, "sampling_session"):
                    row["error"] = "no sampling_session"
                else:
                    row.update(bench(model, batch, shape, steps, args.runs))
                rows.append(row)
                print(json.dumps(row), flush=True)
    meta = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{cpu_name()}, {os.cpu_count()} CPU(s) visible, {platform.machine()}",
        "torch": torch.__version__,
        "threads": args.threads,
        "runs": args.runs,
        "load_avg_1_5_15_at_end": [round(v, 2) for v in os.getloadavg()],  # a shared machine is noisy
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "results": rows}, indent=1) + "\n")
    print(f"\n{'setting':9} {'model':22} {'batch':>5} {'naive img/s':>12} {'cached img/s':>13} "
          f"{'ratio':>8} {'same':>6}")
    for r in rows:
        if "error" in r:
            print(f"{r['setting']:9} {r['model']:22} {r['error']}")
            continue
        print(f"{r['setting']:9} {r['model']:22} {r['batch']:5} "
              f"{r['naive']['images_per_s']:12.4g} "
              f"{r['cached']['images_per_s']:13.4g} {r['ratio']:8.1f} {r['same_draws']:6.3f}")
    print(f"\n{meta}\nwritten {args.out}")


if __name__ == "__main__":
    main()
