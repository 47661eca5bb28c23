"""The rehearsal: the default (paper) profile, derived small and offline, through every real stage.

Fast tests check the derivation against params.yaml; the slow ones read one session-wide rehearsal run
(``rehearsal_run`` in conftest.py) — every default experiment's download, preprocess, train, evaluate,
sample and report stage — and plant the binarized-MNIST sampling crash in a copy of it to show that the
rehearsal catches it. The "Change one knob" commands of docs/pipeline.md run in another copy.
"""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from pixelzoo.data import formats, sources
from pixelzoo.pipeline.profiles import rehearsal

ROOT = Path(__file__).resolve().parents[1]
PAPER = yaml.safe_load((ROOT / "params.yaml").read_text())
DERIVED = rehearsal.derive(PAPER)
OFFLINE_KINDS = {"sklearn_digits", "amat_fixture", "idx_fixture", "cifar10_fixture"}
UNLABELLED = "pixelcnn-binarized_mnist"  # a binarized-MNIST row: the data has no labels


# ----------------------------------------------------------------------------- the derivation
def test_every_paper_experiment_is_rehearsed_as_itself() -> None:
    assert list(DERIVED["experiments"]) == list(PAPER["experiments"]), "an experiment is missing or renamed"
    for key, paper in PAPER["experiments"].items():
        small = DERIVED["experiments"][key]
        for field in ("model", "dataset", "conditional", "eval_split", "reference"):
            assert small.get(field) == paper.get(field), (key, field)
        for arg, value in (paper.get("model_args") or {}).items():
            if arg in rehearsal.WIDTHS:
                assert 1 <= small["model_args"][arg] <= value, (key, arg)
            else:  # depth, kernel sizes, residual/skip switches, multi-scale settings: as in the paper
                assert small["model_args"][arg] == value, (key, arg)


def test_the_pixelcnn_pp_rows_are_rehearsed_with_their_recipe() -> None:
    """Derived, not listed: the PixelCNN++ rows of params.yaml run in the rehearsal as themselves (mixture
    head, depth, dropout, EMA weights, per-step LR decay, conditioning), only narrow and short."""
    rows = {"pixelcnn_pp-cifar10": False, "pixelcnn_pp_cond-cifar10": True}
    for key, conditional in rows.items():
        paper, small = PAPER["experiments"][key], DERIVED["experiments"][key]
        assert small["model"] == "pixelcnn_pp" and bool(small.get("conditional")) is conditional, key
        assert (small["ema_decay"], small["lr_decay_per_step"]) == (0.9995, 0.999995), key
        assert small["optimizer"] == paper["optimizer"] == {"name": "adam", "lr": 1.0e-3}, key
        assert small["model_args"] == {**paper["model_args"], "filters": rehearsal.WIDTHS["filters"]}, key
        assert small["epochs"] == 1 and DERIVED["train_defaults"]["max_steps"] == rehearsal.MAX_STEPS
    refs = {PAPER["experiments"][k]["reference"]["row"] for k in rows}
    assert refs == {"PixelCNN++", "PixelCNN++, class-conditional"}


def test_every_source_is_an_offline_fixture_and_datasets_keep_their_levels() -> None:
    assert list(DERIVED["sources"]) == list(PAPER["sources"])
    assert {s["kind"] for s in DERIVED["sources"].values()} <= OFFLINE_KINDS
    for name, paper in PAPER["datasets"].items():
        small = DERIVED["datasets"][name]
        for field in ("source", "levels", "seed"):
            assert small[field] == paper[field], (name, field)
    for section in set(PAPER) - {"sources", "datasets", "experiments"}:
        assert section in DERIVED, section
    assert DERIVED["profile"]["name"] == "rehearsal" and DERIVED["profile"]["paper_numbers"] is False


def test_the_real_format_of_each_source() -> None:
    kinds = {PAPER["sources"][n]["kind"]: DERIVED["sources"][n]["kind"] for n in PAPER["sources"]}
    assert kinds["amat"] == "amat_fixture"
    assert kinds["torchvision_mnist"] == "idx_fixture"
    assert kinds["torchvision_cifar10"] == "cifar10_fixture"


