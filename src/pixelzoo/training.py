"""One training loop for every model (PixelRNN / PixelCNN family), readable top to bottom.

The same code runs on CPU, on one GPU and under ``torchrun`` (DDP); the few places where these differ
are marked ``# [DDP]`` / ``# [CUDA]``. Configuration is plain data: the experiment entry of
``params.yaml`` merged over ``train_defaults`` (:func:`pixelzoo.pipeline.settings.resolve_experiment`),
validated before it gets here.

What the loop guarantees:
- CPU runs are deterministic (seeds + ``torch.use_deterministic_algorithms``), and a run that was
  killed and resumed from its scratch checkpoint ends with bitwise the same weights as an
  uninterrupted one: the checkpoint holds model, optimizer, RNG state and the position in the data
  order, and the data order of epoch ``e`` is a pure function of ``(seed, e)``.
- The resumable checkpoint lives in a scratch folder that DVC does not own (DVC deletes declared
  outputs before re-running a stage); it is only removed after the stage finished completely.
- The stage output is the checkpoint with the best validation NLL (state_dict + resolved config).
- The PixelCNN++ recipe (:mod:`pixelzoo.recipe`), off unless set: ``lr_decay_per_step`` multiplies the
  learning rate after every optimizer step; with ``ema_decay`` the EMA of the weights is updated after
  every applied step and is what validation, the best-checkpoint choice and ``model.pt`` use (marked
  ``weights: "ema"``); the scratch checkpoint holds the raw weights, the EMA and the scheduler state.
- A model with a ``data_init_(x, y)`` hook (PixelCNN++ ``weight_norm``) is initialised from the first
  training batch once, on a fresh start (:func:`init_from_data`), in a forked RNG: never on a resume.
- A NaN/Inf loss is never applied: its optimizer step (and every later one) is skipped on the device
  (:class:`FiniteGuard`), and the run stops at the next log point, checkpoint save or epoch end with
  :class:`TrainingDiverged` naming the epoch and the first bad step; the last resumable checkpoint, written
  before the fault, is kept. Between log points the loop reads nothing back to the host
  (tests/test_host_syncs.py).
- Checkpoints hold tensors and plain data only and are read with ``torch.load(weights_only=True)``; an
  unreadable one is a :class:`CorruptFile` error naming the file and the command that rebuilds it.
- [DDP] ``batch_size`` is the *global* batch: each optimizer step takes the same images in the same
  order whatever the number of processes; rank r trains on every world-th image of the batch and the
  loss is scaled so that DDP's gradient average equals the one-process gradient. Validation is split
  into contiguous slices, one per rank, summed across ranks: every image counts exactly once. Only
  rank 0 writes files and logs. Proven on CPU with the gloo backend (tests/test_distributed.py);
  NCCL on GPUs has not been run in this project.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from pixelzoo import checkpoint
from pixelzoo.checkpoint import build_from_config
from pixelzoo.data.splits import Split, load_splits
from pixelzoo.device import DistInfo, all_sum, autocast_dtype, pick_device, setup_distributed
from pixelzoo.errors import ParamsError, TrainingDiverged, kill_point
from pixelzoo.evaluation import evaluate_nll
from pixelzoo.integrity import RESUME_CODE, code_digest, config_digest
from pixelzoo.likelihood import bits_per_dim, head_of, nll_per_image
from pixelzoo.optimizers import OPTIMIZERS
from pixelzoo.recipe import EMA, exponential_lr

MetricLogger = Callable[[dict[str, float], int], None]


def seed_everything(seed: int, device: torch.device) -> None:
    """Seed torch (and numpy); on CPU also insist on deterministic kernels."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """Shuffled indices of epoch ``epoch``: a pure function of (seed, epoch), so a resume can rebuild it."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


