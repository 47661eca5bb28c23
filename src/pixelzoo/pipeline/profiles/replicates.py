"""Seed replicates: a profile whose ``profile.seeds`` lists several seeds trains every experiment once
per seed, so its table gives each row's mean and spread rather than one draw.

The expansion is written into the profile copy's params.yaml (``dvc.yaml`` iterates over the experiments
it finds there): experiment ``<key>`` keeps its name and runs at the first seed; each further seed ``s``
adds ``<key>-seed<s>``, the same entry with ``seed: s`` and ``replicate_of: <key>``. Only the training
seed changes (initialisation, batch order, dropout); the data split is the dataset's own and is shared.
The report groups the replicates back (:func:`groups`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from pixelzoo.pipeline.settings import Problem


def replica_key(key: str, seed: int) -> str:
    return f"{key}-seed{seed}"


def problems(params: Mapping[str, Any]) -> list[Problem]:
    """What the schema cannot see: a seed listed twice (a replica identical to another run would shrink
    the spread), and an experiment whose name a replica would take."""
    seeds = (params.get("profile") or {}).get("seeds") or []
    out = [Problem("profile.seeds", f"seed {s} is listed more than once", "list each seed once")
           for s in sorted({s for s in seeds if seeds.count(s) > 1})]
    keys = params.get("experiments") or {}
    if any(entry.get("replicate_of") for entry in keys.values()):
        return out  # already expanded
    for key in keys:
        for seed in seeds[1:]:
            if replica_key(key, seed) in keys:
                out.append(Problem(f"experiments.{replica_key(key, seed)}",
                                   f"is the name of {key}'s run at seed {seed} (profile.seeds)", "rename it"))
    return out


def expand(params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` with every experiment repeated over ``profile.seeds`` (unchanged when it has none)."""
    out = copy.deepcopy(dict(params))
    seeds = (out.get("profile") or {}).get("seeds")
    if not seeds:
        return out
    if any(entry.get("replicate_of") for entry in out["experiments"].values()):
        return out  # already expanded
    default_seed = (out.get("train_defaults") or {}).get("seed")
    experiments: dict[str, Any] = {}
    for key, entry in out["experiments"].items():  # seed by seed: a run cut short has every row once
        same = entry.get("seed", default_seed) == seeds[0]
        experiments[key] = entry if same else {**entry, "seed": seeds[0]}
    for seed in seeds[1:]:
        for key, entry in out["experiments"].items():
            experiments[replica_key(key, seed)] = {**entry, "seed": seed, "replicate_of": key}
    out["experiments"] = experiments
    return out


def groups(entries: Mapping[str, Mapping[str, Any]]) -> dict[str, list[str]]:
    """``{experiment: [it, its replicates...]}`` in file order, for experiments that have replicates."""
    found: dict[str, list[str]] = {}
    for key, entry in entries.items():
        base = entry.get("replicate_of")
        if base:
            found.setdefault(str(base), [str(base)]).append(key)
    return {base: found[base] for base in entries if base in found}
