"""Forward+backward time of the PixelRNNs at the paper's CIFAR-10 size, on CPU.

Row LSTM and Diagonal BiLSTM, 12 layers, h=128, 1024 output maps, K=256, one batch of 16 32×32×3
images (PixelRNN §5: batch 16 for CIFAR-10). Prints the median over ``--runs`` timed steps (after
one warm-up step) and the parameter count of each model. Not run by CI.

    PYTHONPATH=src python benchmarks/rnn_speed.py --threads 2 --runs 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from pixelzoo.models import build_model


def step_seconds(model: torch.nn.Module, x: torch.Tensor) -> float:
    """One forward + backward of the mean categorical NLL; wall seconds."""
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    loss = F.cross_entropy(model(x), x)
    loss.backward()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["row_lstm", "diagonal_bilstm"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randint(0, 256, (args.batch, 3, 32, 32))
    for name in args.models:
        model = build_model(
            name, channels=3, levels=256, height=32, width=32, layers=args.layers, hidden=args.hidden
        )
        step_seconds(model, x)  # warm-up: allocator, kernels
        times = [step_seconds(model, x) for _ in range(args.runs)]
        result = {
            "model": name,
            "layers": args.layers,
            "hidden": args.hidden,
            "batch": args.batch,
            "threads": args.threads,
            "params": sum(p.numel() for p in model.parameters()),
            "fwd_bwd_median_s": round(statistics.median(times), 3),
            "runs_s": [round(t, 3) for t in times],
            "torch": torch.__version__,
        }
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
