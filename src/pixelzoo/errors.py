"""Errors a user can cause and fix (bad params, missing or corrupt files, a diverged run), and how stage
commands report them: one short message and a non-zero exit, never a traceback.

Anything else (a bug) still raises with its traceback, which is what a developer needs.
"""

from __future__ import annotations

import errno
import gc
import os
import signal
import sys
from collections.abc import Callable

# OS errors that mean "no room or no right to write here", not a bug (run_main prints them in one line).
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


class UserError(Exception):
    """An expected problem the user can fix; its message says what and where, and what to do."""


class ParamsError(UserError, ValueError):
    """A params file or entry is missing or invalid; the message lists every problem with its path."""


class MissingInput(UserError, FileNotFoundError):
    """An input a stage needs has not been built yet; the message names the command that builds it."""


class CorruptFile(UserError):
    """A file exists but cannot be read or no longer matches its recorded checksum."""


class TrainingDiverged(UserError, FloatingPointError):
    """The training loss became NaN or Inf; the message names the epoch and step."""


def run_main(label: str, main: Callable[[], int | None]) -> int:
    """Run a command's ``main``; a :class:`UserError` is printed as ``<label> failed: ...`` with exit 1."""
    try:
        return int(main() or 0)
    except UserError as err:
        print(f"{label} failed: {err}", file=sys.stderr, flush=True)
        return 1
    except OSError as err:  # a full disk, a quota, a read-only folder: the user's to fix, not a bug
        if err.errno not in DISK_ERRNOS:
            raise
        where = f" {err.filename}" if err.filename else " a file"
        why = f"{os.strerror(err.errno)} ({errno.errorcode[err.errno]})"
        print(f"{label} failed: could not write{where}: {why}; no output was published, the previous one "
              "is kept; free space there and rerun",
              file=sys.stderr, flush=True)
        return 1
    finally:
        gc.enable()  # a stage that stopped during set-up left the collector paused (pipeline.startup)


def kill_point(name: str) -> None:
    """Fault injection for the crash tests: SIGKILL this process here if ``PIXELZOO_KILL_AT`` is ``name``.

    Placed at the worst moment of each stage (some outputs written, the stage not finished), so a test can
    check that a kill there leaves nothing that looks complete and that ``dvc repro`` recovers.
    """
    if os.environ.get("PIXELZOO_KILL_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
