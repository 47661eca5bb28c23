"""One-GPU throughput of every architecture at paper size, and GPU-hours per paper row (not run by CI).

For each registered model, at the size of its first CIFAR-10 experiment in params.yaml (else its first
experiment): training img/s in fp32 and bf16 autocast, eager and ``torch.compile``d (a tiny timed loop:
forward, mean categorical NLL, backward, the experiment's optimizer, the experiment's batch), peak
memory, validation img/s (no_grad, float64 sums as the evaluator does), and the time the cached sampler
takes for 16 images. Then a PixelCNN CIFAR-10-shape run of ``--curve-s`` seconds (3 minutes) records its
bits/dim curve: on the processed CIFAR-10 train split if ``data/processed/cifar10`` exists, otherwise on
uniformly random images of that shape (the JSON says which; random data cannot go below 8 bits/dim).
Each paper row's GPU-hours = train images × epochs / the best measured training img/s of its model at
that batch (replaces experiment_costs.py's assumed 50 TFLOP/s). Each measurement runs for a
``--seconds`` budget, so the whole command fits in ~8 minutes on one GPU.

    PYTHONPATH=src python benchmarks/gpu.py            # writes benchmarks/results/gpu-<device>.json
    PYTHONPATH=src python benchmarks/gpu.py --smoke    # seconds on CPU: tiny sizes, a few steps

Not yet measured on a GPU (none was lent to this work).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pixelzoo.likelihood import bits_per_dim, head_of, nll_per_image, nll_per_subpixel
from pixelzoo.models import build_model, registered, tiny_args
from pixelzoo.pipeline.settings import load_params, resolve_experiment
from pixelzoo.sampling import sample
from pixelzoo.training import make_optimizer

ROOT = Path(__file__).resolve().parents[1]
SHAPES = {"cifar10": (3, 32, 32), "mnist": (1, 28, 28), "amat": (1, 28, 28), "digits": (1, 8, 8)}
N_TRAIN = {"cifar10": 45_000, "mnist": 50_000, "amat": 50_000, "digits": 1_400}  # train minus valid


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def source_kind(params: dict[str, Any], cfg: dict[str, Any]) -> str:
    ds = params["datasets"][cfg["dataset"]]
    return params["sources"][ds["source"]]["kind"].replace("torchvision_", "")


def setting(params: dict[str, Any], name: str, smoke: bool) -> dict[str, Any]:
    """Model args, shape, levels, batch and optimizer of ``name``'s paper-size experiment (tiny if smoke)."""
    keys = [k for k, e in params["experiments"].items() if e["model"] == name]
    if not keys:  # a model without a paper row yet (PixelCNN++): its builder's defaults at CIFAR-10 shape
        if smoke:
            return {"experiment": None, "model_args": tiny_args(name), "shape": (3, 8, 8), "levels": 256,
                    "batch": 2, "optimizer": {"name": "adam", "lr": 1e-3}, "conditional": False}
        return {"experiment": None, "model_args": {}, "shape": SHAPES["cifar10"], "levels": 256,
                "batch": 16, "optimizer": {"name": "adam", "lr": 1e-3}, "conditional": False}
    key = next((k for k in keys if params["experiments"][k]["dataset"] == "cifar10"), keys[0])
    cfg = resolve_experiment(params, key)
    shape = SHAPES[source_kind(params, cfg)]
    levels = params["datasets"][cfg["dataset"]]["levels"]
    args, batch = dict(cfg.get("model_args") or {}), int(cfg["batch_size"])
    if smoke:
        args, shape, batch = tiny_args(name), (shape[0], 8, 8), 2
    return {"experiment": key, "model_args": args, "shape": shape, "levels": levels, "batch": batch,
            "optimizer": cfg["optimizer"], "conditional": bool(cfg.get("conditional"))}


def make(name: str, s: dict[str, Any], device: torch.device) -> torch.nn.Module:
    c, h, w = s["shape"]
    torch.manual_seed(0)
    return build_model(name, channels=c, levels=s["levels"], height=h, width=w,
                       n_classes=10 if s["conditional"] else None, **s["model_args"]).to(device)


