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

from pixelzoo.config import ParamsError
from pixelzoo.data.datasets import SPLITS, split_digest
from pixelzoo.data.sources import RawSource, load_source, source_kind

DATASET_KEYS = {"source", "levels", "seed", "valid_size", "test_size", "n_train", "n_test"}


def _int_or_none(name: str, entry: dict[str, Any], key: str, minimum: int) -> int | None:
    value = entry.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ParamsError(f"dataset {name!r}: {key} must be an integer >= {minimum} or null, got {value!r}")
    return value


def resolve_dataset(name: str, params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Check dataset ``name`` against its source before any work; return (resolved entry, source spec)."""
    from pixelzoo.config import section_entry

    entry = section_entry(params, "datasets", name)
    unknown = set(entry) - DATASET_KEYS
    if unknown:
        raise ParamsError(f"dataset {name!r}: unknown key(s) {sorted(unknown)}; allowed: {sorted(DATASET_KEYS)}")
    if "source" not in entry:
        raise ParamsError(f"dataset {name!r}: missing `source:`")
    source_name = entry["source"]
    spec = section_entry(params, "sources", source_name)
    kind = source_kind(source_name, spec)
    levels = entry.get("levels")
    if isinstance(levels, bool) or not isinstance(levels, int) or not 2 <= levels <= 256:
        raise ParamsError(f"dataset {name!r}: levels must be an integer in [2, 256], got {levels!r}")
    if levels > kind.levels:
        raise ParamsError(f"dataset {name!r}: levels {levels} is more than source {source_name!r} has "
                          f"({kind.levels} levels); use levels <= {kind.levels}")
    seed = entry.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ParamsError(f"dataset {name!r}: seed must be an integer, got {seed!r}")
    resolved = {
        "source": source_name,
        "levels": levels,
        "seed": seed,
        "valid_size": _int_or_none(name, entry, "valid_size", 1),
        "test_size": _int_or_none(name, entry, "test_size", 1),
        "n_train": _int_or_none(name, entry, "n_train", 1),
        "n_test": _int_or_none(name, entry, "n_test", 1),
    }
    if "valid" not in kind.splits and resolved["valid_size"] is None:
        raise ParamsError(f"dataset {name!r}: source {source_name!r} has no validation split; "
                          f"set valid_size (images carved from train)")
    if "test" in kind.splits and resolved["test_size"] is not None:
        raise ParamsError(f"dataset {name!r}: source {source_name!r} has its own test split; "
                          f"remove test_size (use n_test to cap it)")
    if "test" not in kind.splits and resolved["test_size"] is None:
        raise ParamsError(f"dataset {name!r}: source {source_name!r} has no test split; "
                          f"set test_size (images carved from the source's pool)")
    return resolved, spec


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
    """Write ``{split}.npz`` and ``meta.json`` into a temporary sibling folder, then rename it into place."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        for split, (x, y) in arrays.items():
            np.savez(tmp / f"{split}.npz", x=x, y=y)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def preprocess(name: str, params: dict[str, Any], raw_root: str | Path, out_root: str | Path) -> dict[str, Any]:
    """Validate, load the source, build and write ``<out_root>/<name>/``; return its meta."""
    entry, spec = resolve_dataset(name, params)
    raw = load_source(entry["source"], spec, Path(raw_root) / entry["source"])
    arrays, meta = build_dataset(name, entry, raw)
    write_processed(Path(out_root) / name, arrays, meta)
    return meta
