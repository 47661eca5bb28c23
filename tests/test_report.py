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

import pytest
import torch
import yaml
from mlflow.entities import Param
from torchvision.utils import save_image

from pixelzoo import config, tracking
from pixelzoo.report import build_report, reference
from pixelzoo.report.collect import RunPointer
from pixelzoo.report.lineage import changed_keys

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


def _record_run(uri: str, key: str, stage: str, cfg: dict[str, Any]) -> str:
    """An MLflow run with the tags and params pixelzoo.tracking.stage_run records."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("pixelzoo")
    exp_id = exp.experiment_id if exp else client.create_experiment("pixelzoo")
    tags = {"git.commit": "0123456789abcdef0123", "git.dirty": "false",
            tracking.TAG_CONFIG: config.config_digest(cfg), "dataset.sha256": tracking.dataset_digest(META)}
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
    for stage in ("train", "evaluate", "sample"):
        cfg = config.stage_config(params, key, stage)
        run_id = _record_run(uri, key, stage, cfg) if uri else f"{stage}{key}".ljust(32, "0")
        _write_json(root / tracking.stage_dir(key, stage) / "mlflow_run.json", {
            "run_id": run_id, "tracking_uri": uri or f"sqlite:///{root}/mlflow.db",
            "experiment_name": "pixelzoo", "run_name": f"{key}:{stage}",
        })
    gen = torch.Generator().manual_seed(0)
    for name, n in (("grid", 16), ("classes", 20), ("soft_labels", 10), ("completions", 8)):
        png = root / "outputs" / key / "samples" / f"{name}.png"
        save_image(torch.rand(n, 1, 28, 28, generator=gen), png, nrow=min(n, 10))


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
    # 4 sample kinds × 3 run experiments + 3 learning curves + 1 receptive field, in both renderings
    assert len(html_imgs) == 16 and sorted(html_imgs) == sorted(md_imgs)
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
    cited.append(("PixelSNAIL [Chen et al. 2018]", "2.85"))  # cited from a later paper, named
    for label, value in cited:
        row = _row(html, label + " (cited)", "—")
        assert value in row and ">cited<" in row


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
    assert "16 figures" in res.stdout


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
