"""Figures of the report: learning curves, copied sample grids, receptive-field / blind-spot maps.

Every figure is written under ``<out>/figures/`` and referenced by a path relative to ``<out>``, so the
page opens from disk and renders on GitHub.
"""

from __future__ import annotations

import importlib
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402


@dataclass(frozen=True)
class Figure:
    """A PNG under the report directory and its caption."""

    path: str  # relative to the report directory, forward slashes
    caption: str


def learning_curve(
    history: dict[str, Any], title: str, dest: Path, out_dir: Path, paper_bpd: float | None = None
) -> Figure:
    """Train and validation bits/dim against optimizer step, from ``history.json``."""
    epochs = history["epochs"]
    steps = [int(e["steps"]) for e in epochs]
    fig, ax = plt.subplots(figsize=(4.2, 3.0), dpi=110)
    style = {"marker": "o", "markersize": 3} if len(steps) < 30 else {}
    ax.plot(steps, [float(e["train_bits_per_dim"]) for e in epochs], label="train (epoch mean)", **style)
    ax.plot(steps, [float(e["valid_bits_per_dim"]) for e in epochs], label="valid", **style)
    if paper_bpd is not None:
        ax.axhline(paper_bpd, color="0.4", linestyle="--", linewidth=1, label=f"paper {paper_bpd:.2f}")
    ax.set_xlabel("step")
    ax.set_ylabel("bits/dim")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    dest.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(dest)
    plt.close(fig)
    return Figure(dest.relative_to(out_dir).as_posix(), f"{title}: bits/dim vs step")


def copy_figure(src: Path, dest: Path, out_dir: Path, caption: str) -> Figure:
    """Copy a stage's PNG into the report so the report does not reach into ``outputs/``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    return Figure(dest.relative_to(out_dir).as_posix(), caption)


def receptive_fields(
    models: Sequence[str], spec: dict[str, Any], fig_dir: Path, out_dir: Path
) -> tuple[list[Figure], list[str]]:
    """Receptive-field / blind-spot maps of each model at its tiny args, drawn by :mod:`pixelzoo.audit`.

    ``spec``: ``channels``, ``levels``, ``size`` (image height = width) of the audited input. Returns
    (figures, missing); ``missing`` says for each model not drawn why (not registered yet, audit module
    absent, or the audit failed, with its error) so the page lists it instead of showing a stand-in.
    """
    from pixelzoo.models import registry

    try:
        audit = importlib.import_module("pixelzoo.audit")
    except ModuleNotFoundError as err:
        if err.name != "pixelzoo.audit":
            raise
        return [], [f"{m}: pixelzoo.audit not available" for m in models]
    channels, levels = int(spec.get("channels", 1)), int(spec.get("levels", 2))
    size = int(spec.get("size", 9))
    known = set(registry.registered())
    figures, missing = [], []
    for name in models:
        if name not in known:
            missing.append(f"{name}: not registered")
            continue
        dest = fig_dir / "receptive_fields" / f"{name}.png"
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            result = audit.audit(name, channels, levels, size, size)
        except Exception as err:  # noqa: BLE001 - shown on the page; the audit tests own the failure
            missing.append(f"{name}: audit failed ({type(err).__name__}: {err})")
            continue
        audit.render_receptive_field(result, dest, title=f"{name} (tiny args)")
        s = result.summary()
        figures.append(Figure(
            dest.relative_to(out_dir).as_posix(),
            f"{name}: {s['n_blind_spot']} blind-spot and {s['n_leaks']} leaking dependencies "
            f"over all {size}×{size} outputs",
        ))
    return figures, missing
