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
    """sha256 hex of a split: the C-order bytes of ``x`` (uint8) then of ``y`` (int64)."""
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
    expected = (meta or load_meta(directory))["sha256"].get(split)
    if digest != expected:
        raise CorruptFile(f"{directory / (split + '.npz')}: its arrays no longer match the sha256 recorded in "
                          f"{directory / 'meta.json'} (arrays {digest}, recorded {expected}); rebuild both "
                          f"with `{_rebuild(directory)}`")
    return x, y, digest