def test_a_new_online_source_kind_needs_a_fixture(monkeypatch: pytest.MonkeyPatch) -> None:
    """A source the rehearsal cannot stand in for fails the derivation, naming it; an IDX one is covered."""
    with pytest.raises(rehearsal.NoFixture, match="'imagenet'"):
        rehearsal.derive({**PAPER, "sources": {"imagenet": {"kind": "http_imagenet"}}})
    idx = sources.RemoteFile("FashionMNIST/raw/train-images-idx3-ubyte.gz", ("https://x/",), "0" * 64)
    monkeypatch.setitem(sources.REMOTE_FILES, "fashion_like", (idx,))
    spec = rehearsal.derive({**PAPER, "sources": {"fm": {"kind": "fashion_like"}}})["sources"]["fm"]
    assert spec["kind"] == "idx_fixture" and spec["folder"] == "FashionMNIST"


def test_fixtures_are_read_by_the_real_readers(tmp_path: Path) -> None:
    from torchvision.datasets.mnist import read_image_file, read_label_file

    amat = DERIVED["sources"]["binarized_mnist"]
    sources.download_source("binarized_mnist", amat, tmp_path / "b")
    raw = sources.load_source("binarized_mnist", amat, tmp_path / "b")
    assert raw.n_classes is None and raw.splits["test"][0].shape == (rehearsal.IMAGES["test"], 1, 28, 28)
    assert set(np.unique(raw.splits["train"][0])) == {0, 1}
    assert formats.read_amat(tmp_path / "b" / "binarized_mnist_valid.amat").shape == (8, 28, 28)

    idx = DERIVED["sources"]["mnist"]
    sources.download_source("mnist", idx, tmp_path / "m")
    raw = sources.load_source("mnist", idx, tmp_path / "m")
    folder = tmp_path / "m" / "MNIST" / "raw"
    for split, prefix in sources.IDX_SPLIT_PREFIX.items():  # torchvision reads the decompressed files
        plain = {}
        for what in ("images-idx3", "labels-idx1"):
            plain[what] = tmp_path / f"{prefix}-{what}-ubyte"
            plain[what].write_bytes(gzip.decompress((folder / f"{prefix}-{what}-ubyte.gz").read_bytes()))
        x, y = raw.splits[split]
        assert np.array_equal(read_image_file(str(plain["images-idx3"])).numpy(), x[:, 0])
        assert np.array_equal(read_label_file(str(plain["labels-idx1"])).numpy(), y)
    assert raw.n_classes == 10 and raw.splits["train"][0].shape == (rehearsal.IMAGES["train"], 1, 28, 28)


# ----------------------------------------------------------------------------- the rehearsal run
@pytest.mark.slow
def test_every_stage_of_every_experiment_ran(rehearsal_run) -> None:
    root = rehearsal_run.root
    for key, cfg in PAPER["experiments"].items():
        m = json.loads((root / "metrics" / f"{key}.json").read_text())
        assert m["experiment"] == key and m["n_images"] > 0 and np.isfinite(m["test_bits_per_dim"]), key
        figures = {"grid.png", "completions.png"}
        if cfg.get("conditional"):
            figures |= {"classes.png", "soft_labels.png"}
        assert figures <= {p.name for p in (root / "outputs" / key / "samples").glob("*.png")}, key
    from pixelzoo.report.build import NOT_RUN

    md = (root / "reports" / "README.md").read_text().splitlines()
    for key in PAPER["experiments"]:  # every row of the report carries a (rehearsal) number
        rows = [line for line in md if line.startswith("|") and f" {key} " in line]
        assert rows and not any(NOT_RUN in row for row in rows), (key, rows)
    # The copy committed its results: a baseline for `dvc metrics diff` / `dvc exp show`.
    log = subprocess.run(["git", "log", "--format=%s"], cwd=root, capture_output=True, text=True).stdout
    assert log.startswith("profile run results")
    status = subprocess.run(["git", "status", "--porcelain", "--", "metrics", "dvc.lock"], cwd=root,
                            capture_output=True, text=True).stdout
    assert status == ""


