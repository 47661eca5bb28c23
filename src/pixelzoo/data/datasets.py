"""Reading processed datasets: ``data/processed/<name>/{train,valid,test}.npz`` and ``meta.json``.

A missing file is a :class:`MissingInput` error, an unreadable one or one whose arrays no longer match the
sha256 recorded in ``meta.json`` a :class:`CorruptFile` error; both name the file and the command that
rebuilds it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from pixelzoo.errors import CorruptFile, MissingInput

SPLITS = ("train", "valid", "test")


def split_digest(x: np.ndarray, y: np.ndarray) -> str:
    """sha256 hex of a split: for ``x`` then ``y``, the dtype, the shape and the C-order bytes as stored.

    Nothing is cast before hashing, so arrays that differ in dtype or shape never share a digest (an int64
    ``x`` holding 256 + v hashes differently from the uint8 ``v``).
    """
    h = hashlib.sha256(b"pixelzoo-split-v2\0")
    for a in (np.asarray(x), np.asarray(y)):
        h.update(f"{a.dtype.str}{a.shape}\0".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _legacy_digest(x: np.ndarray, y: np.ndarray) -> str:
    """meta.json's digest before dtype and shape were covered (tells an old file from a changed one)."""
    h = hashlib.sha256(np.ascontiguousarray(x, dtype=np.uint8).tobytes())
    h.update(np.ascontiguousarray(y, dtype=np.int64).tobytes())
    return h.hexdigest()


def _rebuild(directory: Path) -> str:
    return f"dvc repro -f preprocess@{directory.name}"


def load_meta(directory: str | Path) -> dict[str, Any]:
    """The dataset's ``meta.json`` (levels, shape, counts, digests, source, params)."""
    path = Path(directory) / "meta.json"
    if not path.is_file():
        raise MissingInput(f"{path} not found: build it with `dvc repro preprocess@{Path(directory).name}`")
    try:
        meta = json.loads(path.read_text())
        meta["sha256"], meta["counts"]  # noqa: B018 - every reader relies on these
    except (ValueError, KeyError, TypeError) as err:
        raise CorruptFile(f"{path} is corrupt ({type(err).__name__}: {err}); "
                          f"rebuild it with `{_rebuild(Path(directory))}`") from err
    return meta


def read_split(directory: str | Path, split: str) -> tuple[np.ndarray, np.ndarray, str]:
    """``(x, y, sha256)`` of one split as it is on disk, the digest measured on the arrays read (unchecked)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    directory = Path(directory)
    path = directory / f"{split}.npz"
    if not path.is_file():
        raise MissingInput(f"{path} not found: build it with `dvc repro preprocess@{directory.name}`")
    try:
        with np.load(path) as z:
            x, y = z["x"], z["y"]
    except Exception as err:  # noqa: BLE001 - zipfile, zlib, EOF and format errors all mean "unreadable"
        raise CorruptFile(f"{path} is truncated or corrupt ({type(err).__name__}: {str(err)[:120]}); "
                          f"rebuild it with `{_rebuild(directory)}`") from err
    return x, y, split_digest(x, y)


def load_split(
    directory: str | Path, split: str, meta: dict[str, Any] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` of one split: x uint8 N×C×H×W with values in [0, levels), y int64 (N,) (-1 = no label).

    The arrays are checked against the sha256 in ``meta.json`` (``meta`` if given, else read).
    """
    x, y, _ = load_split_measured(directory, split, meta)
    return x, y


def load_split_measured(
    directory: str | Path, split: str, meta: dict[str, Any] | None = None
) -> tuple[np.ndarray, np.ndarray, str]:
    """:func:`load_split` plus the sha256 measured on the arrays it returns (for lineage)."""
    directory = Path(directory)
    x, y, digest = read_split(directory, split)
    meta = meta or load_meta(directory)
    expected = meta["sha256"].get(split)
    if digest != expected and expected == _legacy_digest(x, y):
        raise CorruptFile(f"{directory / 'meta.json'} was written by an older pixelzoo (its split digest "
                          f"did not cover dtype and shape); rebuild it with `{_rebuild(directory)}`")
    if digest != expected:
        raise CorruptFile(f"{directory / (split + '.npz')}: its arrays no longer match the sha256 recorded in "
                          f"{directory / 'meta.json'} (arrays {digest}, recorded {expected}); rebuild both "
                          f"with `{_rebuild(directory)}`")
    check_split_values(directory / f"{split}.npz", x, y, meta)
    return x, y, digest


def split_value_problem(x: np.ndarray, y: np.ndarray, meta: dict[str, Any]) -> str | None:
    """What is wrong with a split's arrays against its meta.json (None: uint8 N×C×H×W in [0, levels),
    int64 labels in [0, n_classes) or -1 = unlabelled). Checked at load, so a bad value is a data error
    here and never a traceback from the likelihood in the middle of a run."""
    levels, n_classes = int(meta.get("levels", 256)), meta.get("n_classes")
    if x.dtype.kind == "f" and np.isnan(x).any():
        return f"x holds NaN (dtype {x.dtype}, expected uint8)"
    if x.dtype != np.uint8:
        return f"x has dtype {x.dtype}, expected uint8"
    if x.ndim != 4:
        return f"x has shape {x.shape}, expected N x C x H x W"
    shape = tuple(meta.get(k) for k in ("channels", "height", "width"))
    if None not in shape and tuple(x.shape[1:]) != shape:
        return f"x has images of shape {tuple(x.shape[1:])}, meta.json says {shape}"
    if x.size and int(x.max()) >= levels:
        n_bad = int((x >= levels).sum())
        return f"x holds {n_bad} value(s) >= levels={levels} (max {int(x.max())})"
    if y.dtype.kind == "f" and np.isnan(y).any():
        return f"y holds NaN (dtype {y.dtype}, expected int64)"
    if y.dtype != np.int64 or y.shape != (len(x),):
        return f"y has dtype {y.dtype} and shape {y.shape}, expected int64 ({len(x)},)"
    labelled = y[y != -1]
    top = int(n_classes) if n_classes else None
    if labelled.size and (int(labelled.min()) < 0 or (top is not None and int(labelled.max()) >= top)):
        lo, hi = int(labelled.min()), int(labelled.max())
        return f"y holds labels outside [0, {top}) and -1 (min {lo}, max {hi})"
    return None


def check_split_values(path: Path, x: np.ndarray, y: np.ndarray, meta: dict[str, Any]) -> None:
    """:func:`split_value_problem` as a :class:`CorruptFile` error naming ``path`` and its rebuild command."""
    problem = split_value_problem(x, y, meta)
    if problem:
        raise CorruptFile(f"{path} is corrupt: {problem}; rebuild it with `{_rebuild(path.parent)}`")
