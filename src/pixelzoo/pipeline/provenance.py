"""Lineage of a report row: which runs, commit and data made it, and whether it is stale.

The pipeline records, with every stage's MLflow run (:mod:`pixelzoo.pipeline.tracking.client`): the git commit
(``git.commit``, ``git.dirty``), the dataset digest (``dataset.sha256``), the sha256 of the stage's
resolved config (``pixelzoo.config_sha256``) and that config itself as flattened run params. A row is
stale when params.yaml now resolves to another config for any of its stages
(:func:`~pixelzoo.pipeline.settings.stage_config`; how the file is written does not matter, so a
``dvc exp run -S`` rewrite with the same values is not stale), the processed data's ``meta.json`` now
has another digest, or the code (src/, stages/, dvc.yaml) differs from the run's clean commit.
This one definition serves the
report and ``pixelzoo-lineage --check``. The stage's run pointer file (``mlflow_run.json``) names the run;
nothing else is trusted for lineage.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pixelzoo.pipeline import layout
from pixelzoo.pipeline.settings import config_digest, stage_config
from pixelzoo.pipeline.tracking import client as tracking
from pixelzoo.pipeline.tracking.names import TAG_COMMIT, TAG_DATA, TAG_DIRTY


@dataclass
class Lineage:
    """Where a row's numbers came from, and why they may no longer match params.yaml / the data."""

    commit: str | None = None
    dirty: bool | None = None
    data_digest: str | None = None
    stale: list[str] = field(default_factory=list)  # human-readable reasons; empty = up to date
    unchecked: list[str] = field(default_factory=list)  # what could not be compared, and why
    experiment_ids: dict[str, str] = field(default_factory=dict)  # stage -> MLflow experiment id
    checkpoints: dict[str, str | None] = field(default_factory=dict)  # stage -> checkpoint sha256 tag


@dataclass(frozen=True)
class RecordedRun:
    """Tags and (flattened, string-valued) params of one MLflow run."""

    tags: dict[str, str]
    params: dict[str, str]
    experiment_id: str | None = None


class RunStore:
    """Reads runs from the tracking stores named in pointer files; one client per URI, never creates one.

    A local sqlite store that does not exist is reported as unavailable: opening it would create an
    empty database.
    """

    def __init__(self) -> None:
        self._clients: dict[str, Any] = {}

    def get(self, tracking_uri: str, run_id: str) -> RecordedRun:
        """The run, or ``LookupError`` saying why it cannot be read."""
        if tracking_uri.startswith("sqlite:///"):
            db = Path(tracking_uri[len("sqlite:///"):])
            if not db.exists():
                raise LookupError(f"tracking store {db} not found")
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        try:
            with tracking._short_http_retries():
                client = self._clients.setdefault(tracking_uri, MlflowClient(tracking_uri=tracking_uri))
                run = client.get_run(run_id)
        except MlflowException as err:
            raise LookupError(f"run {run_id} not readable from {tracking_uri} ({err.message[:120]})") from err
        except OSError as err:
            raise LookupError(f"tracking store {tracking_uri} unreachable ({err})") from err
        return RecordedRun(dict(run.data.tags), dict(run.data.params), str(run.info.experiment_id))


def changed_keys(recorded: Mapping[str, str], now: Mapping[str, Any]) -> list[str]:
    """Flattened config keys whose value now differs from the recorded run params (added/removed too)."""
    flat = tracking.flatten(now)
    keys = sorted(set(flat) | set(recorded))
    return [k for k in keys if flat.get(k) != recorded.get(k)]


def code_root(root: Path) -> Path:
    """Where the code of runs made in ``root`` lives in git: the source checkout for a profile copy."""
    from pixelzoo.pipeline.profiles.profile import source_of

    source = source_of(root)
    return Path(source["root"]) if source and Path(source["root"]).is_dir() else Path(root)


ALL_CODE = ("src", "stages", "dvc.yaml")  # when dvc.yaml does not name a stage's code


