"""Figures of the report: labelled sample strips, learning curves, bits maps, receptive-field maps.

Every figure is written under ``<out>/figures/`` and referenced by a path relative to ``<out>``, so the
page opens from disk and renders on GitHub. Images of the data are upscaled by an integer factor with
nearest-neighbour in the PNG itself (crisp in any viewer) until one image is at least ``MIN_TILE_PX``
pixels, and the page shows every PNG at its natural size.
"""

from __future__ import annotations

import importlib
import math
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from PIL import Image

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402


@dataclass(frozen=True)
class Figure:
    """A PNG under the report directory and its caption."""

    path: str  # relative to the report directory, forward slashes
    caption: str
    width: int | None = None  # natural size in pixels (the page shows it at that size)
    height: int | None = None
    unit_px: int | None = None  # pixel grids: natural size of one image of the grid


MIN_TILE_PX = 80  # one image of a grid, in pixels, after upscaling (the page test asks for >= 64)
GAP = 2  # pixels between images of a strip
UNKNOWN_RGB = (214, 96, 77)  # the hidden part of a completion's context


def _figure(dest: Path, out_dir: Path, caption: str, unit_px: int | None = None) -> Figure:
    with Image.open(dest) as im:
        w, h = im.size
    return Figure(dest.relative_to(out_dir).as_posix(), caption, w, h, unit_px)


def scale_for(height: int, width: int) -> int:
    """Integer nearest-neighbour factor that makes one H×W image at least MIN_TILE_PX on its short side."""
    return max(1, math.ceil(MIN_TILE_PX / min(height, width)))


def to_rgb(images: np.ndarray, levels: int, known: np.ndarray | None = None) -> np.ndarray:
    """Levels n×C×H×W (C = 1 or 3) -> uint8 n×H×W×3; sub-pixels outside ``known`` (C×H×W) painted."""
    x = np.asarray(images).astype(np.float64) * 255.0 / (levels - 1)
    rgb = np.repeat(x, 3, axis=1) if x.shape[1] == 1 else x
    rgb = np.clip(np.rint(rgb), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
    if known is not None:
        hidden = ~np.asarray(known, dtype=bool).all(0)  # a pixel is hidden if any of its channels is
        rgb[:, hidden] = UNKNOWN_RGB
    return rgb


def pixel_grid(
    images: np.ndarray, levels: int, dest: Path, out_dir: Path, caption: str, nrow: int | None = None,
    known: np.ndarray | None = None,
) -> Figure:
    """``images`` (n×C×H×W levels) as a grid of ``nrow`` per row, each upscaled to >= MIN_TILE_PX."""
    rgb = to_rgb(images, levels, known)
    n, h, w, _ = rgb.shape
    s = scale_for(h, w)
    nrow = nrow or n
    rows = math.ceil(n / nrow)
    th, tw = h * s, w * s
    canvas = np.full((rows * (th + GAP) - GAP, nrow * (tw + GAP) - GAP, 3), 255, dtype=np.uint8)
    for k in range(n):
        r, c = divmod(k, nrow)
        tile = rgb[k].repeat(s, axis=0).repeat(s, axis=1)
        canvas[r * (th + GAP) : r * (th + GAP) + th, c * (tw + GAP) : c * (tw + GAP) + tw] = tile
    dest.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas).save(dest)
    return _figure(dest, out_dir, caption, unit_px=min(th, tw))


def overlaid_curves(
    histories: Mapping[str, dict[str, Any]], title: str, dest: Path, out_dir: Path,
    paper: Mapping[str, float] | None = None,
) -> Figure:
    """Validation (solid) and training (dashed) bits/dim against step for several experiments in one plot.

    ``paper``: experiment -> the paper's bits/dim, drawn as a dotted line in the experiment's colour.
    """
    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=110)
    for k, (key, history) in enumerate(histories.items()):
        colour = f"C{k % 10}"
        epochs = history["epochs"]
        steps = [int(e["steps"]) for e in epochs]
        style = {"marker": "o", "markersize": 3} if len(steps) < 30 else {}
        ax.plot(steps, [float(e["valid_bits_per_dim"]) for e in epochs], color=colour, label=key, **style)
        ax.plot(steps, [float(e["train_bits_per_dim"]) for e in epochs], color=colour, linestyle="--",
                linewidth=1, alpha=0.8)
        if paper and key in paper:
            ax.axhline(paper[key], color=colour, linestyle=":", linewidth=1)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("bits/dim")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, title="solid: valid, dashed: train" + (", dotted: paper" if paper else ""),
              title_fontsize=7, loc="upper right")
    fig.tight_layout()
    dest.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(dest)
    plt.close(fig)
    return _figure(dest, out_dir, f"{title}: bits/dim against step")


def copy_figure(src: Path, dest: Path, out_dir: Path, caption: str) -> Figure:
    """Copy a stage's PNG into the report so the report does not reach into ``outputs/``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    return _figure(dest, out_dir, caption)


def receptive_fields(
    models: Sequence[str] | None, spec: dict[str, Any], fig_dir: Path, out_dir: Path
) -> tuple[list[Figure], list[str]]:
    """Structural receptive-field maps (:func:`pixelzoo.audit.reachability`) of ``models`` (None: all).

    ``spec``: ``channels``, ``levels``, ``size`` (image height = width). Each model is built deep enough to
    span the image (:func:`pixelzoo.audit.reach_args`). Returns (figures, missing); ``missing`` says for
    each model not drawn why, so the page lists it instead of showing a stand-in.
    """
    from pixelzoo.models import registry

    try:
        audit = importlib.import_module("pixelzoo.audit")
    except ModuleNotFoundError as err:
        if err.name != "pixelzoo.audit":
            raise
        return [], [f"{m}: pixelzoo.audit not available" for m in models or ()]
    channels, levels = int(spec.get("channels", 1)), int(spec.get("levels", 2))
    size = int(spec.get("size", 16))
    known = registry.registered()
    figures, missing = [], []
    for name in models or known:
        if name not in known:
            missing.append(f"{name}: not registered")
            continue
        dest = fig_dir / "receptive_fields" / f"{name}.png"
        args = audit.reach_args(name, size)
        try:
            result = audit.reachability(name, channels, levels, size, size)
        except Exception as err:  # noqa: BLE001 - shown on the page; the audit tests own the failure
            missing.append(f"{name}: audit failed ({type(err).__name__}: {err})")
            continue
        pixel = audit.default_pixel(size, size)
        depth = f", {args['layers']} layers" if "layers" in args else ""
        audit.render_receptive_field(result, dest, pixel=pixel, title=f"{name}{depth}, {size}×{size}")
        s = result.summary()
        figures.append(_figure(dest, out_dir, (
            f"{name}{depth}: pixel {pixel}. Over all outputs: {s['n_unseen_earlier']} unseen earlier "
            f"sub-pixels ({s['n_blind_spot']} in blind spots), {s['n_leaks']} leaks."
        )))
    return figures, missing
