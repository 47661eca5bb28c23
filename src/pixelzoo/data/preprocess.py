"""Build a processed dataset from a raw source: split, quantise, write arrays + ``meta.json`` atomically.

Quantisation maps a native value v of a source with L gray levels to ``floor(v * levels / L)``: for 8-bit
sources (L = 256) that is the usual ``floor(v * levels / 256)``, for scikit-learn digits L = 17. With
``levels == L`` the data is kept as is (the fixed binarized MNIST is never re-thresholded).

Splits: a source's own validation/test split is used where it has one. Otherwise a validation split
(and, for digits, also a test split) is carved from train with a seeded permutation; ``meta.json`` says
so. Optional caps ``n_train``/``n_test`` take a seeded subset (handy for small profiles); selected images
keep their source order.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from pixelzoo import safety
from pixelzoo.pipeline.settings import Dataset, ParamsError, dataset_problems, section_entry
from pixelzoo.errors import kill_point
from pixelzoo.integrity import clean_stale_temps, publish_dir, temp_sibling
from pixelzoo.data.datasets import SPLITS, split_digest
from pixelzoo.data.sources import RawSource, load_source, source_kind

def resolve_dataset(name: str, params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Check dataset ``name`` against its source before any work; return (resolved entry, source spec).

    The resolved entry holds every field of :class:`pixelzoo.pipeline.settings.Dataset` (unset optional ones None).
    """
    entry = section_entry(params, "datasets", name)
    sources = params.get("sources") if isinstance(params.get("sources"), dict) else {}
    problems = dataset_problems(name, entry, sources)
    if problems:
        raise ParamsError("\n".join(str(p) for p in problems))
    spec = section_entry(params, "sources", entry["source"])
    source_kind(entry["source"], spec)
    return Dataset.model_validate(entry).model_dump(), spec


def quantize(x: np.ndarray, levels: int, source_levels: int) -> np.ndarray:
    """Map values in [0, source_levels) to [0, levels): floor(v * levels / source_levels), as uint8."""
    if not 2 <= levels <= source_levels:
        raise ValueError(f"levels must be in [2, {source_levels}], got {levels}")
    if levels == source_levels:
        return x.astype(np.uint8, copy=True)
    return (x.astype(np.int32) * levels // source_levels).astype(np.uint8)


def split_indices(raw_counts: dict[str, int], entry: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict]:
    """Indices into the raw splits for train/valid/test (each sorted), and where each split came from.

    Deterministic in ``entry["seed"]``; a cap (n_train, n_test) never changes which images are validation.
    """
    rng = np.random.default_rng(entry["seed"])
    pool = rng.permutation(raw_counts["train"])
    origin = {"train": "train", "valid": "valid", "test": "test"}
    test_carved = "test" not in raw_counts
    if test_carved:
        test, pool = pool[: entry["test_size"]], pool[entry["test_size"] :]
        origin["test"] = "train"
    else:
        test = rng.permutation(raw_counts["test"])
    valid_carved = "valid" not in raw_counts
    if valid_carved:
        valid, pool = pool[: entry["valid_size"]], pool[entry["valid_size"] :]
        origin["valid"] = "train"
    else:
        valid = rng.permutation(raw_counts["valid"])[: entry["valid_size"]]  # None keeps all
    train = pool[: entry["n_train"]]
    test = test[: entry["n_test"]]
    idx = {"train": np.sort(train), "valid": np.sort(valid), "test": np.sort(test)}
    for split, ids in idx.items():
        if len(ids) == 0:
            raise ParamsError(f"split {split} would be empty with sizes {raw_counts} and params {entry}")
    return idx, origin


def build_dataset(name: str, entry: dict[str, Any], raw: RawSource
                  ) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, Any]]:
    """Split and quantise a loaded source; return the arrays per split and ``meta.json``'s content."""
    counts_raw = {s: len(xy[0]) for s, xy in raw.splits.items()}
    need = (entry["valid_size"] or 0) * ("valid" not in counts_raw) + (entry["test_size"] or 0)
    if need >= counts_raw["train"]:
        raise ParamsError(f"dataset {name!r}: carving {need} images leaves no training images "
                          f"(source train split has {counts_raw['train']})")
    for key, split in (("valid_size", "valid"), ("n_test", "test")):
        if split in counts_raw and entry[key] is not None and entry[key] > counts_raw[split]:
            raise ParamsError(f"dataset {name!r}: {key}={entry[key]} exceeds the source's {split} split "
                              f"({counts_raw[split]} images)")
    idx, origin = split_indices(counts_raw, entry)
    out = {}
    for split in SPLITS:
        x, y = raw.splits[origin[split]]
        out[split] = (quantize(x[idx[split]], entry["levels"], raw.levels), y[idx[split]].astype(np.int64))
    _, c, h, w = out["train"][0].shape
    meta = {
        "name": name,
        "source": entry["source"],
        "levels": entry["levels"],
        "channels": int(c),
        "height": int(h),
        "width": int(w),
        "n_classes": raw.n_classes,
        "counts": {s: len(out[s][0]) for s in SPLITS},
        "sha256": {s: split_digest(*out[s]) for s in SPLITS},
        "raw_sha256": raw.files,
        "valid_carved_from_train": origin["valid"] == "train",
        "test_carved_from_train": origin["test"] == "train",
        "source_levels": raw.levels,
        "params": entry,
    }
    return out, meta


def write_processed(out_dir: str | Path, arrays: dict[str, tuple[np.ndarray, np.ndarray]],
                    meta: dict[str, Any]) -> None:
    """Write ``{split}.npz`` and ``meta.json`` into a temporary sibling folder, then rename it into place.

    Temp folders that killed runs left behind (their pid is gone) are removed first.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    for stale in clean_stale_temps(out_dir):
        print(f"removed {stale}, left by a killed run")
    tmp = temp_sibling(out_dir)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        for split, (x, y) in arrays.items():
            np.savez(tmp / f"{split}.npz", x=x, y=y)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        kill_point("preprocess")  # crash tests: arrays written, not yet renamed into place
        publish_dir(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def preprocess(name: str, params: dict[str, Any], raw_root: str | Path, out_root: str | Path) -> dict[str, Any]:
    """Validate, load the source, build and write ``<out_root>/<name>/``; return its meta."""
    entry, spec = resolve_dataset(name, params)
    # Both folders are refused if a name would lead out of their root (pixelzoo.safety), before any write.
    raw_dir = safety.under(raw_root, entry["source"], what=f"raw folder of source {entry['source']!r}")
    out_dir = safety.under(out_root, name, what=f"processed folder of dataset {name!r}")
    raw = load_source(entry["source"], spec, raw_dir)
    arrays, meta = build_dataset(name, entry, raw)
    write_processed(out_dir, arrays, meta)
    return meta
