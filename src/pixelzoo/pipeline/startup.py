"""Stage start-up: the fixed cost every stage process pays before its real work (benchmarks/startup.py).

Setting up a model stage imports torch, mlflow and sqlalchemy and opens the tracking store: ~420,000
objects the garbage collector tracks, all alive until the process ends. The cyclic collector runs again
and again while they are created, traverses all of them each time, and once more when the interpreter
exits: about a fifth of a small stage's CPU time. So a stage pauses the collector for its set-up and,
when its real work starts, freezes what set-up created (``gc.freeze``: never traversed again) and
resumes it. The work itself runs with the collector on, as usual.

A model stage also keeps the host memory it frees for its next allocations (:func:`reuse_freed_memory`).
"""

from __future__ import annotations

import ctypes
import gc
import platform


def pause_gc() -> None:
    """Pause the cyclic garbage collector for the stage's set-up (imports, params, store, inputs)."""
    gc.disable()


def resume_gc() -> None:
    """Set-up done: freeze the objects it created and resume the collector. No-op unless paused."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def reuse_freed_memory() -> bool:
    """Keep freed host memory in the process's heap and serve every allocation from it (glibc only).

    By default glibc maps each block over 32 MiB afresh from the kernel and unmaps it on free: a
    CIFAR-size PixelCNN's 1024-channel maps and its logits, every step. On a virtual machine each first
    touch of a fresh page faults, and a training step spent 0.9-1.4 s of ~6.5 s in the kernel (PixelCNN,
    batch 16, one thread; benchmarks/README.md). With no mmap'd blocks and no trimming, each step reuses
    the pages of the step before: no faults after the first step, ~4% more peak memory, kept until exit.
    Process-wide, so entry points (the model stages, the benchmarks) call it, never the library. Returns
    whether it applied (False off glibc, or if glibc refused).
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    m_trim_threshold, m_mmap_max = -1, -4  # <malloc.h>
    return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))