# ----------------------------------------------------------------------------- seeds, model, optimizer, data
def check_model(cfg: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
    """Build the model once on the CPU so a builder's own checks (e.g. ``hidden >= channels``) fail before
    any work, as a ParamsError naming the experiment.

    Not on the meta device: there every op runs through Python decompositions and the first one imports
    torch._dynamo, 1.3 s for the smallest model against <= 0.15 s on the CPU for the largest paper model
    (multiscale, 19 M parameters)."""
    try:
        build_from_config(cfg, meta)
    except (ValueError, TypeError) as err:
        raise ParamsError(f"experiments.{cfg['name']}.model_args: {err}") from err


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def make_recipe(cfg: Mapping[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer
                ) -> tuple[EMA | None, torch.optim.lr_scheduler.LRScheduler | None]:
    """The EMA of ``model`` and the per-step LR decay of ``optimizer``, each None when its knob is unset
    (then nothing of the loop changes: runs without them are bit-identical to before they existed)."""
    ema = EMA(model, float(cfg["ema_decay"])) if cfg["ema_decay"] is not None else None
    decay = cfg["lr_decay_per_step"]
    return ema, exponential_lr(optimizer, float(decay)) if decay is not None else None


def make_optimizer(params: Any, opt_cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    """``{name: rmsprop|adam|sgd, lr: ..., <other torch kwargs>}`` -> optimizer."""
    opt_cfg = dict(opt_cfg)
    name = str(opt_cfg.pop("name", "")).lower()
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer.name must be one of {sorted(OPTIMIZERS)}, got {name!r}")
    return getattr(torch.optim, OPTIMIZERS[name])(params, **opt_cfg)


def image_nats(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, amp: torch.dtype | None,
    check_levels: bool = True, bare: nn.Module | None = None,
) -> torch.Tensor:
    """Per-image NLL in nats; the forward may run under autocast, the loss is always fp32. ``bare``: the
    unwrapped module when ``model`` is a wrapper ([DDP] does not forward ``likelihood_head``)."""
    with torch.autocast(x.device.type, dtype=amp, enabled=amp is not None):
        logits = model(x, y)
    return nll_per_image(logits.float(), x, head_of(bare if bare is not None else model), check_levels)


class TrainingInterrupted(RuntimeError):
    """Raised by the ``interrupt_after_steps`` test hook: behaves like a kill after that step."""


# ----------------------------------------------------------------------------- device-side step guard
class FiniteGuard:
    """Skips, on the device, every optimizer step from the first non-finite loss on (as AMP's gradient
    scaler does), so the loop never reads a value back to the host per step. The host asks
    :meth:`first_bad` only at log points, checkpoint saves and epoch ends, and then raises naming the
    step. A skipped step leaves parameters and (existing) optimizer state exactly as they were:
    ``torch.where`` picks the old tensors, and picks the new ones bit for bit when the loss is finite."""

    def __init__(self, device: torch.device, global_step: int = 0) -> None:
        self.bad = torch.zeros((), dtype=torch.bool, device=device)  # sticky: once bad, skip the rest
        self.step = torch.full((), global_step, dtype=torch.int64, device=device)  # global step, on device
        self.first = torch.full((), -1, dtype=torch.int64, device=device)  # first bad global step
        self.loss = torch.zeros((), dtype=torch.float32, device=device)  # its loss

    def step_unless_bad(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer,
                        params: list[torch.Tensor], bad_elsewhere: torch.Tensor | None = None) -> None:
        self.step += 1
        now_bad = ~torch.isfinite(loss.detach())
        if bad_elsewhere is not None:  # [DDP] a non-finite loss on any rank skips the step on every rank
            now_bad = now_bad | bad_elsewhere
        newly = now_bad & ~self.bad
        self.first = torch.where(newly, self.step, self.first)
        self.loss = torch.where(newly, loss.detach().float(), self.loss)
        self.bad = self.bad | now_bad
        # [CUDA] state kept on another device (a CPU step count) is not restored: reading the flag there
        # would be a host sync, and a skipped step stops the run at the next check anyway.
        saved = [s for s in (*params, *_state_tensors(optimizer)) if s.device == self.bad.device]
        before = [s.detach().clone() for s in saved]
        optimizer.step()
        keep_new = ~self.bad
        for s, old in zip(saved, before, strict=True):
            s.data.copy_(torch.where(keep_new, s.data, old))

    def first_bad(self) -> tuple[int, float] | None:
        """(global step, loss) of the first non-finite loss, or None: one host read."""
        first, loss = int(self.first), float(self.loss)
        return None if first < 0 else (first, loss)


def _state_tensors(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)]


def resident(split: Split, device: torch.device) -> Split:
    """[CUDA] The training arrays on the GPU when they fit in a quarter of its free memory, else in pinned
    host memory (asynchronous copies); on the CPU unchanged."""
    if device.type != "cuda":
        return split
    size = split.x.nbytes + split.y.nbytes
    if size < torch.cuda.mem_get_info(device)[0] // 4:
        return Split(split.x.to(device), split.y.to(device), split.sha256)
    return Split(split.x.pin_memory(), split.y.pin_memory(), split.sha256)


# ----------------------------------------------------------------------------- the loop's pieces
@dataclass
class Loop:
    """What one run trains with, built once by :func:`set_up`; everything a resume must restore lives in
    the ``state`` dict instead (:func:`fresh_state`), which is what the scratch checkpoint holds."""

    cfg: Mapping[str, Any]
    dist: DistInfo
    device: torch.device
    amp: torch.dtype | None
    meta: dict[str, Any]
    splits: dict[str, Split]
    train_set: Split
    model: nn.Module  # the bare module: its state_dict is what is saved
    net: nn.Module  # what the steps call: [DDP] wrapped, compiled when asked
    optimizer: torch.optim.Optimizer
    steps_per_epoch: int
    total_steps: int
    identity: dict[str, Any]  # what makes this the same run (config, data, code digests)
    resume_path: Path
    log_metrics: MetricLogger | None
    ema: EMA | None = None  # the averaged weights validation and model.pt use (ema_decay)
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None  # lr_decay_per_step
    guard: FiniteGuard | None = None
    epoch_nats: torch.Tensor | None = None  # the running sum of the epoch, on the device

    @property
    def dims(self) -> int:
        return int(self.meta["channels"]) * int(self.meta["height"]) * int(self.meta["width"])

    @property
    def conditional(self) -> bool:
        return bool(self.cfg["conditional"])

    @property
    def batch_size(self) -> int:
        return int(self.cfg["batch_size"])


def set_up(cfg: Mapping[str, Any], data_dir: Path, scratch_dir: Path, log_metrics: MetricLogger | None,
           loaded: tuple[dict[str, Any], dict[str, Split]] | None) -> Loop:
    """Device, seeds, data, model, optimizer and the step budget, in the order that fixes the RNG draws."""
    dist = setup_distributed(cfg["device"] != "cpu" and torch.cuda.is_available())
    device = pick_device(cfg["device"], dist)
    amp = autocast_dtype(device, cfg["precision"])
    seed_everything(int(cfg["seed"]), device)
    if device.type == "cuda":  # [CUDA] fixed shapes: let cuDNN pick the fastest kernels
        torch.backends.cudnn.benchmark = True

    meta, splits = loaded or load_splits(data_dir, ("train", "valid"))
    train_set = resident(splits["train"], device)
    levels = int(meta["levels"])
    if len(train_set.x) and not 0 <= int(train_set.x.min()) <= int(train_set.x.max()) < levels:
        raise ValueError(f"training levels must lie in [0, {levels}): checked once, not per step")
    model = build_from_config(cfg, meta).to(device)
    optimizer = make_optimizer(model.parameters(), cfg["optimizer"])
    ema, scheduler = make_recipe(cfg, model, optimizer)
    net: nn.Module = model
    if dist.world_size > 1:  # [DDP] gradients are averaged across ranks; `model` stays the bare module
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if cfg["compile"]:  # compiled forward, same parameters: `model` stays the eager module
        net = torch.compile(net)

    batch_size, epochs, max_steps = int(cfg["batch_size"]), int(cfg["epochs"]), cfg["max_steps"]
    if batch_size % dist.world_size:
        raise ValueError(
            f"batch_size {batch_size} (the global batch) is not divisible by the {dist.world_size} processes "
            f"of the launcher: choose a batch_size or nproc_per_node that divides it"
        )
    # A short last batch is trained on too; [DDP] unless it has fewer images than ranks (a rank would
    # get none): those few images are skipped that epoch. With one process this is ceil(n / batch).
    n_train = len(train_set.x)
    steps_per_epoch = n_train // batch_size + int(n_train % batch_size >= dist.world_size)
    total_steps = (
        epochs * steps_per_epoch if max_steps is None else min(int(max_steps), epochs * steps_per_epoch)
    )
    # How the run is launched does not change what it computes: a resume may switch launchers.
    # What makes this the same run: a resume checkpoint written under other values is never resumed.
    identity = {
        "config": config_digest({k: v for k, v in cfg.items() if k != "launcher"}),
        "data": {name: split.sha256 for name, split in splits.items()},
        "code": code_digest(RESUME_CODE),
    }
    return Loop(cfg, dist, device, amp, meta, splits, train_set, model, net, optimizer, steps_per_epoch,
                total_steps, identity, scratch_dir / "resume.pt", log_metrics, ema, scheduler)


def fresh_state() -> dict[str, Any]:
    """The resume state of a run that has not started: all a resume must restore besides the weights,
    the optimizer and the RNGs; everything else is rebuilt from the config."""
    return {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "epoch_nats": 0.0, "epoch_images": 0,
            "history": [], "best": None, "wall_seconds": 0.0, "done": False}


def resume(loop: Loop) -> dict[str, Any]:
    """The state to start from: this run's scratch checkpoint restored (weights, optimizer, RNGs), or a
    fresh one."""
    state = fresh_state()
    ckpt = checkpoint.resumable(loop.resume_path, loop.identity, loop.cfg["name"], owner=loop.dist.is_main)
    if ckpt is not None:
        loop.model.load_state_dict(ckpt["model"])
        loop.optimizer.load_state_dict(ckpt["optimizer"])
        if loop.ema is not None:  # present: the config digest (which holds the knobs) matched
            loop.ema.load_state_dict(ckpt["ema"])
        if loop.scheduler is not None:
            loop.scheduler.load_state_dict(ckpt["lr_scheduler"])
        checkpoint.set_rng_state(ckpt["rng"])
        state = ckpt["state"]
        if loop.dist.is_main:
            print(f"resuming {loop.cfg['name']} from {loop.resume_path} at step {state['global_step']}")
    else:
        init_from_data(loop)
    loop.guard = FiniteGuard(loop.device, state["global_step"])
    loop.epoch_nats = torch.tensor(float(state["epoch_nats"]), dtype=torch.float64, device=loop.device)
    return state


def init_from_data(loop: Loop) -> None:
    """A fresh start only: a model with a ``data_init_(x, y)`` hook (PixelCNN++ weight normalisation)
    sets its initial weights from the first training batch. It runs in training mode (dropout as in the
    official init) under its own seed inside a forked RNG, so the loop's random stream is the one it
    would be without it; models without the hook are not touched at all. The optimizer holds the same
    tensors (changed in place, before its first step, so it has no state yet); the EMA starts again from
    the initialised weights. Never on a resume: the checkpoint holds the weights it made. [DDP] every
    rank initialises on the whole global batch, then rank 0's result is broadcast so that the ranks
    cannot differ by rounding."""
    data_init = getattr(loop.model, "data_init_", None)
    if data_init is None:
        return
    idx = epoch_order(len(loop.train_set.x), int(loop.cfg["seed"]), 0)[: loop.batch_size]
    x = loop.train_set.x[idx.to(loop.train_set.x.device)].to(loop.device).long()
    y = loop.train_set.y[idx.to(loop.train_set.y.device)].to(loop.device) if loop.conditional else None
    cuda = [loop.device] if loop.device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(int(loop.cfg["seed"]))
        loop.model.train()
        changed = data_init(x, y)
    if not changed:  # e.g. PixelCNN++ without weight_norm: the RNG state came back as it was
        return
    if loop.dist.world_size > 1:  # [DDP]
        for t in loop.model.state_dict().values():
            torch.distributed.broadcast(t, 0)
    if loop.ema is not None:
        loop.ema = EMA(loop.model, loop.ema.decay)


def check_finite(loop: Loop, state: Mapping[str, Any]) -> None:
    """At log points, saves and epoch ends only: the one host read of the step guard."""
    found = loop.guard.first_bad()
    if found is not None:
        step, loss = found
        raise TrainingDiverged(_diverged_message(loop.cfg, loss, state, step, loop.steps_per_epoch,
                                                 loop.resume_path))


def save_resume(loop: Loop, state: dict[str, Any]) -> None:
    check_finite(loop, state)  # never a checkpoint after a non-finite loss: the last good one stays
    state["epoch_nats"] = float(loop.epoch_nats)
    if loop.dist.is_main:  # [DDP] rank 0 holds the same weights as every other rank
        checkpoint.save_checkpoint({"identity": loop.identity, "model": loop.model.state_dict(),
                                    "optimizer": loop.optimizer.state_dict(), "rng": checkpoint.rng_state(),
                                    "state": state, **recipe_state(loop)}, loop.resume_path)


def recipe_state(loop: Loop) -> dict[str, Any]:
    """The EMA and LR-scheduler states for the scratch checkpoint (only those that are on)."""
    out = {}
    if loop.ema is not None:
        out["ema"] = loop.ema.state_dict()
    if loop.scheduler is not None:
        out["lr_scheduler"] = loop.scheduler.state_dict()
    return out


def train_step(loop: Loop, batch: torch.Tensor) -> tuple[torch.Tensor, int]:
    """One optimizer step on the global batch ``batch`` (indices); returns (its summed nats on the device,
    the images it counts). No host read: a non-finite loss skips the step on the device."""
    dist = loop.dist
    idx = batch[dist.rank :: dist.world_size]  # [DDP] this rank's share of the global batch
    if loop.train_set.x.device != idx.device:  # [CUDA] arrays resident on the GPU: index them there
        idx = idx.to(loop.train_set.x.device, non_blocking=True)
    x = loop.train_set.x[idx].to(loop.device, non_blocking=True).long()
    y = loop.train_set.y[idx].to(loop.device, non_blocking=True) if loop.conditional else None
    nats = image_nats(loop.net, x, y, loop.amp, check_levels=False, bare=loop.model)  # levels: set_up
    # [DDP] sum over this rank's images / global batch, times world: DDP's average over ranks then is the
    # mean over the whole global batch, as in one process.
    # (sum / n * world: with one process bit-identical to the mean, so CPU baselines do not move)
    loss = nats.sum() / len(batch) * dist.world_size
    loop.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if loop.cfg["grad_clip"] is not None:
        torch.nn.utils.clip_grad_norm_(loop.model.parameters(), float(loop.cfg["grad_clip"]))
    step_sum, bad_elsewhere = nats.detach().double().sum(), None
    if dist.world_size > 1:  # [DDP] global sums (rank 0's resume checkpoint is the whole run's)
        both = torch.stack([step_sum, (~torch.isfinite(loss.detach())).double()])
        torch.distributed.all_reduce(both)
        step_sum, bad_elsewhere = both[0], both[1] > 0
    loop.guard.step_unless_bad(loss, loop.optimizer, list(loop.model.parameters()), bad_elsewhere)
    after_step(loop)
    loop.epoch_nats += step_sum
    return step_sum, len(batch) if dist.world_size > 1 else len(idx)


def after_step(loop: Loop) -> None:
    """The recipe's per-step updates, after the guarded optimizer step. The EMA follows only an applied
    step (decided on the device). The scheduler counts every step on the host: reading the guard would be
    a host sync, and after a skipped step nothing is saved or validated again (the run raises first)."""
    if loop.scheduler is not None:
        loop.scheduler.step()
    if loop.ema is not None:  # [DDP] every rank: the bare module, the same weights everywhere
        loop.ema.update(loop.model, keep=~loop.guard.bad)


def eval_weights(loop: Loop) -> contextlib.AbstractContextManager[nn.Module]:
    """Inside, ``loop.model`` holds the weights validation and model.pt use: the EMA when on (the raw
    weights come back on exit, bit for bit), else the raw ones."""
    return loop.ema.applied(loop.model) if loop.ema is not None else contextlib.nullcontext(loop.model)


def log_step(loop: Loop, state: Mapping[str, Any], step_sum: torch.Tensor, n: int, bar: tqdm) -> None:
    """A log point: the only per-step host reads."""
    check_finite(loop, state)
    step_loss = float(step_sum) / n
    bpd = float(bits_per_dim(step_loss, loop.dims))
    bar.set_postfix(loss=f"{step_loss:.3f}", bpd=f"{bpd:.4f}")
    if loop.log_metrics and loop.dist.is_main:
        loop.log_metrics({"train_step_nats": step_loss, "train_step_bits_per_dim": bpd}, state["global_step"])


def fault_point(step: int, interrupt_after_steps: int | None) -> None:
    """The one fault-injection hook of the loop: a kill (crash tests) or a simulated one (unit tests)."""
    kill_point(f"train.step{step}")
    if interrupt_after_steps is not None and step >= interrupt_after_steps:
        raise TrainingInterrupted(f"simulated interruption after step {step}")


def validate(loop: Loop) -> float:
    """Exact validation bits/dim. [DDP] one contiguous slice per rank (never padded), summed across ranks:
    each image counts once."""
    valid, dist = loop.splits["valid"], loop.dist
    lo, hi = (len(valid.x) * r // dist.world_size for r in (dist.rank, dist.rank + 1))
    part = {"total_nats": 0.0, "n_images": 0}
    if hi > lo:
        part = evaluate_nll(loop.model, valid.x[lo:hi], valid.y[lo:hi] if loop.conditional else None,
                            int(loop.cfg["eval_batch_size"]), loop.device)
    total, count = all_sum([part["total_nats"], float(part["n_images"])], dist, loop.device)
    if int(count) != len(valid.x):
        raise RuntimeError(f"validation counted {int(count)} images, expected {len(valid.x)}")
    return float(bits_per_dim(total / count, loop.dims))


def end_epoch(loop: Loop, state: dict[str, Any], started: float) -> None:
    """End of an epoch (or of the step budget): exact validation NLL, keep the best weights, log, save."""
    check_finite(loop, state)
    epoch, main = state["epoch"], loop.dist.is_main
    state["epoch_nats"] = float(loop.epoch_nats)
    with eval_weights(loop) as weights:  # the EMA ones when on: validated, and kept if best
        valid_bpd = validate(loop)
        if main and (state["best"] is None or valid_bpd < state["best"]["valid_bits_per_dim"]):
            state["best"] = {
                "epoch": epoch, "steps": state["global_step"], "valid_bits_per_dim": valid_bpd,
                "state_dict": {k: v.detach().cpu().clone() for k, v in weights.state_dict().items()},
            }
    train_bpd = float(bits_per_dim(state["epoch_nats"] / max(state["epoch_images"], 1), loop.dims))
    state["wall_seconds"] = time.monotonic() - started
    state["history"].append({"epoch": epoch, "steps": state["global_step"], "train_bits_per_dim": train_bpd,
                             "valid_bits_per_dim": valid_bpd, "wall_seconds": state["wall_seconds"]})
    if loop.log_metrics and main:
        loop.log_metrics(
            {"train_bits_per_dim": train_bpd, "valid_bits_per_dim": valid_bpd, "epoch": float(epoch)},
            state["global_step"],
        )
    if main:
        print(f"epoch {epoch}: train {train_bpd:.4f} bits/dim, valid {valid_bpd:.4f} bits/dim")
    state.update(epoch=epoch + 1, step_in_epoch=0, epoch_nats=0.0, epoch_images=0)
    loop.epoch_nats.zero_()
    state["done"] = state["epoch"] >= int(loop.cfg["epochs"]) or state["global_step"] >= loop.total_steps
    save_resume(loop, state)  # also at the very end: a crash while writing outputs or logging loses nothing
    if loop.dist.world_size > 1:  # [DDP] the others wait while rank 0 validates and writes
        torch.distributed.barrier()


def finish(loop: Loop, state: Mapping[str, Any], out_dir: Path) -> dict[str, Any]:
    """The history; rank 0 writes the best weights (``model.pt``) and ``history.json``."""
    device, best, n_params = loop.device, state["best"], count_params(loop.model)
    history = {
        "experiment": loop.cfg["name"],
        "epochs": state["history"],
        "total_steps": state["global_step"],
        "wall_seconds": state["wall_seconds"],
        "device": str(device) if device.type == "cpu" else f"{device} ({torch.cuda.get_device_name(device)})",
        "world_size": loop.dist.world_size,
        "precision": "bf16-autocast" if loop.amp is not None else "fp32",
        "n_params": n_params,
        "best_epoch": best["epoch"] if best else None,
        "best_valid_bits_per_dim": best["valid_bits_per_dim"] if best else None,
    }
    if loop.dist.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        checkpoint.save_checkpoint(
            {"state_dict": best["state_dict"], "config": dict(loop.cfg),
             "data": checkpoint.data_shape(loop.meta) | {"n_classes": loop.meta.get("n_classes")},
             "epoch": best["epoch"], "steps": best["steps"], "valid_bits_per_dim": best["valid_bits_per_dim"],
             "n_params": n_params, **({"weights": "ema"} if loop.ema is not None else {})},
            out_dir / "model.pt",
        )
        checkpoint.write_text(out_dir / "history.json", json.dumps(history, indent=2) + "\n")
    return history


# ----------------------------------------------------------------------------- the loop
def train(
    cfg: Mapping[str, Any],
    data_dir: Path,
    out_dir: Path,
    scratch_dir: Path,
    log_metrics: MetricLogger | None = None,
    interrupt_after_steps: int | None = None,
    loaded: tuple[dict[str, Any], dict[str, Split]] | None = None,
) -> dict[str, Any]:
    """Train ``cfg`` on ``data_dir``; write ``model.pt`` + ``history.json`` to ``out_dir``.

    Resumes from ``scratch_dir/resume.pt`` when it exists and was written for the same config.
    Returns the history dict. ``interrupt_after_steps`` simulates a kill (tests only). ``loaded``: the
    result of :func:`load_splits` when the caller has read (and so checked) the data already.
    """
    loop = set_up(cfg, Path(data_dir), Path(scratch_dir), log_metrics, loaded)
    state = resume(loop)
    batch_size, log_every = loop.batch_size, int(cfg["log_every_steps"])
    ckpt_seconds = float(cfg["checkpoint_minutes"]) * 60.0
    started, last_save = time.monotonic() - state["wall_seconds"], time.monotonic()
    while not state["done"]:
        order = epoch_order(len(loop.train_set.x), int(cfg["seed"]), state["epoch"])  # the same on every rank
        loop.net.train()
        bar = tqdm(range(state["step_in_epoch"], loop.steps_per_epoch), disable=not loop.dist.is_main,
                   desc=f"{cfg['name']} epoch {state['epoch']}", dynamic_ncols=True)
        for b in bar:
            if state["global_step"] >= loop.total_steps:
                break
            step_sum, n = train_step(loop, order[b * batch_size : (b + 1) * batch_size])
            state["global_step"] += 1
            state["step_in_epoch"] = b + 1
            state["epoch_images"] += n
            if state["global_step"] % log_every == 0:
                log_step(loop, state, step_sum, n, bar)
            if time.monotonic() - last_save >= ckpt_seconds:
                save_resume(loop, state)
                last_save = time.monotonic()
            fault_point(state["global_step"], interrupt_after_steps)
        end_epoch(loop, state, started)
        last_save = time.monotonic()
    history = finish(loop, state, Path(out_dir))
    if loop.dist.world_size > 1:  # [DDP]
        torch.distributed.destroy_process_group()
    return history


def _diverged_message(cfg: Mapping[str, Any], loss: float, state: Mapping[str, Any], step: int,
                      steps_per_epoch: int, resume: Path) -> str:
    """``step``: the global step of the first non-finite loss; it lies in the current epoch (the guard is
    read at every epoch end), ``state`` is where the loop was when it read the guard."""
    kept = (f"the last good checkpoint {resume} (step {checkpoint.resume_step(resume)}) is kept"
            if resume.exists() else "no checkpoint had been written yet")
    batch = state["step_in_epoch"] - (state["global_step"] - step)
    return (f"training loss of {cfg['name']} is {loss} at epoch {state['epoch']}, step {step}"
            f" (batch {batch} of the epoch); {kept}. Lower optimizer.lr or set grad_clip"
            f" for experiments.{cfg['name']} and rerun (the same params diverge again at the same step)")
