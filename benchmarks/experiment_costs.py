"""Size and compute of every experiment in params.yaml at paper size (not run by CI).

For each experiment: parameters, forward FLOPs per image (counted by torch's FlopCounterMode on one
image), the training budget in images (train split × epochs) and the GPU-hours that budget takes at an
ASSUMED sustained rate (``--tflops``, default 50 TFLOP/s: a fraction of an H100's bf16 peak, because these
are small convolutions and the LSTMs run one row/column at a time). Training FLOPs = 3 × forward
(forward + backward). It is an estimate, not a measurement: benchmarks/gpu.py measures the rate on a
GPU and replaces it.

Usage: PYTHONPATH=src python benchmarks/experiment_costs.py [--tflops 50]
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from pixelzoo.models import build_model
from pixelzoo.pipeline.settings import load_params, resolve_experiment

# Image shape, classes and train-split size per source (train minus the carved validation split).
SOURCES = {
    "binarized_mnist": dict(channels=1, height=28, width=28, n_classes=None, n_train=50_000),
    "mnist": dict(channels=1, height=28, width=28, n_classes=10, n_train=50_000),
    "cifar10": dict(channels=3, height=32, width=32, n_classes=10, n_train=45_000),
}


def forward_flops(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor | None) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x, y)
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tflops", type=float, default=50.0, help="assumed sustained TFLOP/s on the GPU")
    args = parser.parse_args()
    params = load_params("params.yaml")
    rate = f"GPU-h @{args.tflops:g}"
    print(f"{'experiment':<42} {'params':>11} {'GFLOP/img':>10} {'epochs':>6} {rate:>12}")
    for key in params["experiments"]:
        cfg = resolve_experiment(params, key)
        ds = params["datasets"][cfg["dataset"]]
        kind = params["sources"][ds["source"]]["kind"]
        src = SOURCES[{"amat": "binarized_mnist"}.get(kind, kind.replace("torchvision_", ""))]
        n_classes = src["n_classes"] if cfg.get("conditional") else None
        model = build_model(cfg["model"], channels=src["channels"], levels=ds["levels"], height=src["height"],
                            width=src["width"], n_classes=n_classes, **(cfg.get("model_args") or {})).eval()
        x = torch.zeros(1, src["channels"], src["height"], src["width"], dtype=torch.long)
        y = torch.zeros(1, dtype=torch.long) if n_classes else None
        flops = forward_flops(model, x, y)
        n_params = sum(p.numel() for p in model.parameters())
        hours = 3 * flops * src["n_train"] * cfg["epochs"] / (args.tflops * 1e12) / 3600
        print(f"{key:<42} {n_params:>11,} {flops / 1e9:>10.2f} {cfg['epochs']:>6} {hours:>12.1f}")


if __name__ == "__main__":
    main()
