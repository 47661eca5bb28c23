"""A team set-up on one machine: the tracking server of scripts/tracking-server.sh and a shared DVC remote.

Clone A (a tiny digits cut of the CI profile) runs its stages against the server (PostgreSQL +
artifacts proxied into a shared folder), two train stages at once, then pushes its DVC outputs to a
local-folder remote. Clone B (``git clone`` of A) pulls them: ``dvc repro`` has nothing to redo, the
report renders, and ``pixelzoo-lineage`` answers from the server. The train stages logged MLflow models
into the server's registry, which ``mlflow.pyfunc`` loads as ``models:/<exp>@best``. Clone C gets one
released model with ``dvc artifacts get`` (A's git URL, its folder remote) and evaluates it.
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

import numpy as np
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


RELEASED = EXPERIMENTS[0]


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
        env = {**profile_env(ROOT), **GIT_ENV, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(a / "src"),
               "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "1"}  # system metrics: train stages last seconds
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


def _pointer(root: Path, experiment: str, stage: str) -> dict:
    folder = "samples" if stage == "sample" else stage
    return json.loads((root / "outputs" / experiment / folder / "mlflow_run.json").read_text())


def test_registered_models_predict_evaluate_nll_exactly(team: Team) -> None:
    """Train logged each checkpoint as an MLflow model through its tracking process, registered as a version
    of the experiment's registered model; evaluate moved `best` to it. pyfunc gives evaluate's numbers."""
    import mlflow

    client = MlflowClient(team.uri)
    mlflow.set_tracking_uri(team.uri)
    x = np.load(team.b / "data" / "processed" / "digits" / "test.npz")["x"].astype(np.int64)
    for e in EXPERIMENTS:
        train_run = _pointer(team.b, e, "train")["run_id"]
        metrics = json.loads((team.b / "metrics" / f"{e}.json").read_text())
        best = client.get_model_version_by_alias(e, "best")
        assert best.run_id == train_run and len(client.search_model_versions(f"name = '{e}'")) == 1
        assert float(best.tags["pixelzoo.test_bits_per_dim"]) == metrics["test_bits_per_dim"]
        info = mlflow.models.get_model_info(f"models:/{e}@best")
        logged = client.get_logged_model(info.model_id)
        assert logged.source_run_id == train_run and logged.name == "model" and info.signature is not None
        nats = mlflow.pyfunc.load_model(f"models:/{e}@best").predict(x)
        evaluated = np.load(team.b / "outputs" / e / "evaluate" / "bits_map.npz")["image_nats"]
        assert np.array_equal(nats, evaluated)
        assert nats.mean() == pytest.approx(metrics["test_nats_per_image"], rel=1e-12)
        system = client.get_run(train_run).data.metrics  # MLflow's system metrics monitor, on train runs
        assert system["system/cpu_utilization_percentage"] >= 0
        assert system["system/system_memory_usage_megabytes"] > 0


def test_released_model_from_git_url_reproduces_the_committed_metric(team: Team) -> None:
    """Clone C: only the code from git; the model from `dvc artifacts get` (A's git URL, its default remote:
    the shared folder), the data from the remote; evaluate writes the committed metrics file again, bit for
    bit. Its MLflow runs go to an experiment of their own (the first test counts A's runs)."""
    c = team.a.parent / "c"
    # Releasing a version of an artifact is a git tag in GTO's format (what `dvc artifacts get` looks up)
    sh(team.a, team.env, "git", "tag", "-a", f"{RELEASED}@v1.0.0", "-m", f"Release {RELEASED} v1.0.0")
    sh(team.a.parent, team.env, "git", "clone", "-q", str(team.a), str(c))
    env = {**team.env, "PYTHONPATH": str(c / "src")}
    listed = sh(c, env, team.dvc, "artifacts", "get", f"file://{team.a}", RELEASED, "--rev", "v1.0.0",
                "-o", f"outputs/{RELEASED}/train")
    got = c / "outputs" / RELEASED / "train"
    trained = team.a / "outputs" / RELEASED / "train" / "model.pt"
    assert (got / "model.pt").read_bytes() == trained.read_bytes()
    assert _pointer(c, RELEASED, "train") == _pointer(team.a, RELEASED, "train"), listed
    sh(c, env, team.dvc, "pull", "data/processed/digits")
    params = yaml.safe_load((c / "params.yaml").read_text())
    params["tracking"]["experiment_name"] = MLFLOW_EXPERIMENT + "-release"
    (c / "params.yaml").write_text(yaml.safe_dump(params))
    committed = sh(c, env, "git", "show", f"HEAD:metrics/{RELEASED}.json")
    (c / "metrics" / f"{RELEASED}.json").unlink()
    sh(c, env, sys.executable, "stages/evaluate.py", RELEASED)
    assert (c / "metrics" / f"{RELEASED}.json").read_text() == committed
