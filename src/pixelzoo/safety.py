"""Params and files as untrusted input: safe names, paths that stay in their root, unique YAML keys, and
writes that fail with one message instead of a half-written file.

``params.yaml`` arrives in pull requests and is edited by hand, and every name in it becomes a folder, a
DVC stage name, an MLflow run name and a report row. Two walls keep such a name from doing harm:

1. :func:`name_problem`: the schema accepts only names matching :data:`NAME_PATTERN` (letters, digits,
   ``.``, ``_``, ``-``; starting with a letter or digit; no ``..``), so a name cannot hold a path
   separator, a shell or markup character, a space or a quote.
2. :func:`contained`: every path the pipeline builds from params is resolved and refused (a
   :class:`PathEscape`) when it leaves its root, before anything there is created or deleted.

:class:`UniqueKeyLoader` reads YAML like ``yaml.safe_load`` but refuses a key written twice in one mapping
(YAML keeps the last silently). :func:`write_atomic` writes through a temp sibling and turns an OS error
(a full disk above all) into one :class:`WriteFailed` message naming the file; the temp is removed and
the previous file is kept. Nothing here imports torch: stages call it before their heavy imports.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import yaml

from pixelzoo.errors import ParamsError, UserError

# A params name: a folder, a DVC stage suffix, an MLflow run name, an HTML/Markdown table cell.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
NAME_RULE = "letters, digits, '.', '_' and '-', starting with a letter or digit, no '..'"
MAX_NAME = 100  # a folder name, with room for suffixes, under any filesystem's 255-byte limit


# ----------------------------------------------------------------------------- names
def name_problem(name: Any) -> str | None:
    """Why ``name`` is not a safe params name, or None if it is."""
    if not isinstance(name, str):
        return f"must be a string name, got {type(name).__name__} {name!r}"
    if not NAME_PATTERN.fullmatch(name) or ".." in name:
        return f"{name!r} is not a safe name: names become folders, DVC stages and MLflow runs"
    if len(name) > MAX_NAME:
        return f"name is {len(name)} characters long, at most {MAX_NAME}"
    return None


def name_hint(name: Any) -> str:
    """The rule, and a safe spelling of ``name`` when one can be derived."""
    safe = re.sub(r"\.{2,}", ".", re.sub(r"[^A-Za-z0-9._-]+", "-", str(name))).strip("._-")[:MAX_NAME]
    return f"use {NAME_RULE}" + (f", e.g. {safe!r}" if safe and safe != name else "")


def check_name(name: Any, what: str) -> str:
    """``name`` if it is safe, else a ParamsError (for names that arrive on a command line)."""
    problem = name_problem(name)
    if problem:
        raise ParamsError(f"{what}: {problem} ({name_hint(name)})")
    return name


# ----------------------------------------------------------------------------- paths
class PathEscape(ParamsError):
    """A path built from params would leave the folder it belongs in."""


def contained(path: str | Path, root: str | Path, what: str = "path") -> Path:
    """``path`` (relative to the working directory, as stages use it) if it resolves inside ``root``.

    Both are resolved (symlinks followed, ``..`` collapsed), so a symlinked root (``data`` on another
    disk) is fine, and ``..``, an absolute part or a symlink inside the root that points out is not.
    The path is returned as given, not resolved: callers keep their relative paths.
    """
    base = Path(root).resolve()
    full = Path(path).resolve()
    if full != base and base not in full.parents:
        raise PathEscape(f"{what} {str(path)!r} resolves to {full}, outside {base}; nothing was created or "
                         f"deleted ({name_hint(Path(path).name)} for names in params)")
    return Path(path)


def under(root: str | Path, *parts: str, what: str = "path") -> Path:
    """``root/parts...``, refused (:class:`PathEscape`) unless it stays strictly inside ``root``."""
    path = Path(root).joinpath(*parts)
    contained(path, root, what)
    if Path(path).resolve() == Path(root).resolve():
        raise PathEscape(f"{what} {str(path)!r} is the folder {root} itself; a name must name a sub-folder")
    return path


# ----------------------------------------------------------------------------- YAML
_MERGE = "tag:yaml.org,2002:merge"
_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser when PyYAML has it


class DuplicateKeys(yaml.YAMLError):
    """Keys written twice in one mapping: ``found`` is [(key path, first line, second line)]."""

    def __init__(self, found: list[tuple[str, int, int]]) -> None:
        self.found = found
        super().__init__("; ".join(f"{p}: duplicate key (lines {a} and {b})" for p, a, b in found))


def _key_path(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def duplicate_keys(node: yaml.Node, prefix: str = "") -> list[tuple[str, int, int]]:
    """Every key written twice in one mapping of a composed YAML document, with both line numbers."""
    found: list[tuple[str, int, int]] = []
    seen_nodes: set[int] = set()  # aliases share nodes: walk each once

    def walk(n: yaml.Node, at: str) -> None:
        if id(n) in seen_nodes:
            return
        seen_nodes.add(id(n))
        if isinstance(n, yaml.MappingNode):
            first: dict[tuple[str, str], int] = {}
            for key_node, value_node in n.value:
                if key_node.tag == _MERGE:
                    continue
                ident = (key_node.tag, str(key_node.value))
                line = key_node.start_mark.line + 1
                if ident in first:
                    found.append((_key_path(at, str(key_node.value)), first[ident], line))
                else:
                    first[ident] = line
                walk(value_node, _key_path(at, str(key_node.value)))
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                walk(item, f"{at}[{i}]")

    walk(node, prefix)
    return found


class UniqueKeyLoader(_Base):
    """``yaml.safe_load``'s loader, refusing (:class:`DuplicateKeys`) a key written twice in a mapping."""

    def construct_document(self, node: yaml.Node) -> Any:
        found = duplicate_keys(node)
        if found:
            raise DuplicateKeys(found)
        return super().construct_document(node)


