"""Training and evaluation throughput of every experiment of a params profile, and the wall time it plans.

For each experiment: the model as the profile builds it, at the image size of its data (28×28 for
Fashion-MNIST), random levels (cost does not depend on the pixel values). Times ``--steps`` training
steps (forward, backward, clipping, optimizer step) at the experiment's batch size after one warm-up
step, and ``--eval-batches`` forward passes at ``evaluate.batch_size``; prints the medians as images/s.
Then, from the CPU-time rates (an idle machine's wall time), the training + validation + test-evaluation
time that the profile's own budget (``max_steps``, valid/test sizes) implies, per experiment and in total.
Sampling, preprocessing, MLflow and the report are not included. Threads are pinned (``--threads``,
default 1 as the profiles run). Not run by CI.

    PYTHONPATH=src python benchmarks/profile_throughput.py --params ci/cpu.yaml --steps 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import torch

from pixelzoo import checkpoint, training
from pixelzoo.data.sources import KINDS
from pixelzoo.likelihood import head_of, nll_per_image
from pixelzoo.pipeline.settings import load_params, resolve_experiment

TRAIN_IMAGES = 60_000  # Fashion-MNIST / MNIST training split (validation is carved from it)
TEST_IMAGES = 10_000


def _median_seconds(fn: Any, runs: int) -> tuple[float, float]:
    """Median (wall, process CPU) seconds of ``fn``; with one thread the CPU time is what an idle
    machine's wall time would be, while the wall time also counts waiting for a busy shared CPU."""
    fn()  # warm-up: allocator, kernels
    wall, cpu = [], []
    for _ in range(runs):
        w, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return statistics.median(wall), statistics.median(cpu)


def measure(cfg: dict[str, Any], meta: dict[str, Any], steps: int, eval_batch: int, eval_runs: int
            ) -> dict[str, Any]:
    """img/s of training steps and of evaluation forwards for one resolved experiment."""
    torch.manual_seed(0)
    model = checkpoint.build_from_config(cfg, meta)
    optimizer = training.make_optimizer(model.parameters(), cfg["optimizer"])
    shape = (meta["channels"], meta["height"], meta["width"])

    def batch(n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = torch.randint(0, meta["levels"], (n, *shape))
        return x, torch.randint(0, meta["n_classes"], (n,)) if cfg.get("conditional") else None

    bs = int(cfg["batch_size"])
    xt, yt = batch(bs)

    def train_step() -> None:
        model.train()
        loss = nll_per_image(model(xt, yt).float(), xt, head_of(model)).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.get("grad_clip"):
            torch.nn.utils.clip_grad_norm_(model.parameters(), float(cfg["grad_clip"]))
        optimizer.step()

    xe, ye = batch(eval_batch)

    @torch.no_grad()
    def eval_step() -> None:
        model.eval()
        nll_per_image(model(xe, ye).float(), xe, head_of(model))

    t_train, c_train = _median_seconds(train_step, steps)
    t_eval, c_eval = _median_seconds(eval_step, eval_runs)
    return {"params": training.count_params(model), "batch_size": bs,
            "train_step_cpu_s": round(c_train, 4), "train_img_s_cpu": round(bs / c_train, 1),
            "eval_img_s_cpu": round(eval_batch / c_eval, 1),
            "train_img_s_wall": round(bs / t_train, 1), "eval_img_s_wall": round(eval_batch / t_eval, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="ci/cpu.yaml")
    parser.add_argument("--only", nargs="*", help="experiment keys (default: all)")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per experiment")
    parser.add_argument("--eval-batches", type=int, default=2)
    parser.add_argument("--size", type=int, default=28, help="image side of the profile's data")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    params = load_params(args.params)
    eval_batch = int(params["evaluate"]["batch_size"])
    total = 0.0
    for key in args.only or list(params["experiments"]):
        cfg = resolve_experiment(params, key)
        ds = params["datasets"][cfg["dataset"]]
        kind = KINDS[params["sources"][ds["source"]]["kind"]]
        meta = {"channels": kind.channels, "levels": ds["levels"], "height": args.size, "width": args.size,
                "n_classes": kind.n_classes}
        r = measure(cfg, meta, args.steps, eval_batch, args.eval_batches)
        # The profile's budget: steps (capped by epochs), one validation per epoch, one test evaluation.
        n_train = ds.get("n_train") or TRAIN_IMAGES - (ds.get("valid_size") or 0)
        n_valid, n_test = ds.get("valid_size") or 0, ds.get("n_test") or TEST_IMAGES
        steps_per_epoch = -(-n_train // r["batch_size"])
        steps = cfg["epochs"] * steps_per_epoch
        steps = steps if cfg.get("max_steps") is None else min(steps, int(cfg["max_steps"]))
        epochs_run = -(-steps // steps_per_epoch)
        planned = steps * r["train_step_cpu_s"] + (epochs_run * n_valid + n_test) / r["eval_img_s_cpu"]
        total += planned
        print(json.dumps({"experiment": key, **r, "steps": steps, "images_seen": steps * r["batch_size"],
                          "planned_train_eval_s": round(planned)}), flush=True)
    print(json.dumps({"planned_total_train_eval_s": round(total), "threads": args.threads,
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
