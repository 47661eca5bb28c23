"""The stage's MLflow client, in a side process that loads while the stage imports torch.

Importing mlflow and opening its store takes ~1.8 s of one core, torch ~1.4 s of another: a model
stage starts this process first (:func:`start`), so on a machine with two cores MLflow is ready about
when torch is, instead of after it (benchmarks/startup.py). The stage keeps every decision (what to log,
retries, deadlines, what a failure means: :mod:`pixelzoo.pipeline.tracking.client`); this process only
turns a few plain requests into MlflowClient calls, one at a time and in order, so nothing
MLflow-specific crosses the pipe.

A profile run (dozens of short stages, :mod:`pixelzoo.pipeline.profiles.profile`) shares one tracking process
instead (:func:`shared`): it listens on a Unix socket named by ``PIXELZOO_TRACKING_SOCKET``, so its stages pay
neither MLflow's import nor its CPU. It lives exactly as long as the profile's ``dvc repro``.

Protocol: one JSON object per line. Request ``{"op", "args", "env"}``; reply ``{"ok": result}`` or
``{"error": "Type: message"}``. ``env`` is the stage's ``MLFLOW_*`` environment as it is at the call,
plus that call's own settings (e.g. no HTTP retries): MLflow sees what it would see in the stage.
The process ignores SIGINT/SIGTERM/SIGHUP (a Ctrl-C or a signal to the process group must not take it
away while the stage still closes its run). The stage ends it when it exits (:meth:`Recorder.close`);
if the stage dies, it exits when it sees the pipe closed: a run the stage left open stays RUNNING, and
the next run of that stage marks it KILLED (tracking.mark_orphans).
"""

from __future__ import annotations

import atexit
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from pixelzoo import model_registry
from pixelzoo.pipeline.tracking.names import ENV_SOCKET

# Store URIs served by MLflow's SQLAlchemy store: its module (~0.6 s) is imported before the first request.
_DB_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
_ENV_PREFIX = "MLFLOW_"


def _mlflow_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(_ENV_PREFIX)}


class StoreError(RuntimeError):
    """An MLflow call failed in the tracking process (or the process is gone); the message names the
    original exception type."""


def _spawn(uri: str, *args: str, env: Mapping[str, str] | None = None) -> subprocess.Popen:
    """``python -m pixelzoo.pipeline.tracking.server uri *args`` with this tree's pixelzoo (the one the stage
    imports)."""
    src = str(Path(__file__).resolve().parents[3])
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    return subprocess.Popen([sys.executable, "-m", "pixelzoo.pipeline.tracking.server", uri, *args],
                            env=env, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE)


class Recorder:
    """The stage-side end: :meth:`call` sends one request and waits for its reply. Either the stage's own
    tracking process (``proc``, over its pipes) or a profile run's shared one (over a socket)."""

    def __init__(self, reader: IO[str], writer: IO[str], proc: subprocess.Popen | None = None,
                 sock: socket.socket | None = None) -> None:
        self.owner = os.getpid()  # a forked child must start its own: replies would go to either
        self.reader, self.writer, self.proc, self.sock = reader, writer, proc, sock
        self.broken = False

    @classmethod
    def own(cls, uri: str) -> Recorder:
        proc = _spawn(uri)
        assert proc.stdout is not None and proc.stdin is not None
        return cls(proc.stdout, proc.stdin, proc=proc)

    @classmethod
    def attach(cls, path: str) -> Recorder:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
        return cls(sock.makefile("r", encoding="utf-8"), sock.makefile("w", encoding="utf-8"), sock=sock)

    def alive(self) -> bool:
        return not self.broken and (self.proc is None or self.proc.poll() is None)

    def call(self, op: str, *args: Any, env: Mapping[str, str] | None = None) -> Any:
        """``op(*args)`` in the tracking process; raises :class:`StoreError` if it failed there."""
        request = {"op": op, "args": args, "env": {**_mlflow_env(), **(env or {})}}
        try:
            self.writer.write(json.dumps(request) + "\n")
            self.writer.flush()
            line = self.reader.readline()
        except OSError:
            line = ""
        if not line:
            self.broken = True
            code = f"code {self.proc.wait()}" if self.proc else "the shared one"
            raise StoreError(f"the tracking process exited ({code}); its error is printed above")
        reply = json.loads(line)
        if "error" in reply:
            raise StoreError(reply["error"])
        return reply["ok"]

    def close(self) -> None:
        """Let go of the tracking process. Every request sent has had its reply (the store has it all), so
        the stage's own one is killed: that also ends one still loading MLflow (a stage that stopped at a
        params error)."""
        if self.owner != os.getpid():
            return
        for f in (self.writer, self.reader):
            try:
                f.close()
            except OSError:
                pass
        if self.sock is not None:
            self.sock.close()
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()


