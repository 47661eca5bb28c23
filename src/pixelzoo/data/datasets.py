"""Reading processed datasets: ``data/processed/<name>/{train,valid,test}.npz`` and ``meta.json``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

SPLITS = ("train", "valid", "test")


def split_digest(x: np.ndarray, y: np.ndarray) -> str:
    """sha256 hex of a split: the C-order bytes of ``x`` (uint8) then of ``y`` (int64)."""
    h = hashlib.sha256(np.ascontiguousarray(x, dtype=np.uint8).tobytes())
    h.update(np.ascontiguousarray(y, dtype=np.int64).tobytes())
    return h.hexdigest()


def load_meta(directory: str | Path) -> dict[str, Any]:
    """The dataset's ``meta.json`` (levels, shape, counts, digests, source, params)."""
    path = Path(directory) / "meta.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: build it with `dvc repro preprocess@{Path(directory).name}`")
    return json.loads(path.read_text())


def load_split(directory: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` of one split: x uint8 N×C×H×W with values in [0, levels), y int64 (N,) (-1 = no label)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    path = Path(directory) / f"{split}.npz"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: build it with `dvc repro preprocess@{Path(directory).name}`")
    with np.load(path) as z:
        return z["x"], z["y"]
