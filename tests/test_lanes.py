"""A profile with seed replicates on two lanes (``--jobs 2``), end to end through the real stages:
every run lands in the copy's dvc.lock and MLflow store, and the report gives the seeds' mean ± s.d."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from pixelzoo.pipeline import layout
from pixelzoo.pipeline.settings import load_params

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("pixelcnn-digits", "gated_pixelcnn-digits")


def _tiny_profile(path: Path) -> Path:
    """The CI profile cut to two digits experiments of 2 epochs, at seeds 0 and 1."""
    params = load_params(ROOT / "ci" / "params.yaml")
    params["profile"]["seeds"] = [0, 1]
    params["sources"] = {"digits": params["sources"]["digits"]}
    params["datasets"] = {"digits": params["datasets"]["digits"]}
    params["experiments"] = {k: params["experiments"][k] for k in KEYS}
    params["train_defaults"]["epochs"] = 2
    params["report"]["receptive_field"] = None
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


@pytest.mark.slow
def test_seeds_on_two_lanes_land_in_one_copy(tmp_path: Path, monkeypatch, capsys) -> None:
    from pixelzoo.pipeline.profiles import profile

    monkeypatch.setitem(profile.PROFILES, "cpu", str(_tiny_profile(tmp_path / "tiny.yaml")))
    work = tmp_path / "work"
    assert profile.main(["cpu", "--workdir", str(work), "--jobs", "2"]) == 0
    runs = [*KEYS, *(f"{k}-seed1" for k in KEYS)]
    lane = work.with_name("work-lane1")
    assert any((lane / "outputs" / k).exists() for k in runs)  # the second lane ran some of them
    targets = [f"{s}@{k}" for k in runs for s in ("train", "evaluate", "sample")]
    status = subprocess.run([str(Path(sys.executable).parent / "dvc"), "status", *targets], cwd=work,
                            capture_output=True, text=True, check=True).stdout
    assert "up to date" in status, status  # adopted: the copy's dvc.lock vouches for every run
    store = f"sqlite:///{work.resolve() / 'mlflow.db'}"
    client = MlflowClient(store)
    name = load_params(work / "params.yaml")["tracking"]["experiment_name"]
    experiment = client.get_experiment_by_name(name)
    assert experiment.artifact_location == (work.resolve() / "mlruns").as_uri()  # the copy's, not a lane's
    for k in runs:
        for stage in ("train", "evaluate", "sample"):
            pointer = json.loads((work / layout.stage_dir(k, stage) / "mlflow_run.json").read_text())
            assert pointer["tracking_uri"] == store
            assert client.get_run(pointer["run_id"]).info.status == "FINISHED"
    lines = (work / "reports" / "table.md").read_text().splitlines()
    table = {ln.split(" | ")[0].strip("| "): ln for ln in lines}
    for k in KEYS:
        assert "| 2 of 2 (0, 1) |" in table[k]
    md = (work / "reports" / "README.md").read_text()
    assert "STALE" not in md and "## Mean and spread over seeds" in md
    n_runs = len(client.search_runs([experiment.experiment_id]))
    assert profile.main(["cpu", "--workdir", str(work), "--jobs", "2"]) == 0  # a rerun: nothing to do
    assert len(client.search_runs([experiment.experiment_id])) == n_runs


def test_jobs_below_one_is_refused_before_any_work(tmp_path: Path, capsys) -> None:
    from pixelzoo.pipeline.profiles import profile

    assert profile.main(["ci", "--workdir", str(tmp_path / "w"), "--jobs", "0"]) == 1
    assert "--jobs: must be at least 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()
