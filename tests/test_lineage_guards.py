"""Lineage that cannot be fooled (issue 17), with real processes, real kills and a real MLflow server.

One tiny digits experiment (derived from ci/params.yaml) in a copy of the project: a train stage killed
after epoch 0, the data re-carved, the stage rerun; then copies of that tree for tampered files, killed
and signalled stages, two trainers at once, a tracking server killed mid-training, and a failing report.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import _GIT_ENV, ROOT
from mlflow.tracking import MlflowClient

from pixelzoo.pipeline.profiles.profile import prepare_workdir, profile_env
from pixelzoo.report.render import Section, to_markdown

pytestmark = pytest.mark.slow
EXP = "pixelcnn-digits"
KILL_STEP = 45  # one epoch of digits is ceil(1257 / 32) = 40 steps: killed early in epoch 1


def tiny_params(**train: object) -> dict:
    """ci/params.yaml narrowed to the digits data and one experiment, 2 epochs (``train`` overrides)."""
    p = yaml.safe_load((ROOT / "ci" / "params.yaml").read_text())
    p["sources"] = {"digits": p["sources"]["digits"]}
    p["datasets"] = {"digits": p["datasets"]["digits"]}
    p["experiments"] = {EXP: {**p["experiments"][EXP], "epochs": 2, **train}}
    p["report"] = {**p["report"], "tables": [], "receptive_field": {"models": []}}
    p.pop("regression", None)
    p["profile"] = {"name": "tiny", "description": "lineage tests", "paper_numbers": False}
    return p


@dataclass
class Tree:
    root: Path
    env: dict[str, str]

    def run(self, *cmd: str, check: bool = True, **env: str) -> subprocess.CompletedProcess:
        proc = subprocess.run(cmd, cwd=self.root, env={**self.env, **env}, capture_output=True, text=True)
        if check and proc.returncode != 0:
            raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def stage(self, name: str, check: bool = True, **env: str) -> subprocess.CompletedProcess:
        return self.run(sys.executable, f"stages/{name}.py", EXP, check=check, **env)

    def dvc(self, *args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess:
        return self.run(str(Path(sys.executable).parent / "dvc"), *args, check=check, **env)

    def lineage(self) -> subprocess.CompletedProcess:
        return self.run(sys.executable, "-m", "pixelzoo.pipeline.lineage", EXP, "--check", check=False)

    def params(self, p: dict) -> None:
        (self.root / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))

    def copy(self, dst: Path) -> Tree:
        shutil.copytree(self.root, dst, symlinks=True)
        return Tree(dst, self.env)

    def client(self) -> MlflowClient:
        return MlflowClient(f"sqlite:///{self.root}/mlflow.db")

    def runs(self, stage: str) -> list:
        c = self.client()
        exp = c.get_experiment_by_name("pixelzoo-ci")
        query = f"tags.`pixelzoo.stage` = '{stage}'"
        return c.search_runs([exp.experiment_id], query, order_by=["start_time"])

    def pointer(self, stage_dir: str) -> dict:
        return json.loads((self.root / "outputs" / EXP / stage_dir / "mlflow_run.json").read_text())


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@dataclass
class Story:
    tree: Tree
    old_meta: dict
    killed_train_runs: list[str]
    rerun: subprocess.CompletedProcess
    seconds: float


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Story:
    """The issue's stale-split case: train killed (SIGKILL) in epoch 1, `datasets.digits.seed` changed,
    `dvc repro evaluate@X`. Later tests copy the finished tree."""
    base = tmp_path_factory.mktemp("lineage")
    params = base / "tiny.yaml"
    params.write_text(yaml.safe_dump(tiny_params()))
    env = {**profile_env(ROOT), **_GIT_ENV}
    env.pop("MLFLOW_TRACKING_URI", None)
    tree = Tree(prepare_workdir(params, base / "repo", ROOT), env)
    killed = tree.dvc("repro", f"train@{EXP}", check=False, PIXELZOO_KILL_AT=f"train.step{KILL_STEP}")
    assert killed.returncode != 0 and (tree.root / "scratch" / EXP / "resume.pt").exists(), killed.stderr
    killed_runs = [r.info.run_id for r in tree.runs("train") if r.info.status == "RUNNING"]
    old_meta = json.loads((tree.root / "data/processed/digits/meta.json").read_text())
    (tree.root / f"data/processed/.digits.tmp-{dead_pid()}").mkdir()  # left by a killed preprocess
    p = tiny_params()
    p["datasets"]["digits"]["seed"] = 1  # a new train/valid/test carving of the same images
    tree.params(p)
    tree.run("git", "commit", "-qam", "digits: another carving")  # as a user would: the code stays clean
    start = time.monotonic()
    rerun = tree.dvc("repro", f"evaluate@{EXP}")
    return Story(tree, old_meta, killed_runs, rerun, time.monotonic() - start)


def test_stale_split_resume_is_discarded_and_the_killed_run_marked(story: Story) -> None:
    tree, out = story.tree, story.rerun.stdout + story.rerun.stderr
    meta = json.loads((tree.root / "data/processed/digits/meta.json").read_text())
    assert meta["sha256"]["train"] != story.old_meta["sha256"]["train"]  # the carving really changed
    assert f"discarding scratch/{EXP}/resume.pt" in out and "train data sha256" in out, out
    assert "resuming" not in out
    history = json.loads((tree.root / "outputs" / EXP / "train" / "history.json").read_text())
    assert [e["epoch"] for e in history["epochs"]] == [0, 1] and history["total_steps"] == 80  # from scratch
    train = tree.client().get_run(tree.pointer("train")["run_id"])
    assert train.data.tags["dataset.sha256.train"] == meta["sha256"]["train"]
    assert train.data.tags["checkpoint.sha256"] == _sha(tree.root / "outputs" / EXP / "train" / "model.pt")

    # The SIGKILLed train run is KILLED now, with the reason, and linked both ways.
    assert len(story.killed_train_runs) == 1
    killed = tree.client().get_run(story.killed_train_runs[0])
    assert killed.info.status == "KILLED"
    assert "ended without closing" in killed.data.tags["pixelzoo.killed_reason"]
    assert killed.data.tags["pixelzoo.superseded_by"] == train.info.run_id
    assert train.data.tags["pixelzoo.orphans_marked_killed"] == killed.info.run_id
    assert not [r for s in ("train", "evaluate") for r in tree.runs(s) if r.info.status == "RUNNING"]
    assert not list((tree.root / "data/processed").glob(".digits.tmp-*"))  # the killed stage's temp folder
    print(f"\n[timing] dvc repro evaluate@{EXP} after the kill (preprocess, train 80 steps, evaluate): "
          f"{story.seconds:.1f} s")


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_killed_sample_then_tampered_checkpoint_and_data(story: Story, tmp_path: Path) -> None:
    """A killed sample stage leaves nothing that looks complete; its rerun cleans up and marks the orphan.
    A checkpoint or data file changed afterwards is named, with both hashes, by the stages and lineage."""
    tree = story.tree.copy(tmp_path / "s")
    killed = tree.stage("sample", check=False, PIXELZOO_KILL_AT="sample")  # SIGKILL after the first PNG
    assert killed.returncode == -signal.SIGKILL
    samples = tree.root / "outputs" / EXP / "samples"
    temps = list(samples.parent.glob(".samples.tmp-*"))
    assert not samples.exists() and len(temps) == 1 and (temps[0] / "grid.png").exists()
    (orphan,) = [r for r in tree.runs("sample") if r.info.status == "RUNNING"]

    tree.stage("sample")
    assert not temps[0].exists()
    expected = {"grid.png", "completions.png", "samples.npz", "mlflow_run.json"}
    assert {p.name for p in samples.iterdir()} == expected
    run = tree.client().get_run(tree.pointer("samples")["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["pixelzoo.orphans_marked_killed"] == orphan.info.run_id
    assert tree.client().get_run(orphan.info.run_id).info.status == "KILLED"
    train = tree.client().get_run(tree.pointer("train")["run_id"])
    assert run.data.tags["train.run_id"] == train.info.run_id
    assert run.data.tags["checkpoint.sha256"] == train.data.tags["checkpoint.sha256"]
    assert run.data.tags["dataset.sha256.test"] == json.loads(
        (tree.root / "data/processed/digits/meta.json").read_text())["sha256"]["test"]

    # Tampering: first the control (nothing changed yet, every stage has run), then one bit and 100 images.
    clean = tree.lineage()
    assert clean.returncode == 0, clean.stdout
    assert "TAMPERED" not in clean.stdout and "STALE" not in clean.stdout
    model = tree.root / "outputs" / EXP / "train" / "model.pt"
    recorded = _sha(model)
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 1  # one bit
    model.write_bytes(bytes(data))
    flipped = _sha(model)
    evaluate = tree.stage("evaluate", check=False)
    assert evaluate.returncode == 1 and "Traceback" not in evaluate.stderr
    assert f"model.pt: sha256 {flipped} differs from {recorded}" in evaluate.stderr, evaluate.stderr

    train_npz = tree.root / "data/processed/digits/train.npz"
    with np.load(train_npz) as z:
        x, y = z["x"][:100], z["y"][:100]
    np.savez(train_npz, x=x, y=y)  # cut to 100 images, meta.json untouched
    check = tree.lineage()
    assert check.returncode == 1
    assert f"TAMPERED checkpoint outputs/{EXP}/train/model.pt: sha256 {flipped}" in check.stdout
    assert f"recorded {recorded}" in check.stdout
    meta = json.loads((tree.root / "data/processed/digits/meta.json").read_text())
    assert "TAMPERED data data/processed/digits/train.npz: arrays sha256 " in check.stdout
    assert f"records {meta['sha256']['train']}" in check.stdout
    assert f"STALE    train: read train data sha256 {meta['sha256']['train']}, on disk now" in check.stdout


def _wait_line(proc: subprocess.Popen, needle: str, timeout: float) -> float:
    """Read ``proc``'s stdout until a line holds ``needle``; return the time it took."""
    start = time.monotonic()
    for line in proc.stdout:
        if needle in line:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            break
    proc.kill()
    raise AssertionError(f"{needle!r} not seen within {timeout} s (exit {proc.poll()})")


