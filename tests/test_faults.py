"""Faults lose nothing: a diverged loss, corrupt files, kill -9 at the worst moment of every stage kind,
two stages on one sqlite store at once, and hostile strings in params rendered as text in the report."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import ROOT, RepoCopy
from test_config import run_stage
from test_training import config as toy_config
from test_training import make_dataset

from pixelzoo import checkpoint, training
from pixelzoo.data.datasets import load_split
from pixelzoo.errors import CorruptFile, TrainingDiverged
from pixelzoo.pipeline import layout
from pixelzoo.pipeline import settings as config
from pixelzoo.pipeline.profiles.profile import project_files
from pixelzoo.pipeline.tracking import client as tracking

EXP = "pixelcnn-digits"


# ----------------------------------------------------------------------------- corrupt files
def test_truncated_npz_and_stale_meta_name_the_file_and_the_rebuild_command(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data")
    raw = (data / "train.npz").read_bytes()
    (data / "train.npz").write_bytes(raw[: len(raw) // 2])
    rebuild = "`dvc repro -f preprocess@toy`"
    with pytest.raises(CorruptFile, match=rf"train\.npz is truncated or corrupt .*{rebuild}"):
        load_split(data, "train")
    x, y = load_split(data, "valid")
    with open(data / "valid.npz", "wb") as f:  # same shapes, one pixel changed: meta.json's sha256 is stale
        np.savez(f, x=np.where(np.arange(x.size).reshape(x.shape) == 0, (x + 1) % 4, x).astype(np.uint8), y=y)
    with pytest.raises(CorruptFile, match=r"valid\.npz: its arrays no longer match the sha256 recorded in"):
        load_split(data, "valid")


def test_corrupt_checkpoint_names_the_file_and_foreign_pickles_are_refused(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data")
    out = tmp_path / "outputs" / "toy" / "train"
    training.train(toy_config(epochs=1, max_steps=2), data, out, tmp_path / "scratch")
    good = (out / "model.pt").read_bytes()
    (out / "model.pt").write_bytes(good[: len(good) // 3])
    with pytest.raises(CorruptFile, match=r"model\.pt is corrupt or truncated .*`dvc repro -f train@toy`"):
        checkpoint.load_trained(out / "model.pt")
    # weights_only=True: a checkpoint that would run code when unpickled is refused, not executed
    torch.save({"config": Path("x"), "state_dict": {}}, out / "model.pt")
    with pytest.raises(CorruptFile, match="UnpicklingError"):
        checkpoint.load_trained(out / "model.pt")


# ----------------------------------------------------------------------------- pipeline faults
def tiny_params() -> dict:
    """One CI-profile experiment on digits, a few steps, a resumable checkpoint after every step."""
    p = yaml.safe_load((ROOT / "ci" / "params.yaml").read_text())
    p["sources"] = {"digits": p["sources"]["digits"]}
    p["datasets"] = {"digits": p["datasets"]["digits"]}
    p["experiments"] = {EXP: {**p["experiments"][EXP], "epochs": 1, "max_steps": 6}}
    p["train_defaults"]["checkpoint_minutes"] = 0
    p["sample"].update(n_grid=4, per_row=2, n_completions=2)
    p["report"]["receptive_field"]["models"] = []
    return p


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> RepoCopy:
    dst = tmp_path_factory.mktemp("faults") / "repo"
    for rel in project_files(ROOT):
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dst / rel)
    (dst / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    copy = RepoCopy(dst)
    copy.run("git", "init", "-q")
    copy.run("git", "add", "-A")
    copy.run("git", "commit", "-q", "-m", "faults copy")
    return copy


def _dvc(repo: RepoCopy, *args: str, kill_at: str | None = None) -> subprocess.CompletedProcess:
    dvc = Path(sys.executable).parent / "dvc"
    env = {**repo.env, **({"PIXELZOO_KILL_AT": kill_at} if kill_at else {})}
    return subprocess.run([str(dvc) if dvc.exists() else "dvc", *args], cwd=repo.root, env=env,
                          capture_output=True, text=True)


def _killed_by_sigkill(log: str) -> bool:
    """DVC runs a stage through $SHELL, or /bin/sh when unset (as in CI): bash execs the command, so DVC
    sees the signal ("exited with -9"); dash waits for it and exits 137 (128 + 9) after "Killed"."""
    return re.search(r"exited with (-9|137)\b", log) is not None


def _pointer(root: Path, stage: str) -> Path:
    return root / layout.stage_dir(EXP, stage) / layout.POINTER_NAME


@pytest.mark.slow
def test_kill_9_in_every_stage_kind_leaves_nothing_complete_and_repro_recovers(
    tiny: RepoCopy, tmp_path: Path
) -> None:
    root = tiny.root
    train_out = root / layout.stage_dir(EXP, "train")
    # (kill point, dvc target, what must not exist afterwards: the stage's "complete" marker/output)
    kills = [
        ("download", "download@digits", [root / "data/raw/digits/SOURCE.json"]),
        ("preprocess", "preprocess@digits", [root / "data/processed/digits"]),
        ("train.step3", f"train@{EXP}", [train_out / "model.pt", train_out / "history.json",
                                         _pointer(root, "train")]),
        ("evaluate", f"evaluate@{EXP}", [root / layout.metrics_path(EXP), _pointer(root, "evaluate")]),
        ("sample", f"sample@{EXP}", [root / layout.stage_dir(EXP, "sample") / "grid.png",
                                     _pointer(root, "sample")]),
        ("report", "report", [root / "reports/index.html", root / "reports/README.md"]),
    ]
    logs = {}
    for point, target, absent in kills:
        proc = _dvc(tiny, "repro", target, kill_at=point)
        logs[point] = proc.stdout + proc.stderr
        assert proc.returncode != 0 and _killed_by_sigkill(logs[point]), (point, logs[point])
        assert not [p for p in absent if p.exists()], (point, [p for p in absent if p.exists()])
        if point == "train.step3":
            resume = torch.load(root / "scratch" / EXP / "resume.pt", weights_only=True)
            assert resume["state"]["global_step"] == 3
    # evaluate@ reran train first: it resumed from the checkpoint the kill left behind
    assert f"resuming {EXP} from scratch/{EXP}/resume.pt at step 3" in logs["evaluate"]

    final = _dvc(tiny, "repro")
    assert final.returncode == 0, final.stdout + final.stderr
    assert "up to date" in _dvc(tiny, "status").stdout
    for stage in ("train", "evaluate", "sample"):
        assert json.loads(_pointer(root, stage).read_text())["run_id"]
    assert json.loads((root / layout.metrics_path(EXP)).read_text())["n_images"] == 360
    assert (root / "reports/index.html").exists() and not (root / "scratch" / EXP / "resume.pt").exists()

    # The killed-and-resumed training ends bit-identical to one that ran straight through.
    resumed = torch.load(train_out / "model.pt", weights_only=True)
    cfg = config.resolve_experiment(config.load_params(root / "params.yaml"), EXP)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the stage processes (OMP_NUM_THREADS=1): float sums in the same order
    try:
        training.train(cfg, root / "data/processed/digits", tmp_path / "straight", tmp_path / "scratch")
    finally:
        torch.set_num_threads(threads)
    straight = torch.load(tmp_path / "straight" / "model.pt", weights_only=True)
    assert resumed["valid_bits_per_dim"] == straight["valid_bits_per_dim"]
    assert all(torch.equal(resumed["state_dict"][k], v) for k, v in straight["state_dict"].items())


@pytest.mark.slow
def test_two_stages_at_once_on_a_fresh_sqlite_store_lose_no_run(
    tiny: RepoCopy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from mlflow.tracking import MlflowClient

    assert _dvc(tiny, "repro").returncode == 0  # no-op after the kill test; the whole chain if run alone
    uri = f"sqlite:///{tmp_path / 'fresh.db'}"  # both processes race to create the schema
    env = {**tiny.env, "MLFLOW_TRACKING_URI": uri}
    procs = [subprocess.Popen([sys.executable, f"stages/{s}.py", EXP], cwd=tiny.root, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for s in ("evaluate", "sample")]
    logs = [p.communicate()[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("pixelzoo-ci").experiment_id])
    assert sorted((r.info.run_name, r.info.status) for r in runs) == [
        (f"{EXP}:evaluate", "FINISHED"), (f"{EXP}:sample", "FINISHED")]
    assert {json.loads(_pointer(tiny.root, s).read_text())["run_id"] for s in ("evaluate", "sample")} == {
        r.info.run_id for r in runs}

    # A corrupt model.pt: the evaluate stage names it and its rebuild command, opens no run.
    model = tiny.root / layout.stage_dir(EXP, "train") / "model.pt"
    model.write_bytes(model.read_bytes()[:1000])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    code, seconds = run_stage("evaluate.py", [EXP], tiny.root, monkeypatch)
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert "model.pt is corrupt or truncated" in err and f"rebuild it with `dvc repro -f train@{EXP}`" in err
    assert len(client.search_runs([client.get_experiment_by_name("pixelzoo-ci").experiment_id])) == 2


def test_params_strings_are_escaped_in_the_html_report(tmp_path: Path) -> None:
    from pixelzoo.report import build_report

    p = tiny_params()
    hostile = "x<script>alert(1)</script>"
    p["experiments"] = {hostile: {**p["experiments"][EXP], "dataset": "digits"}}
    p["report"]["mlflow"] = False
    written = build_report(tmp_path, p, tmp_path / "reports")
    html = written.html.read_text()
    assert "<script>" not in html and "x&lt;script&gt;alert(1)&lt;/script&gt;" in html
    md = written.markdown.read_text()  # shown as written on GitHub: escaped, not run as HTML
    assert "<script>" not in md and "x&lt;script&gt;alert(1)&lt;/script&gt;" in md


def test_stage_commands_print_no_traceback_for_user_errors(tiny: RepoCopy) -> None:
    """One real process (interpreter start-up included): exit 1, one message, no traceback."""
    env = {**tiny.env, "PIXELZOO_KILL_AT": ""}
    proc = subprocess.run([sys.executable, "stages/train.py", "pixelcnn-digit"], cwd=tiny.root, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("train@pixelcnn-digit failed: unknown experiment 'pixelcnn-digit'")
    assert os.path.exists(tiny.root / "params.yaml")


# ----------------------------------------------------------------------------- NaN / Inf
def test_nan_loss_stops_naming_step_keeps_last_good_checkpoint_and_fails_the_run(
    tiny: RepoCopy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    # The tiny copy's store (already created by the tests above: a fresh sqlite schema costs seconds)
    monkeypatch.setenv("DVC_ROOT", str(tiny.root))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    data = make_dataset(tmp_path / "data")
    cfg = toy_config(optimizer={"name": "sgd", "lr": 1e12}, grad_clip=None, epochs=1, checkpoint_minutes=0)
    meta = json.loads((data / "meta.json").read_text())
    out, scratch = tmp_path / "out", tmp_path / "scratch"
    with pytest.raises(TrainingDiverged) as err:
        read = {"train": meta["sha256"]["train"]}
        with tracking.stage_run("toy", "train", cfg, meta, data, read, out, "faults"):
            training.train(cfg, data, out, scratch)
    message = str(err.value)
    assert "at epoch 0, step 2 " in message and ("is nan" in message or "is inf" in message), message
    assert f"the last good checkpoint {scratch / 'resume.pt'} (step 1) is kept" in message
    kept = torch.load(scratch / "resume.pt", weights_only=True)
    assert kept["state"]["global_step"] == 1
    assert all(torch.isfinite(v).all() for v in kept["model"].values() if v.is_floating_point())
    assert not (out / "model.pt").exists() and not (out / layout.POINTER_NAME).exists()

    client = MlflowClient(f"sqlite:///{tiny.root / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("faults").experiment_id])
    assert run.info.status == "FAILED"
    assert run.data.tags[tracking.TAG_FAILURE].startswith("TrainingDiverged: training loss of toy is")
