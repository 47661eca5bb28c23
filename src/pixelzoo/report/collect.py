"""Gather what the pipeline wrote for each experiment (see docs/architecture.md, "Experiments and outputs").

Reads only files: ``metrics/<exp>.json``, ``outputs/<exp>/train/history.json``, the run pointers
``outputs/<exp>/{train,evaluate,samples}/mlflow_run.json`` and the sample PNGs. A missing file means the
stage has not run and is reported as such; a malformed file is an error naming the file and the key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pixelzoo import integrity
from pixelzoo.pipeline import layout, provenance
from pixelzoo.pipeline.settings import resolve_experiment
from pixelzoo.pipeline.tracking.client import RunPointer, read_pointer

METRIC_KEYS = ("test_nats_per_image", "test_bits_per_dim", "n_images")
EPOCH_KEYS = ("steps", "train_bits_per_dim", "valid_bits_per_dim")  # written by pixelzoo.training.train
SAMPLE_FIGURES = (
    ("grid", "unconditional samples"),
    ("classes", "class-conditional samples (one row per class)"),
    ("soft_labels", "soft-label interpolation between classes"),
    ("completions", "completions of occluded test images"),
)
BITS_FIGURES = ("bits_map", "bits_examples")  # written by stages/evaluate.py


@dataclass
class Experiment:
    """One ``experiments.<key>`` entry of params.yaml and everything its stages left on disk."""

    key: str
    entry: dict[str, Any]
    resolved: dict[str, Any]  # the entry with train_defaults merged under it (pixelzoo.pipeline.settings)
    metrics: dict[str, Any] | None = None
    history: dict[str, Any] | None = None
    pointers: dict[str, RunPointer] = field(default_factory=dict)
    samples: dict[str, Path] = field(default_factory=dict)
    samples_npz: Path | None = None  # the sampled arrays and their labels (stages/sample.py)
    bits_figures: dict[str, Path] = field(default_factory=dict)  # bits_map / bits_examples PNGs
    checkpoint_sha256: str | None = None  # of outputs/<exp>/train/model.pt as it is now
    lineage: provenance.Lineage | None = None
    mlflow_ui: str | None = None  # where run links of a local tracking store point (report.mlflow_ui)

    @property
    def model(self) -> str:
        return str(self.entry.get("model", "?"))

    @property
    def dataset(self) -> str:
        return str(self.entry.get("dataset", "?"))

    @property
    def reference(self) -> tuple[str, str] | None:
        ref = self.entry.get("reference")
        if not ref:
            return None
        if not isinstance(ref, dict) or "table" not in ref or "row" not in ref:
            raise ValueError(
                f"experiments.{self.key}.reference must be null or {{table: <id>, row: <label>}}, got {ref!r}"
            )
        return str(ref["table"]), str(ref["row"])

    @property
    def n_params(self) -> int | None:
        for src in (self.metrics, self.history):
            if src and src.get("n_params") is not None:
                return int(src["n_params"])
        return None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); re-run the stage that writes it") from err


def _require(obj: dict[str, Any], keys: tuple[str, ...], path: Path) -> None:
    missing = [k for k in keys if k not in obj]
    if missing:
        raise ValueError(
            f"{path} lacks {', '.join(missing)} (see docs/architecture.md); re-run the stage that writes it"
        )


def read_metrics(path: Path) -> dict[str, Any] | None:
    """``metrics/<exp>.json`` or None when evaluation has not run."""
    if not path.exists():
        return None
    metrics = _read_json(path)
    _require(metrics, METRIC_KEYS, path)
    return metrics


def read_history(path: Path) -> dict[str, Any] | None:
    """``history.json``: ``{"epochs": [{"epoch", "steps", "train_bits_per_dim", "valid_bits_per_dim",
    "wall_seconds"}, ...], "wall_seconds", "device", "n_params", ...}`` (see pixelzoo.training.train)."""
    if not path.exists():
        return None
    history = _read_json(path)
    _require(history, ("epochs",), path)
    for i, rec in enumerate(history["epochs"]):
        _require(rec, EPOCH_KEYS, path.with_name(f"{path.name}[epochs][{i}]"))
    return history


def collect(root: Path, params: dict[str, Any], store: provenance.RunStore | None = None) -> list[Experiment]:
    """Every experiment of ``params['experiments']`` with whatever outputs exist under ``root``.

    ``store`` reads the MLflow runs for lineage; None skips lineage (rows then say "not checked").
    """
    entries = params.get("experiments")
    if not isinstance(entries, dict):
        raise ValueError("params.yaml has no 'experiments' mapping; nothing to report")
    out = []
    for key, entry in entries.items():
        resolved = resolve_experiment(params, key)
        exp = Experiment(key=str(key), entry=dict(entry or {}), resolved=resolved)
        exp.metrics = read_metrics(root / layout.metrics_path(key))
        exp.history = read_history(root / layout.stage_dir(key, "train") / "history.json")
        for stage in layout.STAGE_DIRS:
            ptr = read_pointer(root / layout.stage_dir(key, stage) / layout.POINTER_NAME, stage)
            if ptr is not None:
                exp.pointers[stage] = ptr
        for name, _ in SAMPLE_FIGURES:
            png = root / layout.stage_dir(key, "sample") / f"{name}.png"
            if png.exists():
                exp.samples[name] = png
        npz = root / layout.stage_dir(key, "sample") / "samples.npz"
        exp.samples_npz = npz if npz.exists() else None
        for name in BITS_FIGURES:
            png = root / layout.stage_dir(key, "evaluate") / f"{name}.png"
            if png.exists():
                exp.bits_figures[name] = png
        ckpt = root / layout.stage_dir(key, "train") / "model.pt"
        exp.checkpoint_sha256 = integrity.file_sha256(ckpt) if ckpt.exists() else None
        if store is None:
            off = "lineage look-up switched off (report.mlflow: false)"
            exp.lineage = provenance.Lineage(unchecked=[off])
        else:
            exp.lineage = provenance.resolve(root, params, exp.key, exp.pointers, store)
        out.append(exp)
    return out
