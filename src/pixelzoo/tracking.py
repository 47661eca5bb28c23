"""MLflow bookkeeping: one run per executed (experiment, stage), its tags, and the run pointer file.

Store: MLflow's embedded sqlite database ``<repo root>/mlflow.db`` with artifacts in
``<repo root>/mlruns``, both as *absolute* paths built from ``DVC_ROOT`` (set by DVC for stage
commands, and pointing at the main repository even under ``dvc exp run``, whose temporary copy would
otherwise get a throw-away database). ``MLFLOW_TRACKING_URI`` switches to a team server.

Every stage calls :func:`init_store` first: it fails fast, before any training, when the store is
unreachable, and creates the schema and the MLflow experiment once under a file lock (several
processes creating the sqlite schema at the same time fail; afterwards concurrent writers are fine).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pixelzoo.config import config_digest
from pixelzoo.errors import UserError

POINTER_NAME = "mlflow_run.json"
TAG_EXPERIMENT, TAG_STAGE = "pixelzoo.experiment", "pixelzoo.stage"
TAG_CONFIG = "pixelzoo.config_sha256"
TAG_FAILURE = "pixelzoo.failure"  # why a FAILED run failed (exception type and message)
# sha256 of the model.pt a stage read (evaluate, sample): links one train → evaluate → sample chain.
TAG_CHECKPOINT = "pixelzoo.checkpoint_sha256"
# Files the pipeline itself rewrites while it runs, and params.yaml (every run records its params as
# resolved and lineage compares them by value; `dvc exp run -S` rewrites the file): none makes a run "dirty".
_NOT_CODE = ("dvc.lock", "metrics/", "reports/", "params.yaml")
# Set by pixelzoo.profile for runs in a profile copy: the commit of the user's checkout, not the copy's.
ENV_SOURCE_COMMIT, ENV_SOURCE_DIRTY = "PIXELZOO_SOURCE_COMMIT", "PIXELZOO_SOURCE_DIRTY"


class TrackingUnavailable(UserError, RuntimeError):
    """The tracking store cannot be reached or written; raised before any work starts."""


def repo_root() -> Path:
    """``DVC_ROOT`` when DVC runs us; else the nearest ancestor of the cwd holding ``.dvc`` or ``.git``."""
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"]).resolve()
    here = Path.cwd().resolve()
    for d in (here, *here.parents):
        if (d / ".dvc").is_dir() or (d / ".git").exists():
            return d
    raise TrackingUnavailable(f"{here} is not inside a DVC/git repository; run from the pixelzoo checkout")


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<abs repo root>/mlflow.db``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repo_root() / 'mlflow.db'}"


def _is_local(uri: str) -> bool:
    return uri.startswith("sqlite:") or "://" not in uri or uri.startswith("file:")


@contextmanager
def _init_lock() -> Iterator[None]:
    lock_dir = repo_root() / "mlruns"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / ".init.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextmanager
def _short_http_retries() -> Iterator[None]:
    """Probe a server with few retries and a short timeout unless the user chose their own."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def init_store(experiment_name: str) -> str:
    """Check the store is reachable, create its schema and the MLflow experiment once; return its id.

    Idempotent and safe to call from several stages at once.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    uri = tracking_uri()
    try:
        with _init_lock(), _short_http_retries():
            client = MlflowClient(tracking_uri=uri)
            exp = client.get_experiment_by_name(experiment_name)
            if exp is not None:
                return exp.experiment_id
            location = (repo_root() / "mlruns").as_uri() if _is_local(uri) else None
            try:
                return client.create_experiment(experiment_name, artifact_location=location)
            except MlflowException:  # created meanwhile by a process on another machine
                exp = client.get_experiment_by_name(experiment_name)
                if exp is None:
                    raise
                return exp.experiment_id
    except Exception as err:  # noqa: BLE001 - any failure here means "cannot track": say so clearly
        raise TrackingUnavailable(
            f"MLflow tracking store {uri} is unreachable or not writable ({type(err).__name__}: {err}). "
            "Nothing has been trained or evaluated. Start the tracking server (or fix MLFLOW_TRACKING_URI), "
            "or unset MLFLOW_TRACKING_URI to use the local store "
            f"sqlite:///{repo_root() / 'mlflow.db'}, then rerun the stage."
        ) from err


# ----------------------------------------------------------------------------- layout
# Where each stage writes (docs/architecture.md); stages and lineage both use these.
STAGE_DIRS = {"train": "train", "evaluate": "evaluate", "sample": "samples"}


def data_dir(dataset: str) -> Path:
    return Path("data/processed") / dataset


def stage_dir(experiment: str, stage: str) -> Path:
    return Path("outputs") / experiment / STAGE_DIRS[stage]


def metrics_path(experiment: str) -> Path:
    return Path("metrics") / f"{experiment}.json"


def scratch_dir(experiment: str) -> Path:
    """Resumable checkpoints: never a DVC output (DVC deletes outputs before re-running a stage)."""
    return Path("scratch") / experiment


# ----------------------------------------------------------------------------- provenance
def git_state(cwd: Path | None = None) -> tuple[str, bool]:
    """(commit, dirty) the stage runs from: the source checkout's when ``PIXELZOO_SOURCE_COMMIT`` is set
    (a profile copy), else :func:`repo_state` of the repository it runs in."""
    if os.environ.get(ENV_SOURCE_COMMIT):
        return os.environ[ENV_SOURCE_COMMIT], os.environ.get(ENV_SOURCE_DIRTY, "true") != "false"
    return repo_state(cwd)


def repo_state(cwd: Path | None = None) -> tuple[str, bool]:
    """(HEAD commit, dirty) of a git repository; ("unknown", True) outside git. Dirty means a tracked
    file other than params.yaml and pipeline outputs differs from HEAD.

    Under ``dvc exp run`` HEAD is the baseline commit: the DVC experiment name and the resolved
    params are tagged as well, because the commit alone does not identify the run.
    """
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown", True
    changed = [line[3:] for line in status.splitlines() if line.strip()]
    dirty = any(not p.startswith(_NOT_CODE) for p in changed)
    return commit, dirty


def code_changes_since(
    commit: str, paths: tuple[str, ...] = ("src", "stages", "dvc.yaml"), cwd: Path | None = None
) -> list[str] | None:
    """Code files that differ between ``commit`` and the working tree of the repository at ``cwd``;
    None if ``commit`` is unknown there."""
    try:
        out = subprocess.run(
            ["git", "diff", "--name-only", commit, "--", *paths], cwd=cwd, capture_output=True, text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.split()


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested dict -> {"a.b.c": "value"} with JSON-ish string values (MLflow params are strings)."""
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v if isinstance(v, str) else json.dumps(v)
    return out


