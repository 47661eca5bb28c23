"""DVC stage ``sample@<exp>``: sample grids from the best checkpoint (``sample.method``: cached | naive).

Writes ``outputs/<exp>/samples/``: grid.png (unconditional), completions.png (top half of test
images given, bottom half sampled) and, for class-conditional models, classes.png (one row per
class) and soft_labels.png (0.5/0.5 soft labels for the class pairs of seed 004), and samples.npz: the
same images as level arrays with what labels them (class of each classes.png row, the soft-label pairs,
the completions' originals and known-pixel mask), for the report. The run is tagged with the checkpoint's
sha256.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Import the pixelzoo of this tree (also in `dvc exp run` and profile copies), not the installed one.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pixelzoo.errors import kill_point, run_main  # noqa: E402
from pixelzoo.pipeline.startup import pause_gc, resume_gc  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("experiment", help="key of params.yaml `experiments`")
    args = parser.parse_args()
    from pixelzoo.pipeline.settings import precheck

    precheck("params.yaml", "experiments", args.experiment)  # a params mistake stops here: no torch, no store
    # Heavy imports (torch, the models) only now: `--help`, argument and params errors answer at once.
    pause_gc()  # until the run has started (pixelzoo.pipeline.startup)
    from pixelzoo.pipeline import layout
    from pixelzoo.pipeline.tracking import client as tracking

    tracking.connect()  # MLflow loads in the tracking process while this one imports torch
    import numpy as np
    import torch

    from pixelzoo import checkpoint, sampling, training
    from pixelzoo.device import pick_device
    from pixelzoo.pipeline.settings import load_checked, stage_config

    params = load_checked()
    cfg = stage_config(params, args.experiment, "sample")
    opts = cfg["sample"]
    data = layout.data_dir(cfg["dataset"])
    out = layout.stage_dir(args.experiment, "sample")
    device = pick_device(opts.get("device", "auto"))
    meta, splits = training.load_splits(data, ("test",))  # missing or corrupt inputs stop us here
    train_run, recorded = tracking.train_record(args.experiment)
    model, ckpt = checkpoint.load_trained(  # a checkpoint changed since its train run is an error here
        layout.stage_dir(args.experiment, "train") / "model.pt", device, expected_sha256=recorded
    )
    read = {tracking.TAG_CHECKPOINT: ckpt["sha256"], tracking.TAG_TRAIN_RUN: train_run}
    shape = checkpoint.data_shape(meta)
    levels, per_row, seed = shape["levels"], int(opts["per_row"]), int(opts["seed"])
    method = opts.get("method", "cached")  # checked by the params schema (pixelzoo.pipeline.settings.Sample)
    conditional = bool(cfg.get("conditional"))

    def draw(figure: int, n: int, **kw: object) -> torch.Tensor:
        # One generator per figure: adding a figure never changes the others.
        return sampling.sample(
            model, n, **shape, generator=torch.Generator().manual_seed(seed + figure), method=method, **kw
        )

    with tracking.stage_run(
        args.experiment, "sample", cfg, meta, data, {"test": splits["test"].sha256}, out,
        params["tracking"]["experiment_name"], tags=read,
    ) as run:
        resume_gc()
        # Unlabelled data (the fixed binarized MNIST) has n_classes null; only conditional models need it.
        n_classes = int(meta["n_classes"]) if conditional else 0
        figures = {}
        # Unconditional grid; a conditional model gets uniform soft labels (no class preferred).
        y_grid = torch.full((int(opts["n_grid"]), n_classes), 1.0 / n_classes) if conditional else None
        figures["grid.png"] = draw(0, int(opts["n_grid"]), y=y_grid)
        test = splits["test"]
        n_comp = min(int(opts["n_completions"]), len(test.x))
        figures["completions.png"] = draw(
            1,
            n_comp,
            y=test.y[:n_comp] if conditional else None,
            x_init=test.x[:n_comp].long(),
            known=sampling.top_half_known(shape["channels"], shape["height"], shape["width"]),
        )
        if conditional:
            figures["classes.png"] = draw(2, n_classes * per_row, y=sampling.class_rows(n_classes, per_row))
            figures["soft_labels.png"] = draw(
                3,
                len(opts["soft_label_pairs"]) * per_row,
                y=sampling.soft_label_rows(opts["soft_label_pairs"], n_classes, per_row),
            )
        note = getattr(model, "completion_note", None)  # a model whose completions are not exact says so
        for name, images in figures.items():
            sampling.save_grid(images, levels, run.out_dir / name, nrow=per_row)  # renamed to `out` last
            run.log_artifact(run.out_dir / name, artifact_path="samples")
        known = sampling.top_half_known(shape["channels"], shape["height"], shape["width"])
        labels = {"completions_originals": test.x[:n_comp], "completions_known": known}
        if conditional:
            labels["classes_labels"] = sampling.class_rows(n_classes, per_row)
            labels["soft_labels_pairs"] = torch.tensor(opts["soft_label_pairs"])
        arrays = {name.removesuffix(".png"): images for name, images in figures.items()} | labels
        np.savez_compressed(run.out_dir / "samples.npz", levels=levels, per_row=per_row,
                            **{k: v.cpu().numpy() for k, v in arrays.items()})
        if note:
            (run.out_dir / "completions.txt").write_text(note + "\n")
            run.log_artifact(run.out_dir / "completions.txt", artifact_path="samples")
        kill_point("sample")  # crash tests: every figure saved, none in place, no pointer yet


if __name__ == "__main__":
    raise SystemExit(run_main(f"sample@{(sys.argv[1:] or ['?'])[0]}", main))
