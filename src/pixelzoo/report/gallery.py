"""The picture sections: labelled samples, per-pixel bits maps and overlaid learning curves.

Samples are drawn from the arrays the sample stage saves (``samples.npz``), not from its PNGs, so every
image is upscaled crisply and every row carries its label: the class of a class-conditional row, the
pair of a soft-label row, and for completions the original, the context the model was given (hidden
part painted) and the model's completion side by side.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pixelzoo import safety
from pixelzoo.report import figures
from pixelzoo.report.collect import Experiment
from pixelzoo.report.render import Cell, Table


def _class_names(root: Path, exp: Experiment, n: int) -> list[str]:
    meta = root / "data" / "processed" / exp.dataset / "meta.json"
    names = json.loads(meta.read_text()).get("class_names") if meta.exists() else None
    return [str(x) for x in names] if names and len(names) >= n else [f"class {k}" for k in range(n)]


def sample_blocks(root: Path, exp: Experiment, fig_dir: Path, out_dir: Path) -> list[Any]:
    """Blocks of one experiment's samples; [] when its sample stage has not run."""
    if exp.samples_npz is None:
        return []
    with np.load(exp.samples_npz) as z:
        a = {k: z[k] for k in z.files}
    levels, per_row = int(a["levels"]), int(a["per_row"])
    d = safety.under(fig_dir, exp.key, what=f"figures of experiment {exp.key!r}") / "samples"

    def grid(name: str, images: np.ndarray, caption: str, **kw: Any) -> figures.Figure:
        return figures.pixel_grid(images, levels, d / f"{name}.png", out_dir, caption, **kw)

    blocks: list[Any] = [f"{exp.key} ({exp.model} on {exp.dataset})"]
    row: list[figures.Figure] = []
    if "grid" in a:
        cond = " (uniform soft label over the classes)" if "classes" in a else ""
        row.append(grid("grid", a["grid"], f"{exp.key}: unconditional samples{cond}", nrow=per_row))
    blocks.append(row)
    if "classes" in a:
        names = _class_names(root, exp, int(a["classes_labels"].max()) + 1)
        labels = [names[int(c)] for c in a["classes_labels"][::per_row]]
        blocks.append(_labelled_rows(a["classes"], per_row, labels, "Class", grid, f"{exp.key} classes"))
    if "soft_labels" in a:
        names = _class_names(root, exp, int(a["soft_labels_pairs"].max()) + 1)
        labels = [f"½ {names[int(p)]} + ½ {names[int(q)]}" for p, q in a["soft_labels_pairs"]]
        blocks.append(_labelled_rows(a["soft_labels"], per_row, labels, "Soft label", grid,
                                     f"{exp.key} soft labels"))
    if "completions" in a:
        caveat = exp.samples_npz.with_name("completions.txt")  # from models whose completions are inexact
        blocks.append(_completions(a, grid, exp.key, caveat.read_text().strip() if caveat.exists() else ""))
    return blocks


def _labelled_rows(
    images: np.ndarray, per_row: int, labels: list[str], what: str, grid: Callable[..., figures.Figure],
    name: str,
) -> Table:
    rows = []
    for r, label in enumerate(labels):
        strip = images[r * per_row : (r + 1) * per_row]
        slug = f"{name.split()[-1].replace(' ', '_')}_{r}"
        rows.append([Cell(label), Cell("", fig=grid(slug, strip, f"{name}: {label}"))])
    return Table([what, f"{per_row} samples"], rows)


def _completions(
    a: dict[str, np.ndarray], grid: Callable[..., figures.Figure], key: str, caveat: str = ""
) -> Table:
    known = a["completions_known"]
    rows = []
    for r in range(len(a["completions"])):
        orig = a["completions_originals"][r : r + 1]
        rows.append([
            Cell(f"test image {r}"),
            Cell("", fig=grid(f"completion_{r}_original", orig, f"{key}: test image {r}")),
            Cell("", fig=grid(f"completion_{r}_context", orig, f"{key}: context given", known=known)),
            Cell("", fig=grid(f"completion_{r}_sample", a["completions"][r : r + 1], f"{key}: completion")),
        ])
    note = ("Context given: the original with the part the model did not see painted over; the model "
            "sampled that part, conditioned on the rest." + (f" Caveat: {caveat}" if caveat else ""))
    return Table(["Completion", "Original", "Context given", "Model's completion"], rows, note=note)


def bits_blocks(exp: Experiment, fig_dir: Path, out_dir: Path) -> list[Any]:
    """The evaluate stage's bits maps (mean over the split; a few test images beside their maps)."""
    captions = {
        "bits_map": f"{exp.key}: mean bits per sub-pixel over the evaluated split",
        "bits_examples": f"{exp.key}: test images beside the bits the model spends on each sub-pixel",
    }
    d = safety.under(fig_dir, exp.key, what=f"figures of experiment {exp.key!r}")
    figs = [
        figures.copy_figure(png, d / f"{name}.png", out_dir, captions[name])
        for name, png in exp.bits_figures.items()
    ]
    return [figs] if figs else []


def curve_groups(exps: list[Experiment], groups: dict[str, list[Experiment]]) -> dict[str, list[Experiment]]:
    """Experiments with a training history, by table (title -> experiments), empty groups dropped."""
    out = {}
    for title, members in groups.items():
        with_hist = [e for e in members if e.history and e.history["epochs"]]
        if with_hist:
            out[title] = with_hist
    return out
