"""The real dvc.yaml data stages, run by DVC in a temporary copy of the project (offline)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from pixelzoo.data import load_meta, load_split, split_digest


@pytest.mark.slow
def test_dvc_repro_digits_and_cifar_fixture(repo_copy) -> None:
    params = yaml.safe_load((repo_copy.root / "params.yaml").read_text())
    # A CI-style source: generated in the CIFAR-10 archive format, read by the real CIFAR-10 reader.
    params["sources"]["tiny"] = {"kind": "cifar10_fixture", "n_train": 30, "n_test": 8, "size": 8, "seed": 1}
    params["datasets"]["tiny4"] = {"source": "tiny", "levels": 4, "seed": 0, "valid_size": 6, "n_train": 20}
    (repo_copy.root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    repo_copy.dvc("repro", "preprocess@digits", "preprocess@tiny4")

    meta = load_meta(repo_copy.root / "data/processed/digits")
    assert meta["counts"] == {"train": 1257, "valid": 180, "test": 360}
    assert (meta["levels"], meta["channels"], meta["height"], meta["width"]) == (17, 1, 8, 8)
    assert meta["valid_carved_from_train"] and meta["test_carved_from_train"] and meta["n_classes"] == 10
    assert meta["params"]["seed"] == 0 and meta["source"] == "digits"
    raw = json.loads((repo_copy.root / "data/raw/digits/SOURCE.json").read_text())
    assert meta["raw_sha256"] == raw["files"]
    for split in ("train", "valid", "test"):
        x, y = load_split(repo_copy.root / "data/processed/digits", split)
        assert x.dtype == np.uint8 and y.dtype == np.int64 and x.max() <= 16
        assert meta["sha256"][split] == split_digest(x, y)

    tiny = load_meta(repo_copy.root / "data/processed/tiny4")
    assert tiny["counts"] == {"train": 20, "valid": 6, "test": 8} and tiny["channels"] == 3
    x, _ = load_split(repo_copy.root / "data/processed/tiny4", "train")
    assert x.shape == (20, 3, 8, 8) and set(np.unique(x)) == {0, 1, 2, 3}

    status = repo_copy.dvc("status", "preprocess@digits", "preprocess@tiny4").stdout
    assert "up to date" in status


def test_stage_scripts_fail_with_one_clear_message(repo_copy) -> None:
    proc = repo_copy.run("python", "stages/preprocess.py", "mnist9", check=False)
    assert proc.returncode != 0 and "unknown dataset 'mnist9'" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = repo_copy.run("python", "stages/download.py", "nosuch", check=False)
    assert proc.returncode != 0 and "unknown source 'nosuch'" in proc.stderr
    proc = repo_copy.run("python", "stages/preprocess.py", "digits", check=False)  # not downloaded yet
    assert proc.returncode != 0 and "dvc repro download@digits" in proc.stderr
    assert not (repo_copy.root / "data/processed").exists()