def _popen_stage(tree: Tree, name: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, f"stages/{name}.py", EXP], cwd=tree.root, text=True,
                            env={**tree.env, "PYTHONUNBUFFERED": "1", **env},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_one_trainer_per_scratch_folder_and_sigterm_marks_killed(story: Story, tmp_path: Path) -> None:
    tree = story.tree.copy(tmp_path / "l")
    p = tiny_params(epochs=500)
    p["datasets"]["digits"]["seed"] = 1
    tree.params(p)
    model = tree.root / "outputs" / EXP / "train" / "model.pt"
    before = _sha(model)
    first = _popen_stage(tree, "train")
    try:
        _wait_line(first, "epoch 0:", 120)
        second = tree.stage("train", check=False)
        assert second.returncode == 1 and "Traceback" not in second.stderr
        assert f"train@{EXP} is already running (pid {first.pid} on" in second.stderr, second.stderr
        first.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        rest = first.communicate(timeout=60)[0]
        took = time.monotonic() - sent
    finally:
        first.kill()
    assert first.returncode == 128 + signal.SIGTERM and "marked KILLED" in rest, rest
    (run,) = [r for r in tree.runs("train") if r.data.tags.get("pixelzoo.failure")]
    assert run.info.status == "KILLED"
    assert "SIGTERM" in run.data.tags["pixelzoo.failure"]
    assert _sha(model) == before and not list(model.parent.parent.glob(".train.tmp-*"))  # nothing published
    assert (tree.root / "scratch" / EXP / "resume.pt").exists()  # the next run resumes from here
    print(f"\n[timing] SIGTERM -> train stage exited, run KILLED: {took:.1f} s")