def stage_code(where: Path, stage: str) -> tuple[str, ...]:
    """The code a stage's runs depend on, as dvc.yaml declares it (its ``src/`` and ``stages/`` deps): a
    change elsewhere (the profile runner, the report) leaves its runs current, as it does for DVC."""
    try:
        spec = _dvc_stages(where / "dvc.yaml")[stage]
        deps = (spec.get("do") or spec).get("deps") or []
    except (OSError, KeyError, TypeError, AttributeError, yaml.YAMLError):
        return ALL_CODE
    code = tuple(d for d in deps if isinstance(d, str) and d.startswith(("src/", "stages/")))
    return code or ALL_CODE


@functools.lru_cache(maxsize=8)  # one report reads it for every run of every experiment
def _dvc_stages(path: Path) -> dict[str, Any]:
    return (yaml.safe_load(path.read_text()) or {})["stages"]


def code_change(commit: str | None, dirty: bool, where: Path, cache: dict[str, Any],
                paths: tuple[str, ...] = ALL_CODE) -> str | None:
    """Why the code (``paths``) of a run at ``commit`` is stale in ``where``, or None. A dirty run's code
    cannot be identified and an unknown commit cannot be compared: neither is called stale (the commit
    is shown)."""
    if not commit or dirty:
        return None
    if (commit, paths) not in cache:
        cache[commit, paths] = tracking.code_changes_since(commit, paths, cwd=where)
    changed = cache[commit, paths]
    if not changed:
        return None
    # A long list buries the table: name a few files and count the rest (`git diff` gives them all).
    shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
    return f"code changed since {commit[:8]} ({shown})"


def resolve(
    root: Path,
    params: Mapping[str, Any],
    key: str,
    pointers: Mapping[str, Any],
    store: RunStore,
    code_cache: dict[str, Any] | None = None,
) -> Lineage:
    """The lineage of experiment ``key`` from its stages' runs, checked against params and data now.

    ``pointers`` maps stage name (train/evaluate/sample) to a pointer with ``run_id`` and
    ``tracking_uri``. The commit and data digest shown are the evaluate run's (it made the number),
    else the train run's.
    """
    lin = Lineage()
    where, code_cache = code_root(root), {} if code_cache is None else code_cache
    meta_path = root / layout.data_dir(str(params["experiments"][key].get("dataset"))) / "meta.json"
    data_now = tracking.dataset_digest(json.loads(meta_path.read_text())) if meta_path.exists() else None
    for stage in sorted(pointers, key=lambda s: s != "evaluate"):  # evaluate first
        ptr = pointers[stage]
        try:
            run = store.get(ptr.tracking_uri, ptr.run_id)
        except LookupError as err:
            lin.unchecked.append(f"{stage}: {err}")
            continue
        if run.experiment_id:
            lin.experiment_ids[stage] = run.experiment_id
        if stage != "train":
            lin.checkpoints[stage] = run.tags.get(tracking.TAG_CHECKPOINT)
        if lin.commit is None and run.tags.get(TAG_COMMIT):
            lin.commit, lin.dirty = run.tags[TAG_COMMIT], run.tags.get(TAG_DIRTY) == "true"
        recorded_data = run.tags.get(TAG_DATA)
        lin.data_digest = lin.data_digest or recorded_data
        if data_now is None:
            lin.unchecked.append(f"{stage}: data ({meta_path.relative_to(root)} not present)")
        elif recorded_data != data_now:
            was = str(recorded_data)[:8]
            lin.stale.append(f"{stage}: dataset changed since it ran ({was} -> {data_now[:8]})")
        cfg_now = stage_config(params, key, stage)
        if run.tags.get(tracking.TAG_CONFIG) != config_digest(cfg_now):
            keys = changed_keys(run.params, cfg_now)
            lin.stale.append(f"{stage}: params changed since it ran ({', '.join(keys) or 'config digest'})")
        code = code_change(run.tags.get(TAG_COMMIT), run.tags.get(TAG_DIRTY) == "true", where, code_cache,
                           stage_code(where, stage))
        if code:
            lin.stale.append(f"{stage}: {code}")
    return lin
