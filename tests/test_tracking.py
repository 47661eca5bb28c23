"""MLflow tracking: store location, one run per stage with its tags, the pointer file, unreachable stores,
and the stage's tracking process (pixelzoo.pipeline.tracking.server)."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pixelzoo.pipeline.tracking import client as tracking
from pixelzoo.pipeline.tracking import server as recorder

META = {"name": "toy", "sha256": {"train": "a" * 64, "test": "b" * 64}, "raw_sha256": {"f": "c" * 64}}
DATA = {"train": "a" * 64, "test": "b" * 64}  # as a stage measures them on the arrays it read
CFG = {"model": "pixelcnn", "dataset": "toy", "model_args": {"layers": 2}, "optimizer": {"lr": 0.001}}


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A tiny git repo as the DVC root, the cwd of the 'stage'."""
    root = tmp_path / "repo"
    root.mkdir()
    env = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@x",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@x",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    (root / "code.py").write_text("x = 1\n")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run(["git", "commit", "-qm", "c"], cwd=root, check=True)
    monkeypatch.chdir(root)
    monkeypatch.setenv("DVC_ROOT", str(root))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    monkeypatch.delenv(tracking.ENV_SOURCE_COMMIT, raising=False)
    return root


def test_default_store_is_absolute_sqlite_at_the_dvc_root(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert tracking.tracking_uri() == f"sqlite:///{repo}/mlflow.db"
    (repo / "sub").mkdir()
    monkeypatch.chdir(repo / "sub")  # e.g. a stage with wdir: the store stays at the root
    assert tracking.tracking_uri() == f"sqlite:///{repo}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert tracking.tracking_uri() == "http://mlflow.example:5000"


def _init(_: int) -> str:
    return tracking.init_store("concurrent")


def test_init_store_is_idempotent_and_safe_from_several_processes(repo: Path) -> None:
    with mp.get_context("fork").Pool(3) as pool:
        ids = pool.map(_init, range(3))
    assert len(set(ids)) == 1
    assert tracking.init_store("concurrent") == ids[0]
    exp = MlflowClient(tracking.tracking_uri()).get_experiment(ids[0])
    assert exp.artifact_location == (repo / "mlruns").as_uri()


def test_stage_run_tags_params_inputs_and_pointer(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DVC_EXP_NAME", "lucky-lark")
    out = repo / "outputs" / "toy" / "train"
    with tracking.stage_run("toy", "train", CFG, META, repo / "data", DATA, out, "pz") as run:
        run.log_metrics({"loss": 1.5}, step=3)
    pointer = json.loads((out / "mlflow_run.json").read_text())
    assert pointer == {
        "run_id": run.run_id,
        "tracking_uri": f"sqlite:///{repo}/mlflow.db",
        "experiment_name": "pz",
        "run_name": "toy:train",
    }
    client = MlflowClient(pointer["tracking_uri"])
    r = client.get_run(run.run_id)
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    tags = r.data.tags
    assert tags["pixelzoo.experiment"] == "toy" and tags["pixelzoo.stage"] == "train"
    assert tags["git.commit"] == head and tags["git.dirty"] == "false"
    assert tags["dvc.exp_name"] == "lucky-lark"
    assert tags["dataset.sha256.train"] == "a" * 64 and tags["dataset.sha256"] == tracking.dataset_digest(
        META
    )
    assert tags["mlflow.runName"] == "toy:train" and r.info.status == "FINISHED"
    assert r.data.params == {
        "model": "pixelcnn",
        "dataset": "toy",
        "model_args.layers": "2",
        "optimizer.lr": "0.001",
    }
    assert client.get_metric_history(run.run_id, "loss")[0].step == 3
    digests = {i.dataset.name: i.dataset.digest for i in r.inputs.dataset_inputs}
    assert digests == {"toy/train": "a" * 32, "toy/test": "b" * 32}
    assert [a.path for a in client.list_artifacts(run.run_id)] == ["config.json"]


def test_dirty_tree_and_failed_stage(repo: Path) -> None:
    (repo / "code.py").write_text("x = 2\n")
    out = repo / "outputs" / "toy" / "evaluate"
    with pytest.raises(RuntimeError, match="boom"):
        with tracking.stage_run("toy", "evaluate", CFG, META, repo / "data", {}, out, "pz") as run:
            raise RuntimeError("boom")
    assert not (out / "mlflow_run.json").exists()  # no pointer to a failed run
    r = MlflowClient(tracking.tracking_uri()).get_run(run.run_id)
    assert r.info.status == "FAILED" and r.data.tags["git.dirty"] == "true"


def test_unreachable_server_fails_before_any_work(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    started = False
    with pytest.raises(tracking.TrackingUnavailable) as err:
        with tracking.stage_run("toy", "train", CFG, META, repo / "data", {}, repo / "o", "pz"):
            started = True
    assert not started
    assert uri in str(err.value) and "unset MLFLOW_TRACKING_URI" in str(err.value)


def test_params_yaml_edits_do_not_make_a_run_dirty(repo: Path) -> None:
    """`dvc exp run -S` rewrites params.yaml; params are recorded as resolved, so the code is still clean."""
    (repo / "params.yaml").write_text("a: 1\n")
    subprocess.run(["git", "add", "params.yaml"], check=True)
    subprocess.run(["git", "commit", "-qm", "params"], check=True)
    (repo / "params.yaml").write_text("a: 2\n")
    assert tracking.git_state()[1] is False
    (repo / "code.py").write_text("x = 3\n")
    assert tracking.git_state()[1] is True


def test_profile_copy_records_the_source_commit(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A profile copy's own commit exists nowhere else: the source's commit and dirty flag are tagged."""
    source = "f" * 40
    monkeypatch.setenv(tracking.ENV_SOURCE_COMMIT, source)
    monkeypatch.setenv(tracking.ENV_SOURCE_DIRTY, "true")
    out = repo / "outputs" / "toy" / "train"
    with tracking.stage_run("toy", "train", CFG, META, repo / "data", {}, out, "pz") as run:
        pass
    tags = MlflowClient(tracking.tracking_uri()).get_run(run.run_id).data.tags
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert (tags["git.commit"], tags["git.dirty"]) == (source, "true")
    assert tags["pixelzoo.profile_copy_commit"] == head


# ----------------------------------------------------------------------------- the tracking process
STAGE = """
import sys, time
from pathlib import Path
from pixelzoo.pipeline.tracking import client as tracking
with tracking.stage_run("toy", "train", {cfg!r}, {meta!r}, Path("data"), {{}}, Path("out"), "pz") as run:
    run.log_metrics({{"loss": 0.5}})
    store = tracking.connect()
    print(run.run_id, store.proc.pid if store.proc else "shared", "mlflow" in sys.modules, flush=True)
    if sys.argv[1:] == ["wait"]:
        time.sleep(120)
"""


def _stage(repo: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """A stage-like process in its own process group (as DVC's shell gives one), printing its run id, its
    own tracking process's pid (or "shared") and whether it imported mlflow itself."""
    env = {**(env or os.environ), "PYTHONPATH": str(Path(tracking.__file__).parents[3])}
    cmd = [sys.executable, "-c", STAGE.format(cfg=CFG, meta=META), *args]
    return subprocess.Popen(cmd, cwd=repo, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)


def _gone(pid: int, within: float = 20.0) -> bool:
    """Whether process ``pid`` has exited (a zombie nobody reaps counts as exited) within ``within`` s."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        except FileNotFoundError:
            return True
        time.sleep(0.1)
    return False


def test_the_stage_process_never_imports_mlflow(repo: Path) -> None:
    proc = _stage(repo)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    run_id, pid, imported = out.split()
    assert imported == "False"  # MLflow loaded in the tracking process only
    assert _gone(int(pid))  # and that process ended with the stage
    client = MlflowClient(tracking.tracking_uri())
    assert client.get_run(run_id).info.status == "FINISHED"
    assert client.get_metric_history(run_id, "loss")[0].value == 0.5


def test_sigterm_to_the_process_group_still_closes_the_run_killed(repo: Path) -> None:
    """The tracking process ignores the signal (a Ctrl-C or `kill -- -PGID` reaches both processes) and
    records the stage's own reaction to it: the run KILLED, with the reason."""
    proc = _stage(repo, "wait")
    run_id, pid, _ = proc.stdout.readline().split()
    os.killpg(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM and "marked KILLED" in out, err
    run = MlflowClient(tracking.tracking_uri()).get_run(run_id)
    assert run.info.status == "KILLED" and "SIGTERM" in run.data.tags[tracking.TAG_FAILURE]
    assert _gone(int(pid))


def test_a_sigkilled_stage_takes_its_tracking_process_along_and_leaves_the_run_to_the_next_one(
    repo: Path,
) -> None:
    proc = _stage(repo, "wait")
    run_id, pid, _ = proc.stdout.readline().split()
    proc.kill()
    proc.communicate(timeout=60)
    assert _gone(int(pid))  # it saw the pipe close: no process is left behind
    # The run stays RUNNING (nobody could close it) until the next run of the stage marks it KILLED.
    assert MlflowClient(tracking.tracking_uri()).get_run(run_id).info.status == "RUNNING"
    with tracking.stage_run("toy", "train", CFG, META, repo / "data", {}, repo / "out", "pz") as run:
        pass
    client = MlflowClient(tracking.tracking_uri())
    assert client.get_run(run_id).info.status == "KILLED"
    assert client.get_run(run.run_id).data.tags[tracking.TAG_ORPHANS] == run_id


def test_errors_come_back_with_their_type_and_a_dead_tracking_process_is_replaced(repo: Path) -> None:
    store = tracking.connect()
    with pytest.raises(recorder.StoreError, match=r"^MlflowException: .*nope"):
        store.call("run_tags", tracking.tracking_uri(), "nope")
    with pytest.raises(recorder.StoreError, match=r"^KeyError: 'no_such_op'"):
        store.call("no_such_op")
    store.proc.kill()
    store.proc.wait()
    with pytest.raises(recorder.StoreError, match=r"the tracking process exited \(code -9\)"):
        store.call("experiment_id", tracking.tracking_uri(), "pz")
    assert tracking.connect() is not store and tracking.connect().alive()
    assert tracking.init_store("pz") == tracking.init_store("pz")


def test_a_profile_run_shares_one_tracking_process_between_its_stages(repo: Path) -> None:
    uri = tracking.tracking_uri()
    with recorder.shared(uri, dict(os.environ)) as env:
        sock = env[recorder.ENV_SOCKET]
        server = [p for p in Path("/proc").glob("[0-9]*") if sock in _cmdline(p)]
        assert len(server) == 1
        killed = _stage(repo, "wait", env=env)
        first_run = killed.stdout.readline().split()[0]
        killed.kill()  # a stage dying mid-run leaves the shared process serving the next ones
        killed.communicate(timeout=60)
        runs = []
        for _ in range(2):
            proc = _stage(repo, env=env)
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            run_id, which, imported = out.splitlines()[-1].split()
            assert (which, imported) == ("shared", "False")
            runs.append(run_id)
    assert _gone(int(server[0].name))  # it ends with the block
    client = MlflowClient(uri)
    assert [client.get_run(r).info.status for r in runs] == ["FINISHED", "FINISHED"]
    assert client.get_run(first_run).info.status == "KILLED"  # marked by the next run, as always
    assert client.get_run(runs[0]).data.tags[tracking.TAG_ORPHANS] == first_run


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_a_stage_whose_shared_tracking_process_is_gone_starts_its_own(repo: Path, tmp_path: Path) -> None:
    proc = _stage(repo, env={**os.environ, recorder.ENV_SOCKET: str(tmp_path / "gone.sock")})
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "does not answer" in err and "starts its own" in err, err
    run_id, which, _ = out.split()
    assert which.isdigit()
    assert MlflowClient(tracking.tracking_uri()).get_run(run_id).info.status == "FINISHED"


def test_a_stage_stopped_by_a_params_error_does_not_wait_for_mlflow_to_load(repo: Path) -> None:
    """At exit the stage kills its own tracking process: one still loading MLflow (~2 s) would otherwise
    hold the stage's exit (and its stderr) until it has loaded."""
    own = recorder.Recorder.own(tracking.tracking_uri())
    own.close()  # at once: it is still importing mlflow
    assert own.proc.returncode == -signal.SIGKILL
