"""The report renders from pipeline outputs (fixtures written here in the architecture's formats)."""

from __future__ import annotations

import copy
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from mlflow.entities import Param
from torchvision.utils import save_image

from pixelzoo import integrity
from pixelzoo.evaluation import BitsMap, save_bits_map_figures
from pixelzoo.pipeline import layout
from pixelzoo.pipeline import settings as config
from pixelzoo.pipeline.provenance import changed_keys
from pixelzoo.pipeline.tracking import client as tracking
from pixelzoo.report import build_report, reference
from pixelzoo.report.collect import RunPointer

REPO = Path(__file__).resolve().parents[1]
LN2 = math.log(2.0)
BMNIST_DIMS = 784

META = {
    "name": "binarized_mnist", "source": "binarized_mnist", "levels": 2, "channels": 1, "height": 28,
    "width": 28, "n_classes": 10, "counts": {"train": 50000, "valid": 10000, "test": 10000},
    "sha256": {"train": "a" * 64, "valid": "b" * 64, "test": "c" * 64}, "raw_sha256": {},
    "valid_carved_from_train": False, "params": {"source": "binarized_mnist"},
}


def _params() -> dict[str, Any]:
    return {
        "train_defaults": {
            "batch_size": 16, "epochs": 2, "seed": 0, "max_steps": None,
            "optimizer": {"name": "rmsprop", "lr": 1e-3},
        },
        "experiments": {
            # run, up to date, every output present
            "bmnist_pixelcnn": {
                "model": "pixelcnn", "dataset": "binarized_mnist", "model_args": {"layers": 2, "hidden": 8},
                "reference": {"table": "pixelrnn_t4_bmnist", "row": "PixelCNN"},
            },
            # configured, never run
            "cifar_row_lstm": {
                "model": "row_lstm", "dataset": "cifar10", "model_args": {"layers": 12}, "epochs": 1,
                "reference": {"table": "cifar10_test", "row": "Row LSTM"},
            },
            # run, but params.yaml changed since (layers 1 -> 2)
            "depth_1": {
                "model": "row_lstm", "dataset": "binarized_mnist", "model_args": {"layers": 2}, "epochs": 1,
                "eval_split": "valid", "reference": {"table": "pixelrnn_t3_depth", "row": "1"},
            },
            # no paper row, run
            "seed004": {"model": "seed004", "dataset": "binarized_mnist", "model_args": {}, "epochs": 1,
                        "reference": None},
        },
        "evaluate": {"batch_size": 100},
        "sample": {"seed": 0, "n_grid": 16},
        "report": {"receptive_field": {"models": ["pixelcnn", "no_such_model"], "size": 7}},
    }


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1))


