"""DVC stage ``sample@<exp>``: sample grids from the best checkpoint (``sample.method``: cached | naive).

Writes ``outputs/<exp>/samples/``: grid.png (unconditional), completions.png (top half of test
images given, bottom half sampled) and, for class-conditional models, classes.png (one row per
class) and soft_labels.png (0.5/0.5 soft labels for the class pairs of seed 004), and samples.npz: the
same images as level arrays with what labels them (class of each classes.png row, the soft-label pairs,
the completions' originals and known-pixel mask), for the report. The run is tagged with the checkpoint's
sha256.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

# Import the pixelzoo of this tree (also in `dvc exp run` and profile copies), not the installed one.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pixelzoo.errors import kill_point, run_main  # noqa: E402
from pixelzoo.pipeline import stage  # noqa: E402
from pixelzoo.pipeline.startup import resume_gc  # noqa: E402


def main() -> None:
    experiment = stage.start(__doc__)
    # Heavy imports (torch, the models) only now: `--help`, argument and params errors answered at once.
    import torch  # noqa: F401 - while MLflow loads in the tracking process

    inp = stage.inputs(experiment, "sample")
    got = stage.trained(inp, ("test",), inp.cfg["sample"]["device"])
    with stage.run(inp, got.meta, {"test": got.splits["test"].sha256}, tags=got.tags) as run:
        resume_gc()
        figures, labels = draw_figures(got, inp.cfg)
        save_figures(run, got, inp.cfg["sample"], figures, labels)
        kill_point("sample")  # crash tests: every figure saved, none in place, no pointer yet


def draw_figures(got: Any, cfg: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The figures' images (name.png -> tensor) and what the report needs to read them (labels)."""
    import torch

    from pixelzoo import checkpoint, sampling

    opts, shape = cfg["sample"], checkpoint.data_shape(got.meta)
    per_row, seed, conditional = int(opts["per_row"]), int(opts["seed"]), bool(cfg["conditional"])
    method = opts["method"]

    def draw(figure: int, n: int, **kw: object) -> torch.Tensor:
        # One generator per figure: adding a figure never changes the others.
        return sampling.sample(
            got.model, n, **shape, generator=torch.Generator().manual_seed(seed + figure), method=method, **kw
        )

    # Unlabelled data (the fixed binarized MNIST) has n_classes null; only conditional models need it.
    n_classes = int(got.meta["n_classes"]) if conditional else 0
    figures = {}
    # Unconditional grid; a conditional model gets uniform soft labels (no class preferred).
    y_grid = torch.full((int(opts["n_grid"]), n_classes), 1.0 / n_classes) if conditional else None
    figures["grid.png"] = draw(0, int(opts["n_grid"]), y=y_grid)
    test = got.splits["test"]
    n_comp = min(int(opts["n_completions"]), len(test.x))
    known = sampling.top_half_known(shape["channels"], shape["height"], shape["width"])
    figures["completions.png"] = draw(
        1, n_comp, y=test.y[:n_comp] if conditional else None, x_init=test.x[:n_comp].long(), known=known
    )
    labels = {"completions_originals": test.x[:n_comp], "completions_known": known}
    if conditional:
        figures["classes.png"] = draw(2, n_classes * per_row, y=sampling.class_rows(n_classes, per_row))
        figures["soft_labels.png"] = draw(
            3,
            len(opts["soft_label_pairs"]) * per_row,
            y=sampling.soft_label_rows(opts["soft_label_pairs"], n_classes, per_row),
        )
        labels["classes_labels"] = sampling.class_rows(n_classes, per_row)
        labels["soft_labels_pairs"] = torch.tensor(opts["soft_label_pairs"])
    return figures, labels


def save_figures(run: Any, got: Any, opts: dict[str, Any], figures: dict[str, Any],
                 labels: dict[str, Any]) -> None:
    """The PNGs and ``samples.npz`` into the run's folder (renamed to the output last), as artifacts too."""
    import numpy as np

    from pixelzoo import sampling

    levels, per_row = int(got.meta["levels"]), int(opts["per_row"])
    for name, images in figures.items():
        sampling.save_grid(images, levels, run.out_dir / name, nrow=per_row)
        run.log_artifact(run.out_dir / name, artifact_path="samples")
    arrays = {name.removesuffix(".png"): images for name, images in figures.items()} | labels
    np.savez_compressed(run.out_dir / "samples.npz", levels=levels, per_row=per_row,
                        **{k: v.cpu().numpy() for k, v in arrays.items()})
    note = getattr(got.model, "completion_note", None)  # a model whose completions are not exact says so
    if note:
        (run.out_dir / "completions.txt").write_text(note + "\n")
        run.log_artifact(run.out_dir / "completions.txt", artifact_path="samples")


if __name__ == "__main__":
    raise SystemExit(run_main(f"sample@{(sys.argv[1:] or ['?'])[0]}", main))