def load_yaml(text: str) -> Any:
    """``text`` as ``yaml.safe_load`` reads it, or :class:`DuplicateKeys` / ``yaml.YAMLError``."""
    return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


# ----------------------------------------------------------------------------- writes
class WriteFailed(UserError):
    """A file could not be written (disk full, read-only, quota, I/O error); the old file is kept."""


_DISK = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
         errno.EROFS: "the filesystem is read-only", errno.EIO: "an I/O error"}


def write_error(path: str | Path, err: OSError, kept: bool | None = None) -> WriteFailed:
    """One message: which file, why (in words for a full disk), what to do, and what was kept."""
    path = Path(path)
    cause = _DISK.get(err.errno or 0, err.strerror or type(err).__name__)
    code = errno.errorcode.get(err.errno or 0, "")
    if kept is None:
        kept = path.exists()
    keep = f"the previous {path.name} is kept" if kept else "nothing was written there"
    todo = "free space there and rerun" if err.errno in (errno.ENOSPC, errno.EDQUOT) else "fix it and rerun"
    return WriteFailed(f"could not write {path}: {cause} ({code or err.errno}: {err.strerror}); "
                       f"{keep}, no temp file left; {todo}")


def temp_path(path: str | Path) -> Path:
    """``<parent>/.<name>.tmp-<pid>``: a temp sibling (same filesystem, so the rename is atomic)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_atomic(path: str | Path, write: Callable[[IO[bytes]], Any], tmp: str | Path | None = None) -> Path:
    """Write ``path`` through ``write(file)`` into a temp sibling (``tmp``, default :func:`temp_path`),
    then rename it into place; see :func:`make_atomic` for what a failure leaves."""
    return make_atomic(path, lambda t: _write_file(t, write), tmp)


def _write_file(tmp: Path, write: Callable[[IO[bytes]], Any]) -> None:
    with open(tmp, "wb") as fh:  # close() flushes: a full disk may only show there
        write(fh)


def make_atomic(path: str | Path, make: Callable[[Path], Any], tmp: str | Path | None = None) -> Path:
    """Build ``path`` by ``make(temp path)`` (a writer that wants a path: a compiler, a tar writer), then
    rename the temp into place: the one atomic write of the project (:func:`write_atomic` is this one).

    On any OS error (the temp cannot be created, a write or the final flush fails, the rename fails) the
    temp is removed and :class:`WriteFailed` names ``path`` and the cause; ``path`` keeps its old content.
    Any other error also removes the temp and propagates.
    """
    path = Path(path)
    tmp = Path(tmp) if tmp is not None else temp_path(path)
    kept = path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        make(tmp)
        os.replace(tmp, path)
    except OSError as err:
        _discard(tmp)
        raise write_error(path, err, kept) from err
    except BaseException as err:
        _discard(tmp)
        cause = _os_error(err)
        if cause is not None:  # torch's zip writer re-raises a full disk as "unexpected pos"
            raise write_error(path, cause, kept) from err
        raise
    return path


def _os_error(err: BaseException) -> OSError | None:
    """The OSError an exception was raised while handling (its __cause__/__context__ chain), if any."""
    seen: set[int] = set()
    cur: BaseException | None = err
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, OSError):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


def write_text_atomic(path: str | Path, text: str, tmp: str | Path | None = None) -> Path:
    return write_atomic(path, lambda fh: fh.write(text.encode()), tmp)


def _discard(tmp: Path) -> None:
    try:
        tmp.unlink(missing_ok=True)
    except OSError:
        pass
