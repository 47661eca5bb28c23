"""The processed splits as tensors, with the digest measured when they were read (what the loop, the
evaluate and sample stages and the resume check use)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pixelzoo.data.datasets import load_meta, load_split_measured


@dataclass
class Split:
    x: torch.Tensor  # uint8 N×C×H×W
    y: torch.Tensor  # int64 N
    sha256: str = ""  # measured on these arrays when they were read (lineage logs it, resume checks it)


def load_splits(data_dir: Path, splits: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, Split]]:
    meta = load_meta(data_dir)
    out = {}
    for s in splits:
        x, y, digest = load_split_measured(data_dir, s, meta)
        out[s] = Split(
            torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y)), digest
        )
    return meta, out
