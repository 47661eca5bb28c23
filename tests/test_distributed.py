"""DDP through the real train stage: ``launcher: torchrun`` with 2 gloo processes on CPU equals 1 process.

A tiny digits experiment from the CI profile runs three ways in one project folder: plain ``python``,
``torchrun --standalone --nproc_per_node=2`` at the same global batch, and the torchrun run killed
(SIGTERM, as a scheduler or Ctrl-C does) and rerun. Same loss trajectory, validation NLL and weights
within float tolerance; rank 0 alone writes and tracks; the rerun resumes and ends where the
uninterrupted run ended. What stays unproven here: NCCL on GPUs and several machines.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from pixelzoo.data.preprocess import preprocess
from pixelzoo.data.sources import download_source

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = "torchrun --standalone --nproc_per_node=2"


# PixelCNN++ with weight norm: the mixture head (a wrapper that hid it once gave the categorical loss) and
# the data-dependent init, made on the whole global batch and broadcast from rank 0.
PP = {"model": "pixelcnn_pp", "dataset": "digits", "epochs": 2,
      "model_args": {"nr_resnet": 1, "filters": 4, "n_mix": 2, "dropout": 0.0, "weight_norm": True}}


def tiny_params() -> dict:
    """The CI profile's digits set and pixelcnn-digits, shrunk; 203 train images: the last batch is short."""
    ci = yaml.safe_load((ROOT / "ci" / "params.yaml").read_text())
    # With the PixelCNN++ recipe on: every rank keeps the same EMA (model.pt holds it) and LR decay.
    exp = {**ci["experiments"]["pixelcnn-digits"], "epochs": 2, "ema_decay": 0.8, "lr_decay_per_step": 0.95}
    return {
        "sources": {"digits": ci["sources"]["digits"]},
        "datasets": {"digits": {**ci["datasets"]["digits"], "n_train": 203}},  # 203 = 6*32 + 11
        "train_defaults": {**ci["train_defaults"], "checkpoint_minutes": 0, "log_every_steps": 1},
        "experiments": {"one": exp, "ddp": {**exp, "launcher": TORCHRUN},
                        "pp_one": PP, "pp_ddp": {**PP, "launcher": TORCHRUN}},
        "evaluate": ci["evaluate"],
        "sample": ci["sample"],
        "tracking": {"experiment_name": "pixelzoo-ddp-test"},
    }


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ddp")
    params = tiny_params()
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    download_source("digits", params["sources"]["digits"], root / "data" / "raw" / "digits")
    preprocess("digits", params, root / "data" / "raw", root / "data" / "processed")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)  # the tracker records a commit
    return root


