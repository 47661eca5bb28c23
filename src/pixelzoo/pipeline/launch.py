"""The ``launcher`` param: how the train stage starts its worker processes (one, or DDP via torchrun).

``launcher: python`` (the default) trains in the stage's own process. Any other value is a command
line (string or list) that runs a Python script, torchrun-style: the stage re-executes itself as
``<launcher> stages/train.py <experiment>``, so ``dvc.yaml`` keeps one plain command for every
experiment. ``torchrun`` is run as ``python -m torch.distributed.run`` with the stage's own
interpreter (no PATH surprises inside ``dvc exp run`` copies or virtual environments).

    launcher: torchrun --standalone --nproc_per_node=4                # one machine, 4 GPUs
    launcher: torchrun --nnodes=2 --nproc_per_node=8 --master_addr=10.0.0.1 --master_port=29500
              # two machines; the second one sets PET_NODE_RANK=1 (torchrun reads PET_<option>)

The launched workers carry ``PIXELZOO_LAUNCHED=1`` so they never launch again.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Sequence
from typing import Any

from pixelzoo.pipeline.settings import ParamsError
from pixelzoo.pipeline.tracking.names import ENV_LAUNCHED


def launcher_argv(launcher: Any, where: str = "launcher") -> list[str] | None:
    """The launcher's command prefix, or None for in-process training (``python``).

    ``where`` names the params entry in error messages.
    """
    if isinstance(launcher, str):
        argv = shlex.split(launcher)
    elif isinstance(launcher, Sequence) and all(isinstance(a, str) for a in launcher):
        argv = list(launcher)
    else:
        raise ParamsError(f"{where} must be a command (a string or a list of strings), got {launcher!r}")
    if not argv:
        raise ParamsError(f"{where} is empty: use `python` to train in one process")
    if argv[0] == "python":
        if len(argv) > 1:
            raise ParamsError(f"{where}: `python` takes no arguments here, got {launcher!r}")
        return None
    if argv[0] == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", *argv[1:]]
    return argv


def relaunch_command(
    launcher: Any, script: str, args: Sequence[str], where: str = "launcher"
) -> list[str] | None:
    """The command that re-runs ``script args`` under ``launcher``; None when this process should train.

    None as well inside a process that a launcher started (no endless re-launching).
    """
    prefix = launcher_argv(launcher, where)
    if prefix is None or os.environ.get(ENV_LAUNCHED) == "1":
        return None
    return [*prefix, script, *args]


def relaunch(command: list[str]) -> None:
    """Replace this process by ``command`` (signals from DVC then reach the launcher directly)."""
    os.environ[ENV_LAUNCHED] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvp(command[0], command)