@pytest.mark.slow
def test_rehearsal_catches_the_unlabelled_sampling_crash(rehearsal_run, tmp_path: Path) -> None:
    """Reintroduce `int(meta["n_classes"])` for every model: sample@ of a binarized-MNIST row must fail."""
    run = rehearsal_run.copy(tmp_path / "crash")
    stage = run.root / "stages" / "sample.py"
    src = stage.read_text()
    fixed = re.search(r"n_classes = int\(got\.meta\[\"n_classes\"\]\) if conditional else 0", src)
    assert fixed, "the fix this test plants against has moved; update the test"
    stage.write_text(src.replace(fixed.group(0), 'n_classes = int(got.meta["n_classes"])'))
    dvc = Path(sys.executable).parent / "dvc"
    proc = subprocess.run([str(dvc) if dvc.exists() else "dvc", "repro", f"sample@{UNLABELLED}"],
                          cwd=run.root, env=run.env, capture_output=True, text=True)
    assert proc.returncode != 0, "the rehearsal did not catch the crash"
    assert "TypeError" in proc.stderr + proc.stdout and "n_classes" in proc.stderr + proc.stdout, proc.stderr


@pytest.mark.slow
def test_lineage_of_a_profile_copy_names_the_source_commit(rehearsal_run) -> None:
    from pixelzoo.pipeline.profiles.profile import source_revision

    commit, dirty = source_revision(ROOT)
    proc = subprocess.run([sys.executable, "-m", "pixelzoo.pipeline.lineage", "--workdir",
                           str(rehearsal_run.root), UNLABELLED, "--check"],
                          cwd=ROOT, capture_output=True, text=True)
    assert commit[:12] in proc.stdout, proc.stdout + proc.stderr
    assert proc.returncode == 0 and "STALE" not in proc.stdout, proc.stdout
    if not dirty:  # a clean source: the code was compared against the source checkout, not the copy
        assert f"code compared in {ROOT}" in proc.stdout


def readme_knob_commands() -> list[str]:
    """The shell lines of the "Change one knob" section of docs/pipeline.md (its first ```bash block)."""
    text = (ROOT / "docs" / "pipeline.md").read_text()
    section = text.split("## Change one knob", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash", 1)[1].split("```", 1)[0]
    return [ln.split("  #")[0].strip() for ln in block.splitlines() if ln.strip() and not ln.startswith("#")]


def test_the_knob_commands_are_found_where_the_slow_test_reads_them() -> None:
    commands = readme_knob_commands()
    assert commands[0].startswith("dvc exp run -S 'experiments.") and len(commands) == 4, commands


@pytest.mark.slow
def test_change_one_knob_as_the_readme_says(rehearsal_run, tmp_path: Path) -> None:
    """docs/pipeline.md's commands, as written, in a copy of the rehearsal (a clone after `dvc repro`)."""
    import os

    run = rehearsal_run.copy(tmp_path / "knob")
    env = {k: v for k, v in run.env.items() if not k.startswith("PIXELZOO_SOURCE")}  # a plain clone
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env["PATH"]
    commands = readme_knob_commands()
    assert any(c.startswith("dvc exp run -S 'experiments.") for c in commands), commands
    outputs = []
    for cmd in commands:
        proc = subprocess.run(cmd, shell=True, cwd=run.root, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, f"{cmd}\n{proc.stdout}\n{proc.stderr}"
        outputs.append(proc.stdout)
    key, field, value = re.search(r"experiments\.([\w-]+)\.(\w+)=(\S+?)'", commands[0]).groups()
    assert str(yaml.safe_load((run.root / "params.yaml").read_text())["experiments"][key][field]) == value
    pointer = json.loads((run.root / "outputs" / key / "train" / "mlflow_run.json").read_text())
    from mlflow.tracking import MlflowClient

    trained = MlflowClient(pointer["tracking_uri"]).get_run(pointer["run_id"])
    assert trained.data.params[field] == value  # the train stage reran with the new knob
    assert not any("STALE" in out for out in outputs)


KNOBS = ("epochs", "batch_size", "seed")  # docs/pipeline.md "Change one knob": every entry spells them out


def test_every_knob_of_every_experiment_can_be_set_with_dvc_exp_run_S(tmp_path: Path) -> None:
    """DVC's own `-S` override (Hydra) on a copy of params.yaml: it refuses keys an entry lacks."""
    from dvc.utils.hydra import apply_overrides

    path = tmp_path / "params.yaml"
    path.write_text((ROOT / "params.yaml").read_text())
    overrides = [f"experiments.{key}.{knob}=7" for key in PAPER["experiments"] for knob in KNOBS]
    apply_overrides(str(path), overrides)
    changed = yaml.safe_load(path.read_text())["experiments"]
    assert all(changed[key][knob] == 7 for key in PAPER["experiments"] for knob in KNOBS)
