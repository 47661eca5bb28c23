"""The fused LSTM cell kernels of ``lstm_cells.c``, compiled on first use and loaded with ctypes.

The recurrent scan (:mod:`pixelzoo.nn.scan`) runs a Python loop over the steps; with torch
ops, each step's cell math is ~20 small ops, and their dispatch and memory passes cost more than
the arithmetic at PixelRNN sizes. One C call per step does it in one pass. The source is plain C
(no torch headers), so the build takes a fraction of a second with the system compiler (``$CC``,
else ``cc``); the library is cached per source, compiler flags and CPU under
``$XDG_CACHE_HOME/pixelzoo/native`` (``~/.cache``), written atomically so that parallel processes
can race for it.

Where there is no compiler (or ``PIXELZOO_NATIVE=0``), :func:`kernels` returns ``None`` and the
scan keeps its torch ops, which compute the same thing (``tests/test_scan.py`` compares
the two). The torch path also serves other devices, other dtypes and batched (vmap) tensors.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shlex
import shutil
import subprocess
from pathlib import Path

import torch

from pixelzoo import safety

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("lstm_cells.c")
# -march=native: the cache key holds the CPU's flags, so a library never runs on a CPU it was not
# built for (a compiler that rejects it gets the portable build). No -ffast-math: NaN must propagate
# (training's divergence check); without FP traps and errno, gcc turns the clamps into blends and
# vectorises the loops.
PORTABLE = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-shared", "-fPIC"]
FLAGS = ["-march=native", *PORTABLE]
_SUFFIX = {torch.float32: "f32", torch.float64: "f64"}


def _cpu_key() -> str:
    info = Path("/proc/cpuinfo")
    text = info.read_text() if info.exists() else ""
    flags = next((line for line in text.splitlines() if line.startswith(("flags", "Features"))), "")
    return platform.machine() + flags


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pixelzoo" / "native"


def _build(compiler: list[str], flags: list[str]) -> Path:
    """Compile ``SOURCE`` into the cache (once per source, flags and CPU) and return the library."""
    key = hashlib.sha256(
        SOURCE.read_bytes() + " ".join([*compiler, *flags]).encode() + _cpu_key().encode()
    ).hexdigest()[:16]
    target = _cache_dir() / f"lstm_cells-{key}.so"
    if target.exists():
        return target
    # The temp name carries the pid: two processes compiling at once each rename a whole library.
    return safety.make_atomic(target, lambda tmp: subprocess.run(
        [*compiler, *flags, str(SOURCE), "-o", str(tmp), "-lm"], check=True, capture_output=True, text=True))


class Kernels:
    """ctypes entry points of one loaded library; each takes contiguous CPU tensors of one dtype."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self._lib = lib
        i64, ptr = ctypes.c_int64, ctypes.c_void_p
        for suffix in _SUFFIX.values():
            getattr(lib, f"lstm_forward_{suffix}").argtypes = [i64] * 5 + [ptr] * 7
            getattr(lib, f"lstm_backward_{suffix}").argtypes = [i64] * 3 + [ptr] * 8
            getattr(lib, f"add_taps_{suffix}").argtypes = [i64] * 4 + [ptr] * 2

    def fn(self, name: str, dtype: torch.dtype):  # noqa: ANN201 - a ctypes function
        return getattr(self._lib, f"{name}_{_SUFFIX[dtype]}")


def supports(*tensors: torch.Tensor) -> bool:
    """Whether the kernels can take these tensors: plain, contiguous, CPU, float32/64, one dtype
    with storage of their own (not a batched or zero tensor)."""
    first = tensors[0]
    return first.dtype in _SUFFIX and all(
        t.device.type == "cpu"
        and t.dtype == first.dtype
        and t.is_contiguous()
        and _has_storage(t)
        for t in tensors
    )


def _has_storage(t: torch.Tensor) -> bool:
    if t._is_zerotensor():  # autograd's zero tensors: data_ptr() is 0
        return False
    try:
        return t.data_ptr() != 0 or t.numel() == 0
    except RuntimeError:  # vmap's batched tensors (both kinds)
        return False


@functools.cache
def kernels() -> Kernels | None:
    """The loaded kernels, or ``None`` (disabled, no compiler, or the build failed: logged once)."""
    if os.environ.get("PIXELZOO_NATIVE", "1") == "0":
        return None
    compiler = shlex.split(os.environ.get("CC") or "cc")  # e.g. CC="ccache gcc"
    if not compiler or shutil.which(compiler[0]) is None:
        log.warning("no C compiler (%s): the recurrent scan runs on torch ops (~1.5x slower)", compiler)
        return None
    try:
        try:
            path = _build(compiler, FLAGS)
        except subprocess.CalledProcessError:
            path = _build(compiler, PORTABLE)
        return Kernels(ctypes.CDLL(str(path)))
    # RuntimeError: no home directory; WriteFailed: the cache folder cannot be written
    except (OSError, RuntimeError, subprocess.CalledProcessError, safety.WriteFailed) as err:
        detail = getattr(err, "stderr", "") or err
        log.warning("building %s failed, the recurrent scan runs on torch ops: %s", SOURCE.name, detail)
        return None
