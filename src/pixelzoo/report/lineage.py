"""Lineage of a report row: which runs, commit and data made it, and whether it is stale.

A row is stale when the experiment's params in params.yaml now differ from the params recorded when it
ran, or when the processed dataset's digest (``data/processed/<dataset>/meta.json``) differs from the
digest recorded with the run. Recorded values are looked up, in order, in the run pointers, history.json
and the metrics JSON, under these keys:

- commit: ``git_commit`` (plus ``git_dirty``, a bool)
- data digest: ``data_sha256`` (hex of :func:`dataset_digest`) or ``data_sha256_splits`` ({split: hex},
  as in meta.json ``sha256``)
- params: ``config`` (the experiment entry as resolved when it ran)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Keys that do not change what a run computes: editing them does not make a result stale.
NOT_AFFECTING = frozenset({"reference"})


@dataclass
class Lineage:
    """Where a row's numbers came from, and why they may no longer match params.yaml / the data."""

    commit: str | None = None
    dirty: bool | None = None
    data_digest: str | None = None
    stale: list[str] = field(default_factory=list)  # human-readable reasons; empty = up to date
    unchecked: list[str] = field(default_factory=list)  # what could not be compared, and why


def dataset_digest(meta: Mapping[str, Any]) -> str:
    """One hex digest of a processed dataset: sha256 over ``meta['sha256']`` split hashes in split order."""
    splits = meta.get("sha256")
    if not isinstance(splits, Mapping) or not splits:
        raise ValueError("meta.json has no 'sha256' mapping {split: hex}; re-run preprocess")
    text = "".join(f"{split}:{splits[split]}\n" for split in sorted(splits))
    return hashlib.sha256(text.encode()).hexdigest()


def _first(sources: Iterable[Mapping[str, Any]], key: str) -> Any:
    for src in sources:
        if src and src.get(key) is not None:
            return src[key]
    return None


def diff_params(recorded: Any, current: Any, path: str = "") -> list[str]:
    """Dotted paths where ``current`` (params.yaml now) differs from ``recorded``.

    Only keys present now are compared, so a recorded config that also holds resolved defaults does not
    count as a change; a key that is new in params.yaml does.
    """
    if isinstance(current, Mapping):
        if not isinstance(recorded, Mapping):
            return [path or "<entry>"]
        out: list[str] = []
        for k, v in current.items():
            if not path and k in NOT_AFFECTING:
                continue
            sub = f"{path}.{k}" if path else str(k)
            if k not in recorded:
                out.append(sub)
            else:
                out.extend(diff_params(recorded[k], v, sub))
        return out
    # JSON round-trips turn tuples into lists and may turn ints into floats; compare as JSON values.
    def as_json(v: Any) -> str:
        return json.dumps(v, sort_keys=True, default=str)

    same = as_json(recorded) == as_json(current)
    if not same and isinstance(recorded, int | float) and isinstance(current, int | float):
        same = float(recorded) == float(current)
    return [] if same else [path or "<entry>"]


def resolve(
    root: Path,
    params: Mapping[str, Any],
    key: str,
    metrics: Mapping[str, Any] | None,
    history: Mapping[str, Any] | None,
    pointers: Mapping[str, Any],
) -> Lineage:
    """The lineage of experiment ``key`` from its output files, checked against params and data now."""
    sources = [getattr(p, "extra", {}) for p in pointers.values()] + [history or {}, metrics or {}]
    lin = Lineage(commit=_first(sources, "git_commit"), dirty=_first(sources, "git_dirty"))
    if metrics is None and history is None and not pointers:
        return lin  # never ran: nothing to be stale

    entry = params["experiments"][key]
    recorded_cfg = _first(sources, "config")
    if recorded_cfg is None:
        lin.unchecked.append("params (no resolved config recorded with the run)")
    else:
        changed = diff_params(recorded_cfg, entry)
        if changed:
            lin.stale.append("params changed since the run: " + ", ".join(changed))

    dataset = (entry or {}).get("dataset")
    meta_path = root / "data" / "processed" / str(dataset) / "meta.json"
    rec_digest = _first(sources, "data_sha256")
    rec_splits = _first(sources, "data_sha256_splits")
    if not meta_path.exists():
        lin.data_digest = rec_digest
        lin.unchecked.append(f"data ({meta_path.relative_to(root)} not present)")
        return lin
    meta = json.loads(meta_path.read_text())
    now = dataset_digest(meta)
    lin.data_digest = rec_digest or now
    if rec_digest is not None:
        if rec_digest != now:
            lin.stale.append(
                f"dataset {dataset} changed since the run (digest {rec_digest[:8]} -> {now[:8]})"
            )
    elif rec_splits is not None:
        if dict(rec_splits) != dict(meta["sha256"]):
            lin.stale.append(f"dataset {dataset} changed since the run (split hashes differ)")
    else:
        lin.unchecked.append("data (no dataset digest recorded with the run)")
    return lin