def stage_env(root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PIXELZOO_LAUNCHED")}
    return {**env, "DVC_ROOT": str(root), "OMP_NUM_THREADS": "1", **extra}


def train(root: Path, experiment: str, **env: str) -> subprocess.CompletedProcess:
    """``python stages/train.py <experiment>``: the dvc.yaml command of train@<experiment>."""
    return subprocess.run(
        [sys.executable, str(ROOT / "stages" / "train.py"), experiment],
        cwd=root, env=stage_env(root, **env), capture_output=True, text=True, timeout=300,
    )


def outputs(root: Path, experiment: str) -> tuple[dict, dict]:
    out = root / "outputs" / experiment / "train"
    history = json.loads((out / "history.json").read_text())
    return history, torch.load(out / "model.pt", weights_only=False)["state_dict"]


def step_losses(root: Path, experiment: str) -> list[float]:
    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    runs = client.search_runs(
        [client.get_experiment_by_name("pixelzoo-ddp-test").experiment_id],
        f"tags.`pixelzoo.experiment` = '{experiment}'",
    )
    assert len(runs) == 1, f"{experiment}: {len(runs)} MLflow runs, expected one (rank 0 alone tracks)"
    history = client.get_metric_history(runs[0].info.run_id, "train_step_nats")
    return [m.value for m in sorted(history, key=lambda m: m.step)]


@pytest.fixture(scope="module")
def one_and_two(project: Path) -> dict[str, tuple[dict, dict]]:
    for experiment in ("one", "ddp"):
        proc = train(project, experiment)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return {e: outputs(project, e) for e in ("one", "ddp")}


def assert_same_weights(a: dict, b: dict, atol: float = 1e-5) -> None:
    for k in a:
        assert torch.allclose(a[k], b[k], atol=atol, rtol=1e-4), (k, (a[k] - b[k]).abs().max().item())


def test_two_gloo_processes_match_one_process_at_the_same_global_batch(
    project: Path, one_and_two: dict
) -> None:
    (h1, w1), (h2, w2) = one_and_two["one"], one_and_two["ddp"]
    assert (h1["world_size"], h2["world_size"]) == (1, 2)
    assert h1["total_steps"] == h2["total_steps"] == 2 * 7  # 203 images, batch 32: 7 steps per epoch
    for e1, e2 in zip(h1["epochs"], h2["epochs"], strict=True):
        assert e2["train_bits_per_dim"] == pytest.approx(e1["train_bits_per_dim"], rel=1e-5)
        # Validation split across the two ranks, summed: every image once, the same exact NLL.
        assert e2["valid_bits_per_dim"] == pytest.approx(e1["valid_bits_per_dim"], rel=1e-5)
    loss1, loss2 = step_losses(project, "one"), step_losses(project, "ddp")
    assert len(loss1) == len(loss2) == 14
    assert loss2 == pytest.approx(loss1, rel=1e-5)
    assert loss1[-1] < loss1[0]  # it learned: the comparison is not between two untouched inits
    assert_same_weights(w1, w2)
    saved = torch.load(project / "outputs" / "ddp" / "train" / "model.pt", weights_only=True)
    assert saved["weights"] == "ema"
    pointer = json.loads((project / "outputs" / "ddp" / "train" / "mlflow_run.json").read_text())
    assert pointer["run_name"] == "ddp:train"


def test_ddp_run_killed_by_sigterm_resumes_and_ends_with_the_uninterrupted_weights(
    project: Path, one_and_two: dict
) -> None:
    _, expected = one_and_two["ddp"]
    resume = project / "scratch" / "ddp" / "resume.pt"
    assert not resume.exists()  # the finished run removed its scratch checkpoint
    shutil.rmtree(project / "outputs" / "ddp")  # as DVC does before it re-runs a stage
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "stages" / "train.py"), "ddp"], cwd=project, env=stage_env(project),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    deadline = time.monotonic() + 240
    while not resume.exists():  # checkpoint_minutes: 0 -> a checkpoint after every step
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)  # the torchrun process (the stage exec'd into it)
    log = proc.communicate(timeout=60)[0]
    assert proc.returncode != 0, log
    killed_at = torch.load(resume, weights_only=False)["state"]["global_step"]
    assert 1 <= killed_at < 14, killed_at
    assert not (project / "outputs" / "ddp" / "train" / "model.pt").exists()  # DVC-like: not finished

    rerun = train(project, "ddp")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"resuming ddp from scratch/ddp/resume.pt at step {killed_at}" in rerun.stdout
    history, weights = outputs(project, "ddp")
    assert history["total_steps"] == 14 and history["world_size"] == 2
    assert_same_weights(expected, weights, atol=1e-6)


def test_unreachable_server_stops_a_torchrun_launch_within_seconds(project: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    proc = train(project, "ddp", MLFLOW_TRACKING_URI=f"http://127.0.0.1:{port}")
    elapsed = time.monotonic() - started
    assert proc.returncode != 0
    assert "unreachable" in proc.stderr and "Nothing has been trained" in proc.stderr
    assert "torch.distributed.run" not in proc.stderr + proc.stdout  # no worker was started
    assert elapsed < 60, elapsed  # ~5 s on an idle 2-core machine, mostly imports; generous for a busy one


def test_bad_launcher_is_one_clear_error(project: Path) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    bad = copy.deepcopy(params)
    bad["experiments"]["ddp"]["launcher"] = 4
    (project / "params.yaml").write_text(yaml.safe_dump(bad))
    try:
        proc = train(project, "ddp")
    finally:
        (project / "params.yaml").write_text(yaml.safe_dump(params))
    assert proc.returncode != 0
    assert "experiments.ddp.launcher" in proc.stderr and "Traceback" not in proc.stderr


def test_pixelcnn_pp_with_weight_norm_on_two_processes_matches_one(project: Path) -> None:
    for experiment in ("pp_one", "pp_ddp"):
        proc = train(project, experiment)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (h1, w1), (h2, w2) = outputs(project, "pp_one"), outputs(project, "pp_ddp")
    assert (h1["world_size"], h2["world_size"]) == (1, 2)
    for e1, e2 in zip(h1["epochs"], h2["epochs"], strict=True):
        assert e2["valid_bits_per_dim"] == pytest.approx(e1["valid_bits_per_dim"], rel=1e-5)
    losses = step_losses(project, "pp_one")
    assert losses[-1] < losses[0] and step_losses(project, "pp_ddp") == pytest.approx(losses, rel=1e-5)
    assert_same_weights(w1, w2)
