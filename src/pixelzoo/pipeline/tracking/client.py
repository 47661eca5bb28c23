"""MLflow bookkeeping: one run per executed (experiment, stage), its tags, and the run pointer file.

Store: MLflow's embedded sqlite database ``<repo root>/mlflow.db`` with artifacts in
``<repo root>/mlruns``, both as *absolute* paths built from ``DVC_ROOT`` (set by DVC for stage
commands, and pointing at the main repository even under ``dvc exp run``, whose temporary copy would
otherwise get a throw-away database). ``MLFLOW_TRACKING_URI`` switches to a team server.

Every stage calls :func:`init_store` first: it fails fast, before any training, when the store is
unreachable, and creates the schema and the MLflow experiment once under a file lock (several
processes creating the sqlite schema at the same time fail; afterwards concurrent writers are fine).

A stage talks to the store through its tracking process (:mod:`pixelzoo.pipeline.tracking.server`), started by
:func:`connect` before the stage imports torch so that MLflow loads meanwhile; the read-side tools
(lineage, the report) use MLflow in their own process.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pixelzoo import integrity
from pixelzoo.errors import MissingInput, UserError
from pixelzoo.pipeline import layout
from pixelzoo.pipeline.layout import POINTER_NAME, repo_root, stage_dir
from pixelzoo.pipeline.tracking import server as recorder
from pixelzoo.pipeline.tracking.names import (
    ENV_SOURCE_COMMIT,
    ENV_SOURCE_DIRTY,
    TAG_CHECKPOINT,
    TAG_CODE,
    TAG_COMMIT,
    TAG_CONFIG,
    TAG_DATA,
    TAG_DIRTY,
    TAG_DVC_EXP,
    TAG_EXPERIMENT,
    TAG_FAILURE,
    TAG_HOST,
    TAG_KILLED,
    TAG_ORPHANS,
    TAG_PID,
    TAG_PID_START,
    TAG_STAGE,
    TAG_SUPERSEDED_BY,
    TAG_TRAIN_RUN,  # noqa: F401 - the stages read it as tracking.TAG_TRAIN_RUN
)

# Files the pipeline itself rewrites while it runs, and params.yaml (every run records its params as
# resolved and lineage compares them by value; `dvc exp run -S` rewrites the file): none makes a run "dirty".
_NOT_CODE = ("dvc.lock", "metrics/", "reports/", "params.yaml")


class TrackingUnavailable(UserError, RuntimeError):
    """The tracking store cannot be reached or written; raised before any work starts."""


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


def _short_retries() -> dict[str, str]:
    """Probe a server with few retries and a short timeout unless the user chose their own."""
    short = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
    return {k: v for k, v in short.items() if k not in os.environ}


@contextmanager
def _short_http_retries() -> Iterator[None]:
    """:func:`_short_retries` for MLflow calls in this process (the read-side tools)."""
    with _scoped_env(_short_retries()):
        yield


@contextmanager
def _scoped_env(values: Mapping[str, str]) -> Iterator[None]:
    """Environment variables set inside the block only."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def connect() -> recorder.Recorder:
    """This process's tracking process: a stage calls this first, so MLflow loads while it imports torch."""
    return recorder.start(tracking_uri())


def _why(err: BaseException) -> str:
    return str(err) if isinstance(err, recorder.StoreError) else f"{type(err).__name__}: {err}"


def init_store(experiment_name: str) -> str:
    """Check the store is reachable, create its schema and the MLflow experiment once; return its id.

    Idempotent and safe to call from several stages at once.
    """
    uri = tracking_uri()
    try:
        with _init_lock():
            found = connect().call("experiment_id", uri, experiment_name, env=_short_retries())
            if found is not None:
                return found
            location = (repo_root() / "mlruns").as_uri() if _is_local(uri) else None
            return connect().call("create_experiment", uri, experiment_name, location, env=_short_retries())
    except Exception as err:  # noqa: BLE001 - any failure here means "cannot track": say so clearly
        raise TrackingUnavailable(
            f"MLflow tracking store {uri} is unreachable or not writable ({_why(err)}). "
            "Nothing has been trained or evaluated. Start the tracking server (or fix MLFLOW_TRACKING_URI), "
            "or unset MLFLOW_TRACKING_URI to use the local store "
            f"sqlite:///{repo_root() / 'mlflow.db'}, then rerun the stage."
        ) from err


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