def _record_run(uri: str, key: str, stage: str, cfg: dict[str, Any], ckpt: str | None = None) -> str:
    """An MLflow run with the tags and params pixelzoo.pipeline.tracking.client.stage_run records."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("pixelzoo")
    exp_id = exp.experiment_id if exp else client.create_experiment("pixelzoo")
    tags = {"git.commit": "0123456789abcdef0123", "git.dirty": "false",
            tracking.TAG_CONFIG: config.config_digest(cfg), "dataset.sha256": tracking.dataset_digest(META)}
    if ckpt and stage != "train":
        tags[tracking.TAG_CHECKPOINT] = ckpt
    run = client.create_run(exp_id, run_name=f"{key}:{stage}", tags=tags)
    client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in tracking.flatten(cfg).items()])
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def _run(root: Path, params: dict[str, Any], key: str, nats: float, uri: str | None) -> None:
    """Outputs of train/evaluate/sample for one experiment, as the pipeline writes them.

    ``params`` are those the run used; ``uri`` an MLflow store to record the runs in (None: pointers name
    a store that does not exist).
    """
    entry = params["experiments"][key]
    _write_json(root / "metrics" / f"{key}.json", {
        "experiment": key, "dataset": entry["dataset"], "model": entry["model"],
        "split": entry.get("eval_split", "test"), "test_nats_per_image": nats,
        "test_bits_per_dim": nats / (BMNIST_DIMS * LN2), "n_images": 10000, "n_params": 12345,
    })
    epochs = [
        {"epoch": i + 1, "steps": 100 * (i + 1), "train_bits_per_dim": 0.2 - 0.02 * i,
         "valid_bits_per_dim": 0.21 - 0.02 * i, "wall_seconds": 30.0 * (i + 1)}
        for i in range(3)
    ]
    _write_json(root / "outputs" / key / "train" / "history.json", {
        "experiment": key, "epochs": epochs, "total_steps": 300, "wall_seconds": 90.0, "device": "cpu",
        "world_size": 1, "precision": "fp32", "n_params": 12345, "best_epoch": 3,
        "best_valid_bits_per_dim": 0.17,
    })
    ckpt = root / "outputs" / key / "train" / "model.pt"
    ckpt.write_bytes(key.encode())  # stands in for the state dict: only its sha256 matters here
    for stage in ("train", "evaluate", "sample"):
        cfg = config.stage_config(params, key, stage)
        digest = integrity.file_sha256(ckpt)
        run_id = _record_run(uri, key, stage, cfg, digest) if uri else f"{stage}{key}".ljust(32, "0")
        _write_json(root / layout.stage_dir(key, stage) / "mlflow_run.json", {
            "run_id": run_id, "tracking_uri": uri or f"sqlite:///{root}/mlflow.db",
            "experiment_name": "pixelzoo", "run_name": f"{key}:{stage}",
        })
    gen = torch.Generator().manual_seed(0)
    for name, n in (("grid", 16), ("classes", 20), ("soft_labels", 10), ("completions", 8)):
        png = root / "outputs" / key / "samples" / f"{name}.png"
        save_image(torch.rand(n, 1, 28, 28, generator=gen), png, nrow=min(n, 10))
    rng = np.random.default_rng(0)
    known = np.zeros((1, 28, 28), dtype=bool)
    known[:, :14] = True
    np.savez_compressed(  # as stages/sample.py writes it: 4 per row, 3 classes, 2 pairs, 2 completions
        root / "outputs" / key / "samples" / "samples.npz", levels=2, per_row=4,
        grid=rng.integers(0, 2, (8, 1, 28, 28)), classes=rng.integers(0, 2, (12, 1, 28, 28)),
        classes_labels=np.repeat(np.arange(3), 4), soft_labels=rng.integers(0, 2, (8, 1, 28, 28)),
        soft_labels_pairs=np.array([[1, 7], [0, 2]]), completions=rng.integers(0, 2, (2, 1, 28, 28)),
        completions_originals=rng.integers(0, 2, (2, 1, 28, 28)), completions_known=known,
    )
    bits = BitsMap(rng.random((1, 28, 28)), np.arange(2), rng.integers(0, 2, (2, 1, 28, 28)).astype(np.uint8),
                   rng.random((2, 1, 28, 28)))
    save_bits_map_figures(bits, 2, root / "outputs" / key / "evaluate", key)


def write_fixture_outputs(root: Path, tracking_uri: str | None = None) -> dict[str, Any]:
    """A tree with metrics/, outputs/, data/ in the documented formats; returns the params now."""
    params = _params()
    _write_json(root / "data" / "processed" / "binarized_mnist" / "meta.json", META)
    _run(root, params, "bmnist_pixelcnn", 85.30, tracking_uri)
    then = copy.deepcopy(params)
    then["experiments"]["depth_1"]["model_args"]["layers"] = 1
    _run(root, then, "depth_1", 120.0, tracking_uri)
    _run(root, params, "seed004", 90.0, tracking_uri)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return params


@pytest.fixture(scope="module")
def store_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One MLflow sqlite store for the module (creating its schema takes seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, store_uri: str) -> tuple[Path, dict[str, Any], Any]:
    root = tmp_path_factory.mktemp("repo")
    params = write_fixture_outputs(root, store_uri)
    written = build_report(root, params, root / "reports")
    return root, params, written


def _row(html: str, first_cell: str, experiment: str) -> str:
    for tr in re.findall(r"<tr>(.*?)</tr>", html, flags=re.S):
        cells = re.findall(r"<td[^>]*>(.*?)</td>", tr, flags=re.S)
        if cells and cells[0].startswith(first_cell) and cells[1] == experiment:
            return tr
    raise AssertionError(f"no row {first_cell!r} / {experiment!r}")


def test_every_referenced_image_exists(built) -> None:
    root, _, written = built
    out = root / "reports"
    html = written.html.read_text()
    md = written.markdown.read_text()
    html_imgs = re.findall(r'<img src="([^"]+)"', html)
    md_imgs = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    # Per run experiment: grid, 3 class rows, 2 soft-label rows, 2 completions × (original, context,
    # sample), 2 bits maps = 14; × 3, + 3 overlaid curve plots (2 paper tables, 1 dataset) + 1 map.
    assert len(html_imgs) == 46 and sorted(html_imgs) == sorted(md_imgs)
    assert "figures/receptive_fields/pixelcnn.png" in html_imgs
    assert "no_such_model: not registered" in html and "no_such_model: not registered" in md
    for rel in html_imgs:
        assert not rel.startswith(("/", "..")), rel  # relative, inside reports/: opens from disk
        assert (out / rel).is_file() and (out / rel).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", rel
    assert set(written.figures) == {out / rel for rel in html_imgs}


def test_rows_not_run_say_so_and_carry_no_number(built) -> None:
    _, _, written = built
    html = written.html.read_text()
    row = _row(html, "Row LSTM", "cifar_row_lstm")
    assert "not run" in row and "3.07" in row  # the paper figure, and no figure of ours
    assert not re.search(r"[+-]\d", row)  # no difference computed
    unconfigured = _row(html, "Diagonal BiLSTM", "not configured")
    assert "not run" in unconfigured
    assert "*not run*" in written.markdown.read_text()


def test_run_row_shows_paper_ours_difference_and_compute(built) -> None:
    _, _, written = built
    row = _row(written.html.read_text(), "PixelCNN", "bmnist_pixelcnn")
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row, flags=re.S)
    assert cells[2] == "81.30" and cells[3] == "85.30" and cells[4] == "+4.00"
    # last-epoch train loss 0.16 bpd converted to nats over 784 binary pixels
    assert cells[6] == f"{0.16 * BMNIST_DIMS * LN2:.2f}"
    assert cells[7:11] == ["12.3 k", "2 epochs, batch 16", "90 s", "cpu"]
    lineage = cells[11]
    assert "evaluate " in lineage and "commit 01234567" in lineage
    assert f"data {tracking.dataset_digest(META)[:8]}" in lineage
    assert "STALE" not in lineage and "not checked" not in lineage


def test_cited_baselines_are_figures_not_runs(built) -> None:
    _, _, written = built
    html = written.html.read_text()
    cited = [("NADE", "88.33"), ("DRAW", "≤ 80.97"), ("NICE", "4.48")]
    for label, value in cited:
        row = _row(html, label + " (cited)", "—")
        assert value in row and ">cited<" in row
    # PixelSNAIL has an experiment behind it now (issue 25): its row names the paper and is not "cited"
    assert "PixelSNAIL [Chen et al. 2018]" in html and "PixelSNAIL [Chen et al. 2018] (cited)" not in html


def test_stale_row_is_flagged_with_reason(built) -> None:
    _, _, written = built
    html = written.html.read_text()
    row = _row(html, "1 layer", "depth_1")
    assert "STALE: evaluate, train, sample: params changed since it ran (model_args.layers)" in row
    assert 'class="num stale"' in row and "1 stale" in html
    md_row = next(ln for ln in written.markdown.read_text().splitlines() if ln.startswith("| 1 layer |"))
    assert "**0.221** ⚠" in md_row and "STALE" in md_row  # measured on valid = the paper's split


def test_other_experiments_table(built) -> None:
    _, _, written = built
    md = written.markdown.read_text()
    line = next(ln for ln in md.splitlines() if ln.startswith("| seed004 |"))
    assert "| 90.00 |" in line and f"| {90 / (BMNIST_DIMS * LN2):.3f} |" in line and "| 10000 |" in line


def test_data_digest_change_marks_rows_stale(tmp_path: Path, store_uri: str) -> None:
    params = write_fixture_outputs(tmp_path, store_uri)
    meta = {**META, "sha256": {**META["sha256"], "test": "d" * 64}}
    _write_json(tmp_path / "data" / "processed" / "binarized_mnist" / "meta.json", meta)
    html = build_report(tmp_path, params, tmp_path / "reports").html.read_text()
    row = _row(html, "PixelCNN", "bmnist_pixelcnn")
    assert "STALE: evaluate, train, sample: dataset changed since it ran" in row


def test_misspelt_reference_row_names_the_valid_rows(tmp_path: Path) -> None:
    params = write_fixture_outputs(tmp_path)
    params["experiments"]["seed004"]["reference"] = {"table": "pixelrnn_t3_depth", "row": "1 layer"}
    with pytest.raises(KeyError, match="rows are: '1', '2', '3'"):
        build_report(tmp_path, params, tmp_path / "reports")


def test_malformed_metrics_is_a_clear_error(tmp_path: Path) -> None:
    params = write_fixture_outputs(tmp_path)
    _write_json(tmp_path / "metrics" / "seed004.json", {"test_bits_per_dim": 1.0})
    with pytest.raises(ValueError, match=r"seed004.json lacks test_nats_per_image, n_images"):
        build_report(tmp_path, params, tmp_path / "reports")


def _stage_ready(params: dict[str, Any]) -> dict[str, Any]:
    """The fixture params completed into a file the params schema accepts (stages validate it first)."""
    p = copy.deepcopy(params)
    p["sources"] = {"bm": {"kind": "amat"}, "c10": {"kind": "torchvision_cifar10"}}
    p["datasets"] = {"binarized_mnist": {"source": "bm", "levels": 2, "seed": 0},
                     "cifar10": {"source": "c10", "levels": 256, "seed": 0, "valid_size": 5000}}
    p["experiments"]["seed004"]["model"] = "seed004_pixelcnn"
    p["sample"].update(per_row=4, n_completions=4)
    p["tracking"] = {"experiment_name": "report-test"}
    return p


def test_stage_script_writes_report(tmp_path: Path) -> None:
    params = _stage_ready(write_fixture_outputs(tmp_path))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    def stage() -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(REPO / "stages" / "report.py"), "--params", "params.yaml"],
            cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        )

    res = stage()  # a model name the registry does not know is a params error, before any work
    assert res.returncode == 1
    assert "report.receptive_field.models[1]: unknown model 'no_such_model'" in res.stderr
    assert not (tmp_path / "reports").exists()
    params["report"]["receptive_field"]["models"] = ["pixelcnn"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    res = stage()
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "reports" / "index.html").is_file() and (tmp_path / "reports" / "README.md").is_file()
    assert "46 figures" in res.stdout
    # every output dvc.yaml declares for the stage is there (DVC fails the stage on a missing one)
    outs = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["report"]["outs"]
    declared = [next(iter(o)) if isinstance(o, dict) else o for o in outs]
    assert [p for p in declared if not (tmp_path / p).exists()] == []


def test_changed_keys_compares_flattened_configs() -> None:
    recorded = tracking.flatten({"model": "m", "model_args": {"layers": 2, "hidden": 8}, "epochs": 3})
    assert changed_keys(recorded, {"model": "m", "model_args": {"layers": 2, "hidden": 8}, "epochs": 3}) == []
    now = {"model": "m", "model_args": {"layers": 3}, "epochs": 3, "conditional": True}
    assert changed_keys(recorded, now) == ["conditional", "model_args.hidden", "model_args.layers"]


def test_missing_tracking_store_is_reported_not_created(tmp_path: Path) -> None:
    params = write_fixture_outputs(tmp_path)  # pointers name tmp_path/mlflow.db, which does not exist
    html = build_report(tmp_path, params, tmp_path / "reports").html.read_text()
    assert "not checked: evaluate, train, sample: tracking store" in _row(html, "PixelCNN", "bmnist_pixelcnn")
    assert not (tmp_path / "mlflow.db").exists()


def test_mlflow_links_only_for_http_servers() -> None:
    ptr = RunPointer("train", "abc", "sqlite:////x/mlflow.db", "pixelzoo", "train@x")
    assert ptr.url is None
    ptr = RunPointer("train", "abc", "https://mlflow.lab/", "pixelzoo", "train@x", experiment_id="7")
    assert ptr.url == "https://mlflow.lab/#/experiments/7/runs/abc"


def test_reference_data_is_consistent() -> None:
    ids = [t.id for t in reference.TABLES]
    assert len(ids) == len(set(ids))
    for t in reference.TABLES:
        labels = [r.label for r in t.rows]
        assert len(labels) == len(set(labels)), t.id
        for r in t.rows:
            assert r.value > 0 and r.relation in {"=", "≤", "≈"}
            assert r.train is None or r.train < r.value, (t.id, r.label)  # every paper train figure is lower
    assert reference.table("cifar10_test").row("Diagonal BiLSTM").train == 2.93
    with pytest.raises(KeyError, match="known tables: pixelrnn_t4_bmnist"):
        reference.table("nope")


def test_samples_are_labelled_and_completions_side_by_side(built) -> None:
    _, _, written = built
    html = written.html.read_text()
    for label in ("class 0", "class 2", "½ class 1 + ½ class 7", "½ class 0 + ½ class 2"):
        assert f"<td>{label}</td>" in html, label
    assert "<th>Original</th><th>Context given</th><th>Model&#x27;s completion</th>" in html
    # 28×28 images upscaled 3× (84 px) and shown at natural size: crisp and >= 64 CSS px
    m = re.search(r'<img src="figures/bmnist_pixelcnn/samples/completion_0_context.png"[^>]*>', html)
    assert m and 'width="84" height="84" data-unit="84"' in m.group(0)


def test_banner_says_profile_and_whether_numbers_are_paper_numbers(tmp_path: Path) -> None:
    params = write_fixture_outputs(tmp_path)
    html = build_report(tmp_path, params, tmp_path / "reports").html.read_text()
    assert "Profile: not declared" in html and "no `profile:` section" in html
    params["profile"] = {"name": "ci", "description": "tiny CPU models", "paper_numbers": False}
    written = build_report(tmp_path, params, tmp_path / "reports")
    html, md = written.html.read_text(), written.markdown.read_text()
    assert "Profile: ci" in html and "These are NOT paper numbers" in html and "tiny CPU models" in html
    assert "28×28, 2 levels, 50000 train / 10000 test images" in html and "1–2 training epochs" in html
    assert "> **Profile: ci**" in md and "NOT paper numbers" in md


def test_gate_verdict_per_row(tmp_path: Path) -> None:
    params = write_fixture_outputs(tmp_path)
    bpd = 85.30 / (BMNIST_DIMS * LN2)
    _write_json(tmp_path / "ci" / "baseline.json", {
        "recorded_at": "2026-11-22", "git_commit": "abc", "reason": "first", "environment": {},
        "experiments": {"bmnist_pixelcnn": {"test_bits_per_dim": bpd + 0.01},
                        "seed004": {"test_bits_per_dim": 90.0 / (BMNIST_DIMS * LN2) - 0.2}}})
    params["regression"] = {"tolerance_bits_per_dim": 0.05}
    html = build_report(tmp_path, params, tmp_path / "reports").html.read_text()
    assert "NLL gate: FAILED — 1 of 2 experiments within ± 0.05 bits/dim" in html
    ok = re.search(r"<tr><td>bmnist_pixelcnn</td>.*?</tr>", html).group(0)
    worse = re.search(r"<tr><td>seed004</td><td class=\"num\">.*?</tr>", html).group(0)
    assert ">ok<" in ok and "-0.0100" in ok and ">WORSE<" in worse and "+0.2000" in worse


def test_chain_links_to_mlflow_ui_and_checks_the_checkpoint(built, store_uri: str) -> None:
    root, params, written = built
    row = _row(written.html.read_text(), "PixelCNN", "bmnist_pixelcnn")
    ptr = json.loads((root / "outputs" / "bmnist_pixelcnn" / "evaluate" / "mlflow_run.json").read_text())
    assert re.search(rf'href="http://127.0.0.1:5000/#/experiments/\d+/runs/{ptr["run_id"]}">→ evaluate', row)
    sha = integrity.file_sha256(root / "outputs" / "bmnist_pixelcnn" / "train" / "model.pt")
    assert f"model.pt sha256 {sha[:12]} (evaluate ✓, sample ✓)" in row


def test_retrained_checkpoint_marks_row_stale(tmp_path: Path, store_uri: str) -> None:
    params = write_fixture_outputs(tmp_path, store_uri)
    (tmp_path / "outputs" / "seed004" / "train" / "model.pt").write_bytes(b"retrained")
    md = build_report(tmp_path, params, tmp_path / "reports").markdown.read_text()
    line = next(ln for ln in md.splitlines() if ln.startswith("| seed004 |"))
    assert "STALE: evaluated or sampled another checkpoint" in line and "evaluate used " in line


def test_paper_tables_without_experiments_are_folded(built) -> None:
    _, _, written = built
    html = written.html.read_text()
    assert "<details><summary>Row LSTM, 12 layers: residual and skip connections" in html
    assert html.index("Paper tables not reproduced") > html.index("Receptive fields")


def test_completion_caveat_of_the_sample_stage_is_on_the_figure(tmp_path: Path) -> None:
    """A model whose completions are inexact (multi-scale) says so in completions.txt; the report shows it."""
    params = write_fixture_outputs(tmp_path)
    html = build_report(tmp_path, params, tmp_path / "reports").html.read_text()
    assert "Caveat:" not in html
    samples = next(tmp_path.glob("outputs/*/samples/samples.npz")).parent
    (samples / "completions.txt").write_text("approximate for this model\n")
    html = build_report(tmp_path, params, tmp_path / "reports").html.read_text()
    assert "Caveat: approximate for this model" in html
