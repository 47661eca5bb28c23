"""Training img/s of the default forward (masked convolutions cropped, maps channels-last) and of the
reference (``weight * mask`` on NCHW maps: the forward before issue 24).

One process measures both forms of the same model, alternating a reference step and a default step
``--rounds`` times (after one warm-up step of each), so that the machine's load hits both alike; each
figure is the median over the rounds. A step is what the training loop does: forward + the per-image
NLL in nats summed over the batch / batch size (``training.image_nats``) + backward + the experiment's
optimizer step (params.yaml), on random images of the experiment's shape (the convolutions' cost does
not depend on the pixel values). Intra-op threads are pinned (``--threads``); the load average before and
after the run is recorded (the machine may be shared).

Host memory (``--host-memory``): ``reused`` is what the train stage runs with
(``pipeline.startup.reuse_freed_memory``: no page faults per step); ``glibc`` is glibc's default (the
stages before it); ``both`` (the default) measures ``glibc`` in a child process, then ``reused``. The
training step before issue 24 is the reference form under ``glibc``; the one now, the default form
under ``reused``.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/cropped_convs.py --experiment pixelcnn-cifar10

writes ``benchmarks/results/cropped_convs.json`` (one entry per experiment and host-memory mode,
replaced on a rerun).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from pixelzoo.models import build_model
from pixelzoo.nn.masks import masked_reference
from pixelzoo.pipeline.settings import load_params, resolve_experiment
from pixelzoo.pipeline.startup import reuse_freed_memory
from pixelzoo.training import image_nats, make_optimizer

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "cropped_convs.json"
# Image shape per dataset source kind (the benchmark never reads the data).
SHAPES = {"cifar10": (3, 32, 32), "mnist": (1, 28, 28), "amat": (1, 28, 28), "digits": (1, 8, 8)}


def timed_step(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor,
               y: torch.Tensor | None, reference: bool) -> tuple[float, float]:
    """(wall, process CPU) seconds of one training step; masked convolutions as ``weight * mask`` on
    NCHW maps if ``reference``. With one thread the CPU time moves less with the other jobs on a
    shared machine."""
    with masked_reference() if reference else contextlib.nullcontext():
        start, start_cpu = time.perf_counter(), time.process_time()
        opt.zero_grad(set_to_none=True)
        (image_nats(model, x, y, None, check_levels=False).sum() / len(x)).backward()
        opt.step()
        return time.perf_counter() - start, time.process_time() - start_cpu


def measure(params: dict[str, Any], key: str, batch: int, rounds: int) -> dict[str, Any]:
    cfg = resolve_experiment(params, key)
    ds = params["datasets"][cfg["dataset"]]
    kind = params["sources"][ds["source"]]["kind"].replace("torchvision_", "")
    channels, height, width = SHAPES[kind]
    n_classes = 10 if cfg.get("conditional") else None
    torch.manual_seed(0)
    model = build_model(cfg["model"], channels=channels, levels=ds["levels"], height=height, width=width,
                        n_classes=n_classes, **(cfg.get("model_args") or {}))
    opt = make_optimizer(model.parameters(), cfg["optimizer"])
    x = torch.randint(0, ds["levels"], (batch, channels, height, width))
    y = torch.randint(0, 10, (batch,)) if n_classes else None
    times: dict[str, list[float]] = {"reference": [], "default": []}
    cpu: dict[str, list[float]] = {"reference": [], "default": []}
    for r in range(rounds + 1):  # round 0 is the warm-up of both forms
        for form in ("reference", "default"):
            wall, cpu_s = timed_step(model, opt, x, y, form == "reference")
            if r:
                times[form].append(round(wall, 4))
                cpu[form].append(round(cpu_s, 4))
    med = {form: statistics.median(ts) for form, ts in times.items()}
    med_cpu = {form: statistics.median(ts) for form, ts in cpu.items()}
    return {
        "experiment": key, "model": cfg["model"], "model_args": cfg.get("model_args") or {},
        "shape": [channels, height, width], "levels": ds["levels"], "batch": batch, "rounds": rounds,
        "step_s": times, "median_step_s": {f: round(t, 4) for f, t in med.items()},
        "img_per_s": {f: round(batch / t, 3) for f, t in med.items()},
        "speedup": round(med["reference"] / med["default"], 3),
        "cpu_step_s": cpu, "img_per_cpu_s": {f: round(batch / t, 3) for f, t in med_cpu.items()},
        "speedup_cpu": round(med_cpu["reference"] / med_cpu["default"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", nargs="+", default=["pixelcnn-cifar10"], help="params.yaml keys")
    parser.add_argument("--batch", type=int, default=16, help="16: the paper's")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--params", default=str(ROOT / "params.yaml"))
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--host-memory", choices=("both", "reused", "glibc"), default="both",
                        help="reused: as the train stage runs; glibc: glibc's default; both: each")
    args = parser.parse_args()
    if args.host_memory == "both":  # glibc's default needs a process that never switched it off
        child = [a for a in sys.argv[1:] if a not in ("--host-memory", "both", "--host-memory=both")]
        subprocess.run([sys.executable, __file__, *child, "--host-memory", "glibc"], check=True)
        args.host_memory = "reused"
    if args.host_memory == "reused" and not reuse_freed_memory():
        args.host_memory = "glibc (reuse_freed_memory did not apply)"
    torch.set_num_threads(args.threads)
    params = load_params(args.params)
    out = Path(args.out)
    stored = json.loads(out.read_text()) if out.exists() else {}
    for key in args.experiment:
        load_before = os.getloadavg()
        result = measure(params, key, args.batch, args.rounds)
        result.update(
            host_memory=args.host_memory, threads=args.threads, torch=torch.__version__, cpus=os.cpu_count(),
            machine=f"{platform.machine()} {platform.processor() or ''}".strip(),
            load_avg_before=[round(v, 2) for v in load_before],
            load_avg_after=[round(v, 2) for v in os.getloadavg()],
            date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        )
        print(json.dumps(result), flush=True)
        stored[f"{key}, host memory {args.host_memory}"] = result
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(stored, indent=1) + "\n")
    for key, r in stored.items():
        print(f"{key}: batch {r['batch']}, {r['threads']} thread(s): "
              f"reference {r['img_per_s']['reference']:.2f} "
              f"img/s, default {r['img_per_s']['default']:.2f} img/s, {r['speedup']:.2f}× wall, "
              f"{r['speedup_cpu']:.2f}× CPU time "
              f"(load {r['load_avg_before'][0]:.2f} -> {r['load_avg_after'][0]:.2f})")


if __name__ == "__main__":
    main()