_RECORDER: Recorder | None = None


def start(uri: str) -> Recorder:
    """This process's tracking process: the profile run's shared one if there is one, else its own
    (started on first use, restarted if it died)."""
    global _RECORDER
    if _RECORDER is None or _RECORDER.owner != os.getpid() or not _RECORDER.alive():
        if _RECORDER is None:
            atexit.register(lambda: _RECORDER and _RECORDER.close())
        else:
            _RECORDER.close()  # a dead one's pipes (a forked child's parent keeps its own)
        _RECORDER = None
        if os.environ.get(ENV_SOCKET):
            try:
                _RECORDER = Recorder.attach(os.environ[ENV_SOCKET])
            except OSError as err:
                print(f"warning: the shared tracking process at {os.environ[ENV_SOCKET]} does not answer "
                      f"({err}); this stage starts its own", file=sys.stderr, flush=True)
        _RECORDER = _RECORDER or Recorder.own(uri)
    return _RECORDER


@contextmanager
def shared(uri: str, env: Mapping[str, str]) -> Iterator[dict[str, str]]:
    """A tracking process for every stage run with the environment this yields (``env`` plus
    ``PIXELZOO_TRACKING_SOCKET``); it ends with the block. ``uri``: the store the stages will use."""
    with tempfile.TemporaryDirectory(prefix="pixelzoo-") as tmp:  # short: socket paths have ~100 bytes
        path = str(Path(tmp) / "tracking.sock")
        proc = _spawn(uri, "--listen", path, env=env)
        try:
            ready = proc.stdout.readline() if proc.stdout else ""
            if ready.strip() != "listening":  # it printed why on stderr; each stage then starts its own
                print("warning: no shared tracking process; every stage starts its own", file=sys.stderr)
                yield dict(env)
            else:
                yield {**env, ENV_SOCKET: path}
        finally:
            if proc.stdin:
                proc.stdin.close()  # its signal to exit
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# ----------------------------------------------------------------------------- the tracking process
_clients: dict[str, Any] = {}
_ONE_AT_A_TIME = threading.Lock()


def _client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    if uri not in _clients:
        _clients[uri] = MlflowClient(tracking_uri=uri)
    return _clients[uri]


def experiment_id(uri: str, name: str) -> str | None:
    exp = _client(uri).get_experiment_by_name(name)
    return None if exp is None else exp.experiment_id


def create_experiment(uri: str, name: str, artifact_location: str | None) -> str:
    from mlflow.exceptions import MlflowException

    try:
        return _client(uri).create_experiment(name, artifact_location=artifact_location)
    except MlflowException:  # created meanwhile by a process on another machine
        found = experiment_id(uri, name)
        if found is None:
            raise
        return found


def start_run(uri: str, experiment: str, run_name: str, tags: dict[str, str], params: list[list[str]],
              inputs: list[list[str]], config_json: str) -> str:
    """A new run with its tags, params (``[key, value]``), dataset inputs (``[split, npz path, name,
    digest]``) and ``config.json``; returns its id."""
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource
    from mlflow.entities import DatasetInput, InputTag, Param

    client = _client(uri)
    rid = client.create_run(experiment, run_name=run_name, tags=tags).info.run_id
    entities = [Param(k, v) for k, v in params]
    for i in range(0, len(entities), 100):  # MLflow's limit per log_batch
        client.log_batch(rid, params=entities[i : i + 100])
    datasets = [DatasetInput(MetaDataset(LocalArtifactDatasetSource(path), name=name, digest=digest)
                             ._to_mlflow_entity(), [InputTag("mlflow.data.context", split)])
                for split, path, name, digest in inputs]
    _log_inputs(client, rid, datasets)
    client.log_artifact(rid, config_json)
    return rid