# ----------------------------------------------------------------------------- a real MLflow server
def _serve(db: str, port: int, artifacts: str) -> None:
    os.environ.update({"_MLFLOW_SERVER_FILE_STORE": db, "_MLFLOW_SERVER_REGISTRY_STORE": db,
                       "_MLFLOW_SERVER_ARTIFACT_ROOT": artifacts, "_MLFLOW_SERVER_SERVE_ARTIFACTS": "false"})
    import uvicorn
    from mlflow.server.fastapi_app import app

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def _start_server(db: str, port: int, artifacts: str) -> mp.Process:
    """MLflow's tracking server app under uvicorn, in its own process (forked: the imports are done)."""
    proc = mp.get_context("fork").Process(target=_serve, args=(db, port, artifacts), daemon=True)
    proc.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("MLflow server did not start")


def test_tracking_server_killed_mid_training(story: Story, tmp_path: Path) -> None:
    import mlflow.server.fastapi_app  # noqa: F401 - imported once here, so the forked servers start fast

    tree = story.tree.copy(tmp_path / "m")
    p = tiny_params(epochs=4, log_every_steps=1)
    p["datasets"]["digits"]["seed"] = 1
    tree.params(p)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    db, art = f"sqlite:///{tmp_path}/server.db", (tmp_path / "artifacts").as_uri()
    server = _start_server(db, port, art)
    uri = f"http://127.0.0.1:{port}"
    trainer = _popen_stage(tree, "train", MLFLOW_TRACKING_URI=uri)
    try:
        _wait_line(trainer, "epoch 0:", 180)
        server.kill()  # SIGKILL: the server is gone mid-run
        server.join()
        killed_at = time.monotonic()
        _wait_line(trainer, "not answering", 30)
        down_epoch = _wait_line(trainer, "epoch 1:", 60)  # a whole epoch, 40 metric calls, while it is down
        server = _start_server(db, port, art)
        back = time.monotonic()
        rest = trainer.communicate(timeout=120)[0]
        finished = time.monotonic()
    finally:
        trainer.kill()
    try:
        assert trainer.returncode == 0, rest
        assert "is back after" in rest
        client = MlflowClient(uri)
        run = client.get_run(tree.pointer("train")["run_id"])
        assert run.info.status == "FINISHED"
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "train_step_nats"))
        assert steps == list(range(1, 161))  # every step's metric, the ones logged while it was down too
        valid = client.get_metric_history(run.info.run_id, "valid_bits_per_dim")
        assert sorted(m.step for m in valid) == [40, 80, 120, 160]
    finally:
        server.kill()
    print(f"\n[timing] server down {back - killed_at:.1f} s; an epoch while down {down_epoch:.1f} s; "
          f"server back -> stage finished {finished - back:.1f} s")