def file_sha256(path: Path) -> str:
    """sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def dataset_digest(meta: Mapping[str, Any]) -> str:
    """One sha256 over the per-split array digests of meta.json (the dataset as a whole)."""
    return hashlib.sha256(json.dumps(meta["sha256"], sort_keys=True).encode()).hexdigest()


def provenance_tags(experiment: str, stage: str, config: Mapping[str, Any], meta: Mapping[str, Any]) -> dict:
    commit, dirty = git_state()
    tags = {
        TAG_EXPERIMENT: experiment,
        TAG_STAGE: stage,
        "git.commit": commit,
        "git.dirty": str(dirty).lower(),
        TAG_CONFIG: config_digest(config),
        "dataset.name": str(meta.get("name", config.get("dataset"))),
        "dataset.sha256": dataset_digest(meta),
    }
    tags.update({f"dataset.sha256.{split}": h for split, h in meta["sha256"].items()})
    if os.environ.get(ENV_SOURCE_COMMIT):  # the copy's own throw-away commit, for completeness
        tags["pixelzoo.profile_copy_commit"] = repo_state()[0]
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc.exp_name"] = os.environ["DVC_EXP_NAME"]
    if os.environ.get("DVC_EXP_BASELINE_REV"):
        tags["dvc.exp_baseline_rev"] = os.environ["DVC_EXP_BASELINE_REV"]
    return tags


# ----------------------------------------------------------------------------- stage runs
@dataclass
class StageRun:
    run_id: str
    run_name: str

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        import mlflow

        mlflow.log_metrics(dict(metrics), step=step)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        import mlflow

        mlflow.set_tags(dict(tags))

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        import mlflow

        mlflow.log_artifact(str(path), artifact_path=artifact_path)


@contextmanager
def stage_run(
    experiment: str,
    stage: str,
    config: Mapping[str, Any],
    meta: Mapping[str, Any],
    data_dir: Path,
    splits: list[str],
    pointer_dir: Path,
    experiment_name: str,
) -> Iterator[StageRun]:
    """An MLflow run named ``<experiment>:<stage>`` with provenance tags, params and dataset inputs.

    ``config`` is what the stage ran with, as resolved. On success the pointer file
    ``pointer_dir/mlflow_run.json`` is written and the run ends FINISHED; on error it ends FAILED with
    the reason in the ``pixelzoo.failure`` tag.
    """
    import mlflow
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource

    experiment_id = init_store(experiment_name)
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    run_name = f"{experiment}:{stage}"
    run = mlflow.start_run(
        experiment_id=experiment_id, run_name=run_name, tags=provenance_tags(experiment, stage, config, meta)
    )
    try:
        mlflow.log_params(flatten(config))
        for split in splits:
            # The digest column holds 36 characters: the sha256 prefix goes there, the full one is a tag.
            ds = MetaDataset(
                LocalArtifactDatasetSource(str(Path(data_dir).resolve() / f"{split}.npz")),
                name=f"{meta.get('name', config.get('dataset'))}/{split}",
                digest=meta["sha256"][split][:32],
            )
            _log_input(ds, split)
        with _temp_json(config) as cfg_path:
            mlflow.log_artifact(str(cfg_path))
        handle = StageRun(run.info.run_id, run_name)
        yield handle
        write_pointer(pointer_dir, handle, uri, experiment_name)
    except BaseException as err:
        try:
            mlflow.set_tag(TAG_FAILURE, f"{type(err).__name__}: {err}"[:4000])
            mlflow.end_run(status="FAILED")
        except Exception as end_err:  # noqa: BLE001 - keep the original error, which is the informative one
            print(f"warning: could not mark MLflow run {run.info.run_id} FAILED: {end_err}")
        raise
    mlflow.end_run(status="FINISHED")


def _log_input(dataset: Any, split: str, attempts: int = 4) -> None:
    """``mlflow.log_input``, retried: stages logging the same dataset at the same moment race in the
    server's get-or-create (PostgreSQL: UniqueViolation on ``dataset_pk``, seen in tests/test_team.py);
    once one has created it, the next try finds it."""
    import mlflow
    from mlflow.exceptions import MlflowException

    for attempt in range(attempts):
        try:
            mlflow.log_input(dataset, context=split)
            return
        except MlflowException:
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


@contextmanager
def _temp_json(obj: Mapping[str, Any]) -> Iterator[Path]:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "config.json"
        path.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
        yield path


def write_pointer(pointer_dir: Path, run: StageRun, uri: str, experiment_name: str) -> Path:
    """``mlflow_run.json`` = {run_id, tracking_uri, experiment_name, run_name} inside the stage output."""
    pointer_dir = Path(pointer_dir)
    pointer_dir.mkdir(parents=True, exist_ok=True)
    path = pointer_dir / POINTER_NAME
    path.write_text(
        json.dumps(
            {
                "run_id": run.run_id,
                "tracking_uri": uri,
                "experiment_name": experiment_name,
                "run_name": run.run_name,
            },
            indent=2,
        )
        + "\n"
    )
    return path


def read_pointer(pointer_dir: Path) -> dict[str, str] | None:
    path = Path(pointer_dir) / POINTER_NAME
    return json.loads(path.read_text()) if path.exists() else None
