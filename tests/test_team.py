"""A team set-up on one machine: the tracking server of scripts/tracking-server.sh and a shared DVC remote.

Clone A (a tiny digits cut of the CI profile) runs its stages against the server (PostgreSQL +
artifacts proxied into a shared folder), two train stages at once, then pushes its DVC outputs to a
local-folder remote. Clone B (``git clone`` of A) pulls them: ``dvc repro`` has nothing to redo, the
report renders, and ``pixelzoo-lineage`` answers from the server.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from pixelzoo.pipeline.profiles.profile import prepare_workdir, profile_env

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ("pixelcnn-digits", "gated_pixelcnn-digits")
STAGES = ("train", "evaluate", "sample")
MLFLOW_EXPERIMENT = "pixelzoo-team-test"
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@localhost",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@localhost"}


def tiny_params() -> dict:
    """Two digits experiments of ci/params.yaml, a few steps each, small sample grids."""
    ci = yaml.safe_load((ROOT / "ci" / "params.yaml").read_text())
    ci.pop("regression", None)
    ci["sources"] = {"digits": ci["sources"]["digits"]}
    ci["datasets"] = {"digits": {**ci["datasets"]["digits"], "n_train": 256}}
    ci["experiments"] = {e: {**ci["experiments"][e], "epochs": 1, "max_steps": 4} for e in EXPERIMENTS}
    ci["train_defaults"]["log_every_steps"] = 1
    ci["sample"].update(n_grid=4, per_row=2, n_completions=2)
    ci["report"]["receptive_field"]["models"] = ["pixelcnn"]
    ci["tracking"]["experiment_name"] = MLFLOW_EXPERIMENT
    return ci


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(uri: str, server: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"tracking server did not come up:\n{log.read_text()}")
        time.sleep(0.5)


def sh(cwd: Path, env: dict, *cmd: str) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


@dataclass
class Team:
    uri: str
    artifacts: Path
    a: Path
    b: Path
    env: dict
    dvc: str
    b_repro: str  # output of `dvc repro` in the fresh clone


@pytest.fixture(scope="module")
def team() -> Iterator[Team]:
    # PostgreSQL runs as the user `postgres` under root: its folder must not sit in pytest's private tmp.
    base = Path(tempfile.mkdtemp(prefix="pixelzoo-team-"))
    base.chmod(0o755)
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    log = base / "server.log"
    server_env = {**os.environ, "PIXELZOO_SERVER_DIR": str(base / "server"), "MLFLOW_PORT": str(port),
                  "PIXELZOO_ARTIFACTS": str(base / "shared-artifacts"), "MLFLOW_WORKERS": "1",
                  "PYTHON": sys.executable}
    with open(log, "w") as fh:
        server = subprocess.Popen(["bash", str(ROOT / "scripts" / "tracking-server.sh")], env=server_env,
                                  stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        (base / "params.yaml").write_text(yaml.safe_dump(tiny_params()))
        a = prepare_workdir(base / "params.yaml", base / "a", ROOT)
        env = {**profile_env(ROOT), **GIT_ENV, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(a / "src")}
        dvc = str(Path(sys.executable).parent / "dvc")
        sh(a, env, dvc, "repro", "preprocess@digits")  # while the server starts
        wait_healthy(uri, server, log)

        # Two stages at once against the server: the train@ commands of dvc.yaml, then recorded by DVC.
        procs = [subprocess.Popen([sys.executable, "stages/train.py", e], cwd=a, env=env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for e in EXPERIMENTS]
        for p in procs:
            out = p.communicate(timeout=600)[0]
            assert p.returncode == 0, out
        sh(a, env, dvc, "commit", "-f", *(f"train@{e}" for e in EXPERIMENTS))
        sh(a, env, dvc, "repro")  # evaluate, sample, report

        # The shared remote (a folder here; SSH or S3 the same way), committed with the results.
        sh(a, env, dvc, "remote", "add", "-d", "shared", str(base / "dvc-remote"))
        sh(a, env, "git", "add", "-A")
        sh(a, env, "git", "commit", "-qm", "results + shared remote")
        sh(a, env, dvc, "push")

        b = base / "b"
        sh(base, env, "git", "clone", "-q", str(a), str(b))
        env_b = {**env, "PYTHONPATH": str(b / "src")}
        sh(b, env_b, dvc, "pull")
        b_repro = sh(b, env_b, dvc, "repro")
        yield Team(uri, base / "shared-artifacts", a, b, env_b, dvc, b_repro)
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the script stops MLflow and PostgreSQL
        try:
            server.wait(timeout=60)
        finally:
            shutil.rmtree(base, ignore_errors=True)


def test_every_run_tag_metric_and_artifact_reached_the_server(team: Team) -> None:
    client = MlflowClient(team.uri)
    exp = client.get_experiment_by_name(MLFLOW_EXPERIMENT)
    assert exp.artifact_location.startswith("mlflow-artifacts:")  # proxied by the server
    runs = client.search_runs([exp.experiment_id])
    by_key = {(r.data.tags["pixelzoo.experiment"], r.data.tags["pixelzoo.stage"]): r for r in runs}
    assert sorted(by_key) == sorted((e, s) for e in EXPERIMENTS for s in STAGES) and len(runs) == 6
    meta = json.loads((team.b / "data" / "processed" / "digits" / "meta.json").read_text())
    for (experiment, stage), run in by_key.items():
        assert run.info.status == "FINISHED", (experiment, stage)
        tags = run.data.tags
        split = "train" if stage == "train" else "test"  # each stage tags the arrays it read, measured
        assert len(tags["git.commit"]) == 40 and tags[f"dataset.sha256.{split}"] == meta["sha256"][split]
        assert run.data.params["model"] == experiment.split("-")[0]
        pointer = json.loads((team.b / "outputs" / experiment / ("samples" if stage == "sample" else stage)
                              / "mlflow_run.json").read_text())
        assert pointer["run_id"] == run.info.run_id and pointer["tracking_uri"] == team.uri
        names = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert "config.json" in names
        # The artifact went through the server into the shared folder, and comes back through it.
        on_disk = team.artifacts / exp.experiment_id / run.info.run_id / "artifacts" / "config.json"
        assert json.loads(on_disk.read_text())["model"] == run.data.params["model"]
    for e in EXPERIMENTS:
        train, evaluate, sample = (by_key[(e, s)] for s in STAGES)
        steps = client.get_metric_history(train.info.run_id, "train_step_nats")
        assert sorted(m.step for m in steps) == [1, 2, 3, 4]
        assert "best_valid_bits_per_dim" in train.data.metrics
        assert "history.json" in {a.path for a in client.list_artifacts(train.info.run_id)}
        metrics = json.loads((team.b / "metrics" / f"{e}.json").read_text())
        assert evaluate.data.metrics["test_bits_per_dim"] == pytest.approx(metrics["test_bits_per_dim"])
        assert evaluate.data.metrics["n_images"] == metrics["n_images"] == 360
        pngs = {a.path for a in client.list_artifacts(sample.info.run_id, "samples")}
        assert "samples/grid.png" in pngs


def test_fresh_clone_pulls_everything_and_has_nothing_to_redo(team: Team) -> None:
    assert "Running stage" not in team.b_repro and "up to date" in team.b_repro, team.b_repro
    status = sh(team.b, team.env, team.dvc, "status")
    assert "Data and pipelines are up to date" in status, status
    for e in EXPERIMENTS:
        pulled = (team.b / "outputs" / e / "train" / "model.pt").read_bytes()
        assert pulled == (team.a / "outputs" / e / "train" / "model.pt").read_bytes()
    out = team.b / "rendered"
    sh(team.b, team.env, sys.executable, "stages/report.py", "--params", "params.yaml", "--out", str(out))
    html = (out / "index.html").read_text()
    assert all(e in html for e in EXPERIMENTS) and team.uri in html  # run links point at the server


def test_lineage_answers_from_the_server_in_the_fresh_clone(team: Team) -> None:
    proc = subprocess.run([sys.executable, "-m", "pixelzoo.pipeline.lineage", "pixelcnn-digits", "--check"],
                          cwd=team.b, env=team.env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr  # nothing STALE
    assert f"[{team.uri}]" in proc.stdout and "FINISHED" in proc.stdout
    client = MlflowClient(team.uri)
    for stage in STAGES:
        pointer = json.loads((team.b / "outputs" / "pixelcnn-digits" /
                              ("samples" if stage == "sample" else stage) / "mlflow_run.json").read_text())
        assert pointer["run_id"] in proc.stdout
        assert client.get_run(pointer["run_id"]).data.tags["pixelzoo.stage"] == stage