def test_failed_report_keeps_the_last_good_pages(story: Story, tmp_path: Path) -> None:
    tree = story.tree.copy(tmp_path / "r")
    tree.run(sys.executable, "stages/report.py")  # the last good report
    readme = tree.root / "reports" / "README.md"
    good = readme.read_text()
    p = tiny_params()
    p["datasets"]["digits"]["seed"] = 1
    p["report"]["tablez"] = []  # a typo
    tree.params(p)
    failed = tree.dvc("repro", "-s", "report", check=False)
    assert failed.returncode != 0 and "report.tablez" in failed.stdout + failed.stderr
    assert readme.read_text() == good  # persist: DVC did not delete it, the stage stopped before work

    p["report"].pop("tablez")
    tree.params(p)
    killed = tree.run(sys.executable, "stages/report.py", check=False, PIXELZOO_KILL_AT="report")
    assert killed.returncode == -signal.SIGKILL
    assert readme.read_text() == good  # killed while rendering: the new pages were still in the temp folder
    assert list(tree.root.glob(".reports.tmp-*"))  # (the next run removes it: integrity.clean_stale_temps)


def test_markdown_shows_html_instead_of_running_it() -> None:
    md = to_markdown("t <b>", ["intro <script>alert(1)</script>"],
                     [Section("S <i>", "s", ["para <img src=x onerror=alert(1)> & more"])])
    assert "<script>" not in md and "<img" not in md and "<b>" not in md and "<i>" not in md
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in md
    assert "&lt;img src=x onerror=alert(1)&gt; &amp; more" in md