def dataset_digest(meta: Mapping[str, Any]) -> str:
    """One sha256 over the per-split array digests of meta.json (the dataset as a whole)."""
    return hashlib.sha256(json.dumps(meta["sha256"], sort_keys=True).encode()).hexdigest()


def provenance_tags(
    experiment: str, stage: str, config: Mapping[str, Any], meta: Mapping[str, Any], data: Mapping[str, str]
) -> dict:
    """Tags of a stage run. ``data``: {split: sha256 measured on the arrays the stage read}."""
    from pixelzoo.pipeline.settings import config_digest  # pydantic: not before a stage has called connect()

    commit, dirty = git_state()
    me = integrity.process_id()
    tags = {
        TAG_EXPERIMENT: experiment,
        TAG_STAGE: stage,
        TAG_COMMIT: commit,
        TAG_DIRTY: str(dirty).lower(),
        TAG_CONFIG: config_digest(config),
        TAG_CODE: integrity.code_digest(layout.stage_code(stage)) if stage in layout.STAGE_DIRS else "",
        "dataset.name": str(meta.get("name", config.get("dataset"))),
        # the build of the dataset (meta.json, checked against every split read) ...
        TAG_DATA: dataset_digest(meta),
        TAG_HOST: me["host"],
        TAG_PID: me["pid"],
        TAG_PID_START: me["start"],
    }
    # ... and the digest of each split as measured on the arrays this stage actually read
    tags.update({f"{TAG_DATA}.{split}": h for split, h in data.items()})
    if os.environ.get(ENV_SOURCE_COMMIT):  # the copy's own throw-away commit, for completeness
        tags["pixelzoo.profile_copy_commit"] = repo_state()[0]
    if os.environ.get("DVC_EXP_NAME"):
        tags[TAG_DVC_EXP] = os.environ["DVC_EXP_NAME"]
    if os.environ.get("DVC_EXP_BASELINE_REV"):
        tags["dvc.exp_baseline_rev"] = os.environ["DVC_EXP_BASELINE_REV"]
    return tags


# ----------------------------------------------------------------------------- stage runs
# A lost tracking server must not stall a stage: each call while the run works waits at most
# CALL_TIMEOUT_S (no retries); failed metric batches are kept and retried every RETRY_EVERY_S. At the
# end the stage waits up to FINISH_WAIT_S for the server before it gives up (outputs unpublished,
# resume checkpoint kept).
CALL_TIMEOUT_S, RETRY_EVERY_S, FINISH_WAIT_S = 3, 10.0, 60.0


