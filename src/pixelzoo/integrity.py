"""What lineage relies on being true of files and processes: measured digests, one owner per folder,
no half-written output that looks complete.

- :func:`file_sha256` streams a file through sha256 (cached per process by path, size and mtime, so a
  stage that hashes the same checkpoint twice reads it once); :func:`code_sha256` digests source files.
- :func:`process_alive` tells a live process from a dead one whose pid was reused (Linux start time).
- :class:`PidLock`: one owner of a folder at a time (``flock``, released by the kernel when the owner
  dies, so a dead owner's lock is taken over); the file names the owner for the error message.
- :func:`temp_sibling` / :func:`clean_stale_temps` / :func:`publish_dir`: outputs are built under
  ``.<name>.tmp-<pid>`` and renamed into place last; temp folders of dead processes are removed.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pixelzoo.errors import UserError

_CHUNK = 1 << 20
_sha_cache: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path, cached: bool = True) -> str:
    """sha256 hex of a file's bytes, read in 1 MiB chunks; cached by (path, size, mtime_ns) unless
    ``cached=False`` (checking downloads: a same-size rewrite within one timestamp tick must not hide)."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if not cached or key not in _sha_cache:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
        _sha_cache[key] = h.hexdigest()
    return _sha_cache[key]


def config_digest(cfg: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of a resolved config (identifies a run's settings)."""
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()


def bytes_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def code_sha256(files: Iterable[str | Path], root: str | Path) -> str:
    """One sha256 over source files (relative path and contents, sorted); ``*.py`` of folders included."""
    root = Path(root)
    paths: set[Path] = set()
    for f in files:
        p = root / f
        paths.update(p.rglob("*.py") if p.is_dir() else [p])
    h = hashlib.sha256()
    for p in sorted(paths):
        if "__pycache__" in p.parts or not p.is_file():
            continue
        h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


# ----------------------------------------------------------------------------- processes
def process_start(pid: int) -> str | None:
    """Start time of ``pid`` in clock ticks since boot (Linux /proc), or None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None if not _pid_exists(pid) else "?"
    return stat.rsplit(")", 1)[1].split()[19]  # field 22 counted after the command name


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_alive(pid: int, start: str | None = None) -> bool:
    """Is ``pid`` running, and (when ``start`` is known) is it still the process that started then?"""
    now = process_start(pid)
    if now is None:
        return False
    return start in (None, "", "?") or now in ("?", start)


def process_id() -> dict[str, str]:
    """This process as (host, pid, start time): enough to tell later whether it is still alive."""
    return {"host": socket.gethostname(), "pid": str(os.getpid()), "start": process_start(os.getpid()) or "?"}


# ----------------------------------------------------------------------------- one owner per folder
class AlreadyRunning(UserError):
    """Another live process holds the lock of a folder."""


class PidLock:
    """Exclusive lock on ``path`` for the life of this process's ``with`` block; the file holds the pid.

    ``flock`` is released by the kernel when its holder dies, so the lock of a dead (killed) owner is
    taken over silently; a live owner makes :class:`AlreadyRunning` name it.
    """

    def __init__(self, path: str | Path, what: str) -> None:
        self.path, self.what = Path(path), what
        self._fh = None

    def __enter__(self) -> PidLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")  # noqa: SIM115 - held open for the lock's lifetime
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            owner = fh.read().strip() or "unknown pid"
            fh.close()
            raise AlreadyRunning(
                f"{self.what} is already running ({owner}, lock {self.path}); wait for it to finish or "
                "stop that process, then rerun"
            ) from None
        fh.seek(0)
        fh.truncate()
        ident = process_id()
        fh.write(f"pid {ident['pid']} on {ident['host']}\n")
        fh.flush()
        self._fh = fh
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


# ----------------------------------------------------------------------------- temp outputs
def temp_sibling(target: str | Path) -> Path:
    """``<parent>/.<name>.tmp-<pid>``: where an output is built before it is renamed into place."""
    target = Path(target)
    return target.with_name(f".{target.name}.tmp-{os.getpid()}")


def clean_stale_temps(target: str | Path) -> list[Path]:
    """Remove temp (and half-swapped old) siblings of ``target`` left by processes no longer running."""
    target = Path(target)
    if not target.parent.is_dir():
        return []
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.(?:tmp|old)-(\d+)$")
    removed = []
    for p in target.parent.iterdir():
        m = pattern.match(p.name)
        if m and int(m.group(1)) != os.getpid() and not process_alive(int(m.group(1))):
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
            removed.append(p)
    return removed


def publish_dir(tmp: str | Path, target: str | Path) -> None:
    """Move the finished folder ``tmp`` to ``target``, replacing what was there (rename last)."""
    tmp, target = Path(tmp), Path(target)
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old)
    else:
        os.replace(tmp, target)


# ----------------------------------------------------------------------------- which code made what
PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the tree this pixelzoo was imported from


def checkout_root(start: Path | None = None) -> Path | None:
    """The pixelzoo checkout the commands act on: ``DVC_ROOT`` when DVC runs us; else the nearest ancestor
    of ``start`` (the cwd) holding ``dvc.yaml``, ``.dvc`` or ``.git``; None outside any. (``PROJECT_ROOT``
    is where the code lives; a profile copy under ``.work/`` is a checkout of its own.)"""
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"]).resolve()
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / "dvc.yaml").is_file() or (d / ".dvc").is_dir() or (d / ".git").exists():
            return d
    return None

_MODEL_CODE = ("src/pixelzoo/models", "src/pixelzoo/nn", "src/pixelzoo/likelihood.py",
               "src/pixelzoo/training.py", "src/pixelzoo/checkpoint.py", "src/pixelzoo/device.py",
               "src/pixelzoo/evaluation.py", "src/pixelzoo/data/datasets.py", "src/pixelzoo/data/splits.py",
               "src/pixelzoo/optimizers.py", "src/pixelzoo/recipe.py")
# What a resumable checkpoint depends on: the code that computes the weights (not tracking, not stages).
RESUME_CODE = _MODEL_CODE
# What each stage runs: pipeline.layout.stage_code (its dvc.yaml deps under src/ and stages/).


def code_digest(files: Iterable[str], root: str | Path | None = None) -> str:
    """:func:`code_sha256` of project files (paths relative to the project root)."""
    return code_sha256(files, root or PROJECT_ROOT)
