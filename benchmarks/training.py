"""Training throughput of every registered model on CPU: images/s and achieved GFLOP/s (not run by CI).

One training step = forward + mean categorical NLL + backward + optimizer step (the experiment's
optimizer from params.yaml). Two sizes:

- ``mnist``: 28×28×1, K=2, batch 16, the binarized-MNIST sizes (7 layers, h=16, head 32). A model's
  own 28×28 experiment in params.yaml gives its args; a model without one takes its CIFAR-10
  experiment's args with ``layers/hidden/head_hidden`` set to the MNIST size above.
- ``cifar``: 32×32×3, K=256, the model's CIFAR-10 experiment in params.yaml (paper size); batch
  ``--cifar-batch`` (16 by default, the paper's), fewer timed steps (``--cifar-runs``) because one step
  takes seconds to minutes on a CPU.

Intra-op threads are pinned (``--threads``); each figure is the median of the timed steps after one
warm-up step. Both wall time and process CPU time are recorded: on a shared machine wall time
moves with the other jobs' load, CPU time of a one-thread run much less (img/CPU-s is the
comparable figure there; with one thread and an idle machine the two agree). FLOPs per step
(forward + backward) are counted once by torch's FlopCounterMode (convolutions and matmuls; the
LSTM's elementwise gate arithmetic is not counted).

``--label`` names the code version measured (e.g. ``before`` on a copy of the old sources on
PYTHONPATH, ``after`` on this tree); results are merged into ``benchmarks/results/training.json``
under that label, and the table printed at the end compares every stored label.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/training.py --label after --threads 1
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from pixelzoo.models import build_model, registered
from pixelzoo.pipeline.settings import load_params
from pixelzoo.training import make_optimizer

try:  # older checkouts (the "before" runs) kept it in pixelzoo.training
    from pixelzoo.pipeline.settings import resolve_experiment
except ImportError:
    from pixelzoo.training import resolve_experiment

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "training.json"
MNIST_SIZE = {"layers": 7, "hidden": 16, "head_hidden": 32}
SIZES = {
    "mnist": dict(
        channels=1, height=28, width=28, levels=2, datasets=("binarized_mnist", "mnist2", "mnist4")
    ),
    "cifar": dict(channels=3, height=32, width=32, levels=256, datasets=("cifar10",)),
}


def pick_experiment(params: dict[str, Any], model: str, datasets: tuple[str, ...]) -> dict[str, Any] | None:
    """The first experiment of ``model`` on one of ``datasets`` (resolved), or None."""
    for key, entry in params["experiments"].items():
        if entry["model"] == model and entry["dataset"] in datasets:
            return resolve_experiment(params, key)
    return None


def config_for(params: dict[str, Any], model: str, size: str) -> dict[str, Any]:
    """Resolved experiment + the model args used at ``size`` (see the module docstring)."""
    spec = SIZES[size]
    cfg = pick_experiment(params, model, spec["datasets"])
    if cfg is None:  # no experiment at this size: the other size's args, resized for MNIST
        other = "cifar" if size == "mnist" else "mnist"
        cfg = pick_experiment(params, model, SIZES[other]["datasets"])
        if cfg is None:
            raise ValueError(f"model {model!r} has no experiment in params.yaml to take its size from")
        args = dict(cfg.get("model_args") or {})
        if size == "mnist":
            args.update({k: v for k, v in MNIST_SIZE.items() if k in args})
        cfg["model_args"] = args
    return cfg


def step(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor | None) -> None:
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(model(x, y), x).backward()
    opt.step()


def measure(params: dict[str, Any], model_name: str, size: str, batch: int, runs: int) -> dict[str, Any]:
    spec, cfg = SIZES[size], config_for(params, model_name, size)
    n_classes = 10 if cfg.get("conditional") else None
    torch.manual_seed(0)
    model = build_model(model_name, channels=spec["channels"], levels=spec["levels"], height=spec["height"],
                        width=spec["width"], n_classes=n_classes, **(cfg.get("model_args") or {}))
    opt = make_optimizer(model.parameters(), cfg["optimizer"])
    x = torch.randint(0, spec["levels"], (batch, spec["channels"], spec["height"], spec["width"]))
    y = torch.randint(0, 10, (batch,)) if n_classes else None
    with FlopCounterMode(display=False) as counter:  # also the warm-up step
        step(model, opt, x, y)
    wall, cpu = [], []
    for _ in range(runs):
        start, start_cpu = time.perf_counter(), time.process_time()
        step(model, opt, x, y)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    median, median_cpu = statistics.median(wall), statistics.median(cpu)
    flops = counter.get_total_flops()
    return {
        "model": model_name, "size": size, "batch": batch, "model_args": cfg.get("model_args") or {},
        "params": sum(p.numel() for p in model.parameters()), "runs": runs,
        "step_s": [round(t, 4) for t in wall], "median_step_s": round(median, 4),
        "cpu_step_s": [round(t, 4) for t in cpu], "median_cpu_step_s": round(median_cpu, 4),
        "img_per_s": round(batch / median, 2), "img_per_cpu_s": round(batch / median_cpu, 2),
        "gflop_per_step": round(flops / 1e9, 3), "gflop_per_s": round(flops / 1e9 / median, 2),
    }


def table(stored: dict[str, Any]) -> str:
    """Markdown table: one row per (size, model), img/s and GFLOP/s per label, and after/before."""
    labels = sorted(stored, key=lambda lb: lb != "before")  # "before" first: speed-up = after / before
    rows: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for label in labels:
        for r in stored[label]["results"]:
            rows.setdefault((r["size"], r["model"]), {})[label] = r
    head = "| size | model | " + " | ".join(f"{lb} img/s | {lb} img/CPU-s | {lb} GFLOP/s" for lb in labels)
    ratio = len(labels) == 2
    head += " | speed-up (wall, CPU) |" if ratio else " |"
    lines = [head, "|" + "---|" * (2 + 3 * len(labels) + ratio)]
    for (size, model), by in sorted(rows.items()):
        cells = [
            f"{by[lb]['img_per_s']:.2f} | {by[lb].get('img_per_cpu_s', float('nan')):.2f} | "
            f"{by[lb]['gflop_per_s']:.2f}" if lb in by else "– | – | –"
            for lb in labels
        ]
        line = f"| {size} | {model} | " + " | ".join(cells)
        if ratio:
            a, b = (by.get(lb) for lb in labels)
            line += (
                f" | {b['img_per_s'] / a['img_per_s']:.1f}×, "
                f"{b.get('img_per_cpu_s', 0) / a.get('img_per_cpu_s', float('nan')):.1f}×"
                if a and b else " | –"
            )
        lines.append(line + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", required=True, help="code version measured, e.g. before / after")
    parser.add_argument("--models", nargs="+", default=None, help="default: every registered model")
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--runs", type=int, default=5, help="timed steps at the mnist size")
    parser.add_argument("--cifar-runs", type=int, default=1, help="timed steps at the cifar size")
    parser.add_argument("--cifar-batch", type=int, default=16, help="batch at the cifar size")
    parser.add_argument("--params", default=str(ROOT / "params.yaml"))
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    params = load_params(args.params)
    out = Path(args.out)
    stored = json.loads(out.read_text()) if out.exists() else {}
    entry = stored.setdefault(args.label, {"results": []})
    entry.update(machine=f"{platform.machine()} {platform.processor() or ''}".strip(), threads=args.threads,
                 torch=torch.__version__, date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    for size in args.sizes:
        for name in args.models or registered():
            runs, batch = (args.runs, args.batch) if size == "mnist" else (args.cifar_runs, args.cifar_batch)
            result = measure(params, name, size, batch, runs)
            print(json.dumps(result), flush=True)
            entry["results"] = [r for r in entry["results"] if (r["model"], r["size"]) != (name, size)]
            entry["results"].append(result)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(stored, indent=1) + "\n")  # after every model: long runs keep partials
    print(table(stored))


if __name__ == "__main__":
    main()
