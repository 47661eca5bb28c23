"""What the loop's divergence guard costs per step: ``FiniteGuard.step_unless_bad`` against a bare
``optimizer.step()`` (not run by CI).

The guard keeps the no-sync promise of the loop (a non-finite loss is skipped on the device, the host
reads a flag only at log points) by saving the parameters and optimizer state before each step and
picking, with ``torch.where``, the old or the new tensors. This measures that price on the step it
guards: forward + NLL + backward + step, alternating a guarded and a bare step ``--rounds`` times in
one process (after a warm-up of each), so the machine's load hits both alike; each figure is the median.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/finite_guard.py

Sizes: the experiments of the CI profile (``ci/params.yaml``: tiny widths, 8×8 digits) and of the cpu
profile (``ci/cpu.yaml``: the PixelRNN binarized-MNIST size, 28×28), with their optimizer and batch.
Writes ``benchmarks/results/finite_guard.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from pixelzoo.likelihood import head_of, nll_per_image
from pixelzoo.models import build_model
from pixelzoo.pipeline.settings import load_params, resolve_experiment
from pixelzoo.training import FiniteGuard, make_optimizer

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "finite_guard.json"
SHAPES = {"sklearn_digits": (1, 8, 8), "fashion_mnist": (1, 28, 28), "rgb_digits": (3, 8, 8)}
DEFAULT = [("ci/params.yaml", "pixelcnn-digits"), ("ci/params.yaml", "gated_pixelcnn-digits"),
           ("ci/params.yaml", "row_lstm-digits"), ("ci/cpu.yaml", "pixelcnn-fashion2"),
           ("ci/cpu.yaml", "gated_pixelcnn-fashion2")]


def _setup(params_file: str, key: str) -> tuple[torch.nn.Module, Any, torch.Tensor, int]:
    params = load_params(ROOT / params_file)
    cfg = resolve_experiment(params, key)
    ds = params["datasets"][cfg["dataset"]]
    c, h, w = SHAPES[params["sources"][ds["source"]]["kind"]]
    torch.manual_seed(0)
    model = build_model(cfg["model"], channels=c, levels=ds["levels"], height=h, width=w,
                        **(cfg.get("model_args") or {}))
    x = torch.randint(0, ds["levels"], (int(cfg["batch_size"]), c, h, w))
    return model, cfg, x, c * h * w


def _step(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor,
          guard: FiniteGuard | None) -> float:
    start = time.process_time()
    loss = nll_per_image(model(x), x, head_of(model)).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if guard is None:
        opt.step()
    else:
        guard.step_unless_bad(loss, opt, list(model.parameters()))
    return time.process_time() - start


def measure(params_file: str, key: str, rounds: int) -> dict[str, Any]:
    model, cfg, x, _ = _setup(params_file, key)
    opt = make_optimizer(model.parameters(), cfg["optimizer"])
    guard = FiniteGuard(torch.device("cpu"))
    cpu: dict[str, list[float]] = {"bare": [], "guarded": []}
    for r in range(rounds + 1):  # round 0 warms both up (and creates the optimizer state)
        for form in ("bare", "guarded"):
            t = _step(model, opt, x, guard if form == "guarded" else None)
            if r:
                cpu[form].append(t)
    med = {f: statistics.median(v) for f, v in cpu.items()}
    n_params = sum(p.numel() for p in model.parameters())
    return {"params_file": params_file, "experiment": key, "model": cfg["model"], "n_params": n_params,
            "n_tensors": len(list(model.parameters())), "batch": int(x.shape[0]), "rounds": rounds,
            "median_cpu_step_ms": {f: round(1000 * t, 3) for f, t in med.items()},
            "overhead_ms": round(1000 * (med["guarded"] - med["bare"]), 3),
            "overhead_pct": round(100 * (med["guarded"] / med["bare"] - 1), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    rows = [measure(f, k, args.rounds) for f, k in DEFAULT]
    out = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "torch": torch.__version__,
           "threads": args.threads, "load_avg_before": round(load, 2),
           "load_avg_after": round(os.getloadavg()[0], 2), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    for r in rows:
        m = r["median_cpu_step_ms"]
        print(f"{r['experiment']:28s} {r['n_params']:>8,} params {r['n_tensors']:>3} tensors  bare "
              f"{m['bare']:8.2f} ms  guarded {m['guarded']:8.2f} ms  +{r['overhead_ms']:.2f} ms "
              f"({r['overhead_pct']:+.1f}%)")
    print(f"CPU time per step, median of {args.rounds}, {args.threads} thread(s), load {load:.2f} -> "
          f"{out['load_avg_after']:.2f}")


if __name__ == "__main__":
    main()
