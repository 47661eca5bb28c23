"""`dvc repro` of the CI-scale profile (ci/params.yaml, offline digits) in a copy: one experiment in detail.

Checks the real stages end to end: metrics over the whole test split, one MLflow run per stage with its
tags, the lineage chain, a no-op second repro, and STALE once params change.
"""

from __future__ import annotations

import json
import math

import pytest
import yaml
from conftest import ROOT, RepoCopy
from mlflow.tracking import MlflowClient

from pixelzoo.pipeline.profiles.profile import source_revision

pytestmark = pytest.mark.slow
EXP = "pixelcnn-digits"


def ci_run_experiments(root) -> list[str]:
    return list(yaml.safe_load((root / "params.yaml").read_text())["experiments"])


def test_dvc_repro_ci_profile_end_to_end(ci_run, tmp_path) -> None:
    root = ci_run.root
    repo_copy = RepoCopy(root)

    meta = json.loads((root / "data" / "processed" / "digits" / "meta.json").read_text())
    metrics = json.loads((root / "metrics" / f"{EXP}.json").read_text())
    assert metrics["n_images"] == meta["counts"]["test"] == 360
    assert metrics["split"] == "test" and metrics["experiment"] == EXP and metrics["model"] == "pixelcnn"
    assert 0 < metrics["test_bits_per_dim"] < 4.09  # below uniform over 17 levels (log2 17)
    assert metrics["test_nats_per_image"] == pytest.approx(metrics["test_bits_per_dim"] * 64 * math.log(2))
    for png in ("grid.png", "completions.png"):
        assert (root / "outputs" / EXP / "samples" / png).stat().st_size > 0
    assert not (root / "scratch" / EXP / "resume.pt").exists()  # removed once the stage completed

    pointers = {
        s: json.loads((root / "outputs" / EXP / d / "mlflow_run.json").read_text())
        for s, d in (("train", "train"), ("evaluate", "evaluate"), ("sample", "samples"))
    }
    assert {p["tracking_uri"] for p in pointers.values()} == {f"sqlite:///{root}/mlflow.db"}
    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    exp = client.get_experiment_by_name("pixelzoo-ci")
    runs = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags["pixelzoo.experiment"] == EXP]
    assert len(client.search_runs([exp.experiment_id])) == 3 * len(ci_run_experiments(root))
    assert sorted(r.info.run_name for r in runs) == sorted(f"{EXP}:{s}" for s in pointers)
    # Runs in a profile copy record the commit of the checkout it was copied from, not the copy's own.
    head, dirty = source_revision(ROOT)
    for stage, pointer in pointers.items():
        run = client.get_run(pointer["run_id"])
        t = run.data.tags
        assert (t["pixelzoo.experiment"], t["pixelzoo.stage"], run.info.status) == (EXP, stage, "FINISHED")
        assert t["git.commit"] == head and t["git.dirty"] == str(dirty).lower()
        read = ("train", "valid") if stage == "train" else ("test",)  # measured on the arrays it read
        assert {k: v for k, v in t.items() if k.startswith("dataset.sha256.")} == {
            f"dataset.sha256.{s}": meta["sha256"][s] for s in read
        }
        assert run.data.params["model"] == "pixelcnn" and run.data.params["model_args.layers"] == "2"
    assert client.get_metric_history(pointers["train"]["run_id"], "valid_bits_per_dim")

    lineage = repo_copy.run("python", "-m", "pixelzoo.pipeline.lineage", EXP, "--check").stdout
    assert f"{metrics['test_bits_per_dim']:.4f} bits/dim" in lineage
    assert all(p["run_id"] in lineage for p in pointers.values())
    assert meta["raw_sha256"]["digits.npz"] in lineage and head[:12] in lineage
    assert "STALE" not in lineage

    again = repo_copy.dvc("repro").stdout
    assert "Running stage" not in again and "up to date" in again

    # Change a sampling param (in a copy: other tests read this run): the sample run is now stale.
    root = ci_run.copy(tmp_path / "stale").root
    repo_copy = RepoCopy(root)
    params = (root / "params.yaml").read_text().replace("n_grid: 16", "n_grid: 9")
    (root / "params.yaml").write_text(params)
    stale = repo_copy.run("python", "-m", "pixelzoo.pipeline.lineage", EXP, "--check", check=False)
    assert stale.returncode == 1
    assert "STALE  sample: params changed since it ran (sample.n_grid)" in stale.stdout
    assert "ok     train: params, data and code match" in stale.stdout