class StageKilled(BaseException):
    """A catchable signal (SIGTERM, SIGHUP) arrived; BaseException so no ``except Exception`` eats it."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")


@contextmanager
def _signals_raise() -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into :class:`StageKilled` (SIGINT already raises KeyboardInterrupt)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: Any) -> None:
        raise StageKilled(signum)

    saved = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, old in saved.items():
            signal.signal(sig, old)


# MLflow HTTP calls while the stage works: no retries, CALL_TIMEOUT_S each (the stage retries itself).
_NO_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(CALL_TIMEOUT_S)}


@dataclass
class StageRun:
    """Handle of a running stage: log through it (buffered), write outputs into ``out_dir`` (a temp folder
    renamed to the stage output only when the run has finished)."""

    run_id: str
    run_name: str
    uri: str = ""
    out_dir: Path = Path(".")
    _pending: list[Any] = field(default_factory=list)  # metrics not yet accepted by the store
    _tags: dict[str, str] = field(default_factory=dict)
    _artifacts: list[tuple[Path, str | None]] = field(default_factory=list)
    _moves: list[tuple[Path, Path]] = field(default_factory=list)
    _calls: list[tuple[str, tuple[Any, ...], dict[str, str], Any]] = field(default_factory=list)
    _down_since: float | None = None
    _last_try: float = 0.0

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Record metrics now (timestamped now); sent at once, or later if the store is unreachable."""
        ts = int(time.time() * 1000)
        self._pending += [[k, float(v), ts, int(step or 0)] for k, v in metrics.items()]
        self.flush()

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._tags.update({k: str(v) for k, v in tags.items()})
        self.flush()

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """Logged when the stage finishes (files are complete then, and a lost server cannot stall us)."""
        self._artifacts.append((Path(path), artifact_path))

    def call_at_finish(self, op: str, *args: Any, env: Mapping[str, str] | None = None,
                       then: Any = None) -> None:
        """Tracking-process request ``op(uri, run_id, *args)`` sent when the stage finishes, after its
        artifacts (e.g. log_model: the checkpoint is complete then); ``then(reply)`` is called with the reply.
        """
        self._calls.append((op, args, {**_NO_RETRIES, **(env or {})}, then))

    def publish_file(self, tmp: Path, final: Path) -> None:
        """Rename ``tmp`` to ``final`` when the run has finished (before the output folder itself)."""
        self._moves.append((Path(tmp), Path(final)))

    def flush(self, force: bool = False) -> bool:
        """Send what is pending; False (and keep it) if the store does not answer within a few seconds."""
        if not (self._pending or self._tags):
            return True
        now = time.monotonic()
        if self._down_since is not None and not force and now - self._last_try < RETRY_EVERY_S:
            return False
        self._last_try = now
        try:
            self._send()
        except Exception as err:  # noqa: BLE001 - any failure: keep the metrics, try again later
            if self._down_since is None:
                self._down_since = now
                print(f"warning: tracking store {self.uri} is not answering ({type(err).__name__}); the "
                      f"stage goes on and keeps {len(self._pending)} metric(s) to send when it is back",
                      flush=True)
            return False
        if self._down_since is not None:
            print(f"tracking store {self.uri} is back after {now - self._down_since:.0f} s: buffered metrics "
                  "sent", flush=True)
            self._down_since = None
        return True

    def _send(self) -> None:
        while self._pending or self._tags:
            batch = self._pending[:1000]  # MLflow's limit per log_batch
            connect().call("log_batch", self.uri, self.run_id, batch, self._tags, env=_NO_RETRIES)
            del self._pending[: len(batch)]
            self._tags.clear()

    def finish(self, wait_s: float = FINISH_WAIT_S) -> None:
        """Send everything that is pending and the artifacts, waiting up to ``wait_s`` for the store."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                if not self.flush(force=True):
                    raise ConnectionError("metrics not accepted")
                while self._artifacts:
                    path, where = self._artifacts[0]
                    connect().call("log_artifact", self.uri, self.run_id, str(path.resolve()), where,
                                   env=_NO_RETRIES)
                    self._artifacts.pop(0)
                while self._calls:
                    op, args, env, then = self._calls[0]
                    result = connect().call(op, self.uri, self.run_id, *args, env=env)
                    self._calls.pop(0)
                    if then is not None:
                        then(result)
                return
            except Exception as err:  # noqa: BLE001
                if time.monotonic() >= deadline:
                    raise TrackingUnavailable(
                        f"tracking store {self.uri} has not answered for {wait_s:.0f} s at the end of "
                        f"{self.run_name} ({_why(err)[:200]}); {len(self._pending)} "
                        "metric(s) not recorded, outputs not published. Bring the store back and rerun the "
                        "stage (train resumes from its scratch checkpoint)"
                    ) from err
                time.sleep(2.0)


def mark_orphans(uri: str, experiment_id: str, experiment: str, stage: str, new_run: str) -> list[str]:
    """Runs of this (experiment, stage) left RUNNING by a process on this host that is gone: mark them
    KILLED with the reason and a link to ``new_run``; return their ids."""
    query = (f"tags.`{TAG_EXPERIMENT}` = '{experiment}' and tags.`{TAG_STAGE}` = '{stage}' "
             "and attributes.status = 'RUNNING'")
    me = integrity.process_id()
    orphans = []
    store, env = connect(), _short_retries()
    for run_id, t in store.call("running_runs", uri, experiment_id, query, env=env):
        if run_id == new_run or t.get(TAG_HOST) != me["host"] or not t.get(TAG_PID, "").isdigit():
            continue  # another machine's process cannot be checked from here
        if integrity.process_alive(int(t[TAG_PID]), t.get(TAG_PID_START)):
            continue
        reason = (f"process {t[TAG_PID]} on {t[TAG_HOST]} ended without closing this run (killed); found "
                  f"by run {new_run} at {time.strftime('%Y-%m-%d %H:%M:%S')}")
        store.call("log_batch", uri, run_id, [], {TAG_KILLED: reason, TAG_SUPERSEDED_BY: new_run}, env=env)
        store.call("set_terminated", uri, run_id, "KILLED", env=env)
        orphans.append(run_id)
    return orphans


def _start_run(uri: str, experiment_id: str, run_name: str, tags: Mapping[str, Any],
               config: Mapping[str, Any], inputs: list[list[str]]) -> str:
    """A run with its tags, the resolved config as params and ``config.json``, and the dataset inputs
    (``[split, npz path, name, digest]``)."""
    with _temp_json(config) as cfg_path:
        return connect().call("start_run", uri, experiment_id, run_name, {k: str(v) for k, v in tags.items()},
                              [[k, v] for k, v in flatten(config).items()], inputs, str(cfg_path),
                              env=_short_retries())


@contextmanager
def stage_run(
    experiment: str,
    stage: str,
    config: Mapping[str, Any],
    meta: Mapping[str, Any],
    data_dir: Path,
    data: Mapping[str, str],
    pointer_dir: Path,
    experiment_name: str,
    tags: Mapping[str, str] | None = None,
) -> Iterator[StageRun]:
    """An MLflow run named ``<experiment>:<stage>`` with provenance tags, params and dataset inputs.

    ``config`` is what the stage ran with, as resolved; ``data`` {split: sha256 measured on the arrays
    read}. The stage writes into ``run.out_dir``, a temp sibling of ``pointer_dir``; on success the run's
    pending metrics and artifacts are sent, the pointer file ``mlflow_run.json`` is written into it, the
    run ends FINISHED and only then is the folder renamed to ``pointer_dir``: a stage that dies never leaves
    an output that looks complete. On an error the run ends FAILED (reason in ``pixelzoo.failure``), on
    SIGTERM/SIGHUP/SIGINT KILLED. Runs of the same stage left RUNNING by a dead process are marked KILLED.
    """
    experiment_id = init_store(experiment_name)
    uri = tracking_uri()
    run_name = f"{experiment}:{stage}"
    pointer_dir = Path(pointer_dir)
    integrity.clean_stale_temps(pointer_dir)
    dataset = meta.get("name", config.get("dataset"))
    inputs = [
        # The digest column holds 36 characters: the sha256 prefix goes there, the full one is a tag.
        [split, str(Path(data_dir).resolve() / f"{split}.npz"), f"{dataset}/{split}", h[:32]]
        for split, h in data.items()
    ]
    all_tags = {**provenance_tags(experiment, stage, config, meta, data), **(tags or {})}
    run_id = _start_run(uri, experiment_id, run_name, all_tags, config, inputs)
    orphans = mark_orphans(uri, experiment_id, experiment, stage, run_id)
    if orphans:
        connect().call("log_batch", uri, run_id, [], {TAG_ORPHANS: ",".join(orphans)}, env=_short_retries())
        print(f"{run_name}: marked {len(orphans)} run(s) left RUNNING by a dead process KILLED: "
              + ", ".join(orphans), flush=True)
    handle = StageRun(run_id, run_name, uri, integrity.temp_sibling(pointer_dir))
    shutil.rmtree(handle.out_dir, ignore_errors=True)
    handle.out_dir.mkdir(parents=True)
    try:
        with _signals_raise():
            yield handle
            handle.finish()
            write_pointer(handle.out_dir, handle, uri, experiment_name)  # pointer last, inside the temp
            connect().call("set_terminated", uri, run_id, "FINISHED", env=_short_retries())
            for tmp, final in handle._moves:
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, final)
            integrity.publish_dir(handle.out_dir, pointer_dir)
    except BaseException as err:
        shutil.rmtree(handle.out_dir, ignore_errors=True)
        killed = isinstance(err, (StageKilled, KeyboardInterrupt))
        try:
            why = f"{type(err).__name__}: {err}"[:4000]
            connect().call("log_batch", uri, run_id, [], {TAG_FAILURE: why}, env=_NO_RETRIES)
            connect().call("set_terminated", uri, run_id, "KILLED" if killed else "FAILED", env=_NO_RETRIES)
        except Exception as end_err:  # noqa: BLE001 - keep the original error, which is the informative one
            print(f"warning: could not close MLflow run {run_id} ({end_err}); the next {run_name} run "
                  "marks it KILLED")
        if isinstance(err, StageKilled):
            print(f"{run_name} {err}: MLflow run {run_id} marked KILLED, no output published", flush=True)
            raise SystemExit(128 + err.signum) from None
        raise


def train_record(experiment: str) -> tuple[str, str | None]:
    """(run id, checkpoint sha256) recorded by the train run whose pointer sits beside ``model.pt``."""
    where = stage_dir(experiment, "train")
    pointer = read_pointer(where / POINTER_NAME, "train")
    if pointer is None:
        raise MissingInput(f"{where / POINTER_NAME} not found: train@{experiment} has not finished; "
                           f"run `dvc repro train@{experiment}`")
    try:
        tags = connect().call("run_tags", pointer.tracking_uri, pointer.run_id, env=_short_retries())
    except Exception as err:  # noqa: BLE001
        raise TrackingUnavailable(
            f"cannot read train run {pointer.run_id} of {where} from {pointer.tracking_uri} "
            f"({_why(err)[:200]})"
        ) from err
    return pointer.run_id, tags.get(TAG_CHECKPOINT)


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


@dataclass(frozen=True)
class RunPointer:
    """The MLflow run a stage wrote (``mlflow_run.json``)."""

    stage: str
    run_id: str
    tracking_uri: str
    experiment_name: str
    run_name: str
    experiment_id: str | None = None

    @property
    def url(self) -> str | None:
        """A link into the MLflow UI when the tracking server is reachable over http(s)."""
        return self.ui_url(None)

    def ui_url(self, local_ui: str | None, experiment_id: str | None = None) -> str | None:
        """The run's page in the MLflow UI: the server itself for an http(s) tracking URI, else
        ``local_ui`` (where ``mlflow ui --backend-store-uri <tracking uri>`` serves a local store)."""
        if self.tracking_uri.startswith(("http://", "https://")):
            base = self.tracking_uri
        elif local_ui:
            base = local_ui
        else:
            return None
        base, exp_id = base.rstrip("/"), experiment_id or self.experiment_id
        if exp_id:
            return f"{base}/#/experiments/{exp_id}/runs/{self.run_id}"
        return f"{base}/#/runs/{self.run_id}"  # the UI resolves the experiment itself


POINTER_KEYS = ("run_id", "tracking_uri", "experiment_name", "run_name")


def read_pointer(path: Path, stage: str) -> RunPointer | None:
    """The run pointer file ``path`` of ``stage`` (the one reader: stages, lineage, the report), or None
    when the stage has not run; a broken file is a ValueError that says to re-run the stage."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        obj = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); re-run the stage that writes it") from err
    missing = [k for k in POINTER_KEYS if k not in obj]
    if missing:
        raise ValueError(
            f"{path} lacks {', '.join(missing)} (see docs/architecture.md); re-run the stage that writes it"
        )
    exp_id = obj.get("experiment_id")
    return RunPointer(stage=stage, run_id=str(obj["run_id"]), tracking_uri=str(obj["tracking_uri"]),
                      experiment_name=str(obj["experiment_name"]), run_name=str(obj["run_name"]),
                      experiment_id=None if exp_id is None else str(exp_id))
