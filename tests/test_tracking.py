"""MLflow tracking: store location, one run per stage with its tags, the pointer file, unreachable stores."""

from __future__ import annotations

import json
import multiprocessing as mp
import socket
import subprocess
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pixelzoo import tracking

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
