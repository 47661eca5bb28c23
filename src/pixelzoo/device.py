"""Where the work runs: the device, the precision and [DDP] the process group (lower house).

One home for device choice: the training loop, evaluate, sample and the Python API all ask here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(use_cuda: bool | None = None) -> DistInfo:
    """[DDP] Join the process group when launched by ``torchrun`` (WORLD_SIZE > 1); else a no-op.

    NCCL when the ranks train on GPUs, gloo on CPU (``use_cuda`` defaults to "a GPU is visible").
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return DistInfo()
    use_cuda = torch.cuda.is_available() if use_cuda is None else use_cuda
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if use_cuda else "gloo")
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if use_cuda:
        torch.cuda.set_device(info.local_rank)
    return info


def all_sum(values: list[float], dist: DistInfo, device: torch.device) -> list[float]:
    """[DDP] Element-wise float64 sum of ``values`` over all ranks (identity in one process)."""
    if dist.world_size == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return t.tolist()


def pick_device(preference: str = "auto", dist: DistInfo | None = None) -> torch.device:
    """``auto``: CUDA when present (the local rank's GPU under DDP), else CPU."""
    if preference not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {preference!r}")
    if preference == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: cuda was requested but no CUDA GPU is visible; use device: auto")
    if preference == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", (dist or DistInfo()).local_rank)


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """bf16 autocast on CUDA, plain fp32 on CPU (``precision: fp32`` forces fp32 everywhere)."""
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', got {precision!r}")
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    return torch.bfloat16