def _log_inputs(client: Any, run_id: str, inputs: list[Any], attempts: int = 4) -> None:
    """``client.log_inputs``, retried: stages logging the same dataset at the same moment race in the
    server's get-or-create (PostgreSQL: UniqueViolation on ``dataset_pk``, seen in tests/test_team.py);
    once one has created it, the next try finds it."""
    import time

    from mlflow.exceptions import MlflowException

    for attempt in range(attempts):
        try:
            client.log_inputs(run_id, inputs)
            return
        except MlflowException:
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


def running_runs(uri: str, experiment: str, filter_string: str) -> list[list[Any]]:
    """``[run id, tags]`` of the runs the filter finds."""
    runs = _client(uri).search_runs([experiment], filter_string=filter_string, max_results=1000)
    return [[r.info.run_id, r.data.tags] for r in runs]


def log_batch(uri: str, run_id: str, metrics: list[list[Any]], tags: dict[str, str]) -> None:
    """Metrics as ``[key, value, timestamp ms, step]``."""
    from mlflow.entities import Metric, RunTag

    _client(uri).log_batch(run_id, metrics=[Metric(*m) for m in metrics],
                           tags=[RunTag(k, v) for k, v in tags.items()])


def log_artifact(uri: str, run_id: str, path: str, artifact_path: str | None) -> None:
    _client(uri).log_artifact(run_id, path, artifact_path=artifact_path)


def set_terminated(uri: str, run_id: str, status: str) -> None:
    _client(uri).set_terminated(run_id, status)


def run_tags(uri: str, run_id: str) -> dict[str, str]:
    return _client(uri).get_run(run_id).data.tags


OPS: dict[str, Callable[..., Any]] = {f.__name__: f for f in (
    experiment_id, create_experiment, start_run, running_runs, log_batch, log_artifact, set_terminated,
    run_tags,
)}
OPS.update(model_registry.OPS)  # MLflow models, the registry and system metrics (pixelzoo.model_registry)


def _apply(request: Mapping[str, Any]) -> dict[str, Any]:
    """Run one request with the stage's MLflow environment; the reply."""
    saved = _mlflow_env()
    for k in saved:
        del os.environ[k]
    os.environ.update(request["env"])
    try:
        return {"ok": OPS[request["op"]](*request["args"])}
    except Exception as err:  # noqa: BLE001 - every failure goes back to the stage, which decides
        return {"error": f"{type(err).__name__}: {err}"}
    finally:
        for k in request["env"]:
            os.environ.pop(k, None)
        os.environ.update(saved)


def _load(uri: str) -> None:
    """Import MLflow and the store module ``uri`` needs (what the first request would wait for)."""
    from pixelzoo.pipeline.startup import pause_gc, resume_gc

    pause_gc()  # MLflow's ~300,000 objects are created once: never traverse them
    from mlflow.tracking import MlflowClient  # noqa: F401

    if uri.split(":", 1)[0].split("+", 1)[0] in _DB_SCHEMES:
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
    resume_gc()


def serve(requests: IO[str], replies: IO[str]) -> None:
    """Answer requests until the other end closes; one at a time across all connections (each carries
    its stage's MLflow environment)."""
    for line in requests:
        with _ONE_AT_A_TIME:
            reply = _apply(json.loads(line))
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


def listen(uri: str, path: str, control: IO[str], replies: IO[str]) -> None:
    """The shared tracking process: serve every connection to ``path``, until ``control`` is closed.
    Stages may connect at once: their connections wait in the backlog while MLflow loads."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(64)
    replies.write("listening\n")
    replies.flush()
    _load(uri)

    def connection(conn: socket.socket) -> None:
        with conn, conn.makefile("r", encoding="utf-8") as r, conn.makefile("w", encoding="utf-8") as w:
            try:
                serve(r, w)
            except OSError:  # the stage died mid-request: nothing to answer
                pass

    def accept() -> None:
        while True:
            conn, _ = server.accept()
            threading.Thread(target=connection, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    control.read()  # until the profile run closes it (or dies)
    with _ONE_AT_A_TIME:  # no request half done
        pass


def main() -> None:
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # whatever MLflow prints goes to stderr, never into the replies
    uri, *rest = sys.argv[1:]
    if rest[:1] == ["--listen"]:
        listen(uri, rest[1], sys.stdin, replies)
    else:
        _load(uri)
        serve(sys.stdin, replies)
    sys.stderr.flush()
    os._exit(0)  # every reply has been sent and every store write committed: skip the slow teardown


if __name__ == "__main__":
    main()