def batch_of(s: dict[str, Any], device: torch.device, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    x = torch.randint(0, s["levels"], (n, *s["shape"]), device=device)
    return x, (torch.randint(0, 10, (n,), device=device) if s["conditional"] else None)


def autocast(device: torch.device, precision: str) -> Any:
    return torch.autocast(device.type, torch.bfloat16) if precision == "bf16" else nullcontext()


def train_rate(name: str, s: dict[str, Any], device: torch.device, precision: str, compiled: bool,
               seconds: float, min_steps: int) -> dict[str, Any]:
    """Training img/s over a time budget after two warm-up steps (compilation happens there)."""
    model = make(name, s, device)
    opt = make_optimizer(model.parameters(), s["optimizer"])
    run = torch.compile(model) if compiled else model
    head = head_of(model)  # categorical logits, or PixelCNN++'s mixture parameters
    x, y = batch_of(s, device, s["batch"])

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast(device, precision):
            loss = nll_per_subpixel(run(x, y).float(), x, head, check_levels=False).mean()
        loss.backward()
        opt.step()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(2):
        step()
    sync(device)
    warm = time.perf_counter() - start
    steps, start = 0, time.perf_counter()
    while steps < min_steps or time.perf_counter() - start < seconds:
        step()
        steps += 1
        if steps % 5 == 0 or steps >= min_steps:
            sync(device)
    sync(device)
    wall = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return {"img_per_s": round(steps * s["batch"] / wall, 2), "steps": steps, "warmup_s": round(warm, 2),
            "peak_mem_gib": None if peak is None else round(peak / 2**30, 3)}


@torch.no_grad()
def valid_rate(name: str, s: dict[str, Any], device: torch.device, seconds: float, min_steps: int) -> float:
    model = make(name, s, device).eval()
    x, y = batch_of(s, device, s["batch"])
    total = torch.zeros((), dtype=torch.float64, device=device)
    total += nll_per_image(model(x, y), x, head_of(model)).double().sum()  # warm-up
    sync(device)
    steps, start = 0, time.perf_counter()
    while steps < min_steps or time.perf_counter() - start < seconds:
        total += nll_per_image(model(x, y), x, head_of(model)).double().sum()
        steps += 1
    sync(device)
    return round(steps * s["batch"] / (time.perf_counter() - start), 2)


def sampling_s(name: str, s: dict[str, Any], device: torch.device, n: int) -> float:
    model = make(name, s, device).eval()
    c, h, w = s["shape"]
    y = torch.arange(n, device=device) % 10 if s["conditional"] else None
    start = time.perf_counter()
    sample(model, n, channels=c, height=h, width=w, levels=s["levels"], y=y,
           generator=torch.Generator(device).manual_seed(0))
    sync(device)
    return round(time.perf_counter() - start, 3)


def curve(params: dict[str, Any], device: torch.device, seconds: float, smoke: bool) -> dict[str, Any]:
    """PixelCNN on CIFAR-10-shaped data for ``seconds``: train bits/dim per logged step (bf16 on GPU)."""
    s = setting(params, "pixelcnn", smoke)
    s["conditional"] = False
    s["shape"] = (3, 8, 8) if smoke else (3, 32, 32)
    s["levels"] = 256
    data_dir = ROOT / "data" / "processed" / "cifar10"
    if (data_dir / "train.npz").exists() and not smoke:
        x_all = torch.from_numpy(np.load(data_dir / "train.npz")["x"]).long().to(device)
        data = "cifar10 train split"
    else:
        g = torch.Generator().manual_seed(0)
        x_all = torch.randint(0, 256, (max(64, 8 * s["batch"]), *s["shape"]), generator=g).to(device)
        data = "uniform random images of CIFAR-10 shape (no processed CIFAR-10 here; 8 bits/dim is the floor)"
    model = make("pixelcnn", s, device)
    opt = make_optimizer(model.parameters(), s["optimizer"])
    precision = "bf16" if device.type == "cuda" else "fp32"
    dims = math.prod(s["shape"])
    points, step, start = [], 0, time.perf_counter()
    gen = torch.Generator().manual_seed(1)
    while time.perf_counter() - start < seconds or step < 3:
        idx = torch.randint(0, x_all.shape[0], (s["batch"],), generator=gen).to(device)
        x = x_all[idx]
        opt.zero_grad(set_to_none=True)
        with autocast(device, precision):
            nats = nll_per_image(model(x).float(), x, head_of(model))
        nats.mean().backward()
        opt.step()
        step += 1
        if step % 20 == 1 or smoke:
            bpd = float(bits_per_dim(nats.detach().double().mean(), dims))
            elapsed = round(time.perf_counter() - start, 2)
            points.append({"step": step, "s": elapsed, "bits_per_dim": round(bpd, 4)})
    return {"data": data, "precision": precision, "batch": s["batch"], "steps": step, "curve": points}


def gpu_hours(
    params: dict[str, Any], models: dict[str, dict[str, Any]], smoke: bool
) -> dict[str, float | None]:
    """Train images × epochs / the model's best measured training img/s, per paper row (hours).

    Only rows with the measured experiment's model args and source get a figure (None for the
    others, e.g. the depth ablations); under --smoke every row takes its model's tiny rate.
    """
    out = {}
    for key in params["experiments"]:
        cfg = resolve_experiment(params, key)
        m = models.get(cfg["model"])
        if m is None:
            out[key] = None
            continue
        measured = resolve_experiment(params, m["experiment"])
        same = (cfg.get("model_args") or {}) == (measured.get("model_args") or {}) and source_kind(
            params, cfg) == source_kind(params, measured)
        best = max((r["img_per_s"] for r in m["train"].values() if "img_per_s" in r), default=None)
        best = best if same or smoke else None
        n = N_TRAIN[source_kind(params, cfg)] * int(cfg["epochs"])
        out[key] = None if not best else round(n / best / 3600, 3)
    return out


def table(result: dict[str, Any]) -> str:
    variants = [f"{p} {c}" for p in ("fp32", "bf16") for c in ("eager", "compiled")]
    lines = ["| model | " + " | ".join(f"train img/s {v}" for v in variants)
             + " | peak GiB | valid img/s | sample 16 (s) |", "|" + "---|" * (len(variants) + 4)]
    for name, m in result["models"].items():
        cells = [str(m["train"].get(v, {}).get("img_per_s", m["train"].get(v, {}).get("skipped", "–")))
                 for v in variants]
        peak = max((r.get("peak_mem_gib") or 0 for r in m["train"].values()), default=0) or "–"
        tail = f" | {peak} | {m['valid_img_per_s']} | {m['sample_s']} |"
        lines.append(f"| {name} | " + " | ".join(cells) + tail)
    lines += ["", "| paper row | GPU-hours at the measured rate |", "|---|---|"]
    lines += [f"| {k} | {v if v is not None else '–'} |" for k, v in result["gpu_hours"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="CPU-sized check: tiny models, a few steps")
    parser.add_argument("--models", nargs="+", default=None, help="default: every registered model")
    parser.add_argument("--seconds", type=float, default=6.0, help="time budget of each rate measurement")
    parser.add_argument("--curve-s", type=float, default=180.0, help="length of the PixelCNN bits/dim run")
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--params", default=str(ROOT / "params.yaml"))
    parser.add_argument("--out", default=None, help="default: benchmarks/results/gpu-<device>.json")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    if not args.smoke and device.type != "cuda":
        raise SystemExit("benchmarks/gpu.py: no CUDA device here; use --smoke for the CPU check")
    seconds, min_steps = (0.0, 1) if args.smoke else (args.seconds, 3)
    n_samples, curve_s = (2, 0.0) if args.smoke else (args.samples, args.curve_s)
    params = load_params(args.params)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu-smoke"
    result: dict[str, Any] = {"device": name, "torch": torch.__version__, "smoke": args.smoke, "models": {}}
    for model in args.models or registered():
        s = setting(params, model, args.smoke)
        train = {}
        for precision in ("fp32", "bf16"):
            for compiled in (False, True):
                label = f"{precision} {'compiled' if compiled else 'eager'}"
                if compiled and args.smoke:  # compiling takes minutes on CPU
                    train[label] = {"skipped": "smoke"}
                    continue
                train[label] = train_rate(model, s, device, precision, compiled, seconds, min_steps)
        result["models"][model] = {
            "experiment": s["experiment"], "batch": s["batch"], "shape": list(s["shape"]), "train": train,
            "valid_img_per_s": valid_rate(model, s, device, seconds, min_steps),
            "sample_s": sampling_s(model, s, device, n_samples), "sample_n": n_samples,
        }
        print(model, json.dumps(result["models"][model]), flush=True)
    result["pixelcnn_curve"] = curve(params, device, curve_s, args.smoke)
    result["gpu_hours"] = gpu_hours(params, result["models"], args.smoke)
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"gpu-{slug}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(table(result))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
