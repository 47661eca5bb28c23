"""DVC stage ``evaluate@<exp>``: exact NLL of the best checkpoint on every image of the eval split.

Writes ``metrics/<exp>.json`` (committed, ``cache: false``), the MLflow run pointer (the run tagged
with the checkpoint's sha256) and, in ``outputs/<exp>/evaluate/``, the per-sub-pixel bits map:
``bits_map.npz`` and its pictures ``bits_map.png`` and ``bits_examples.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# Import the pixelzoo of this tree (also in `dvc exp run` and profile copies), not the installed one.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pixelzoo import safety  # noqa: E402
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

    tracking.connect()  # MLflow loads in the tracking process while this one imports torch ...
    import matplotlib.figure  # noqa: F401 - ... and matplotlib for the bits-map figures (0.4 s)

    from pixelzoo import checkpoint, model_registry, training
    from pixelzoo.device import pick_device
    from pixelzoo.evaluation import evaluate_with_map, save_bits_map_figures
    from pixelzoo.pipeline.settings import load_checked, stage_config

    params = load_checked()
    cfg = stage_config(params, args.experiment, "evaluate")
    split = cfg.get("eval_split", "test")
    data = layout.data_dir(cfg["dataset"])
    out = layout.stage_dir(args.experiment, "evaluate")
    device = pick_device(cfg["evaluate"].get("device", "auto"))
    meta, splits = training.load_splits(data, (split,))  # missing or corrupt inputs stop us here
    train_run, recorded = tracking.train_record(args.experiment)
    model, ckpt = checkpoint.load_trained(  # a checkpoint changed since its train run is an error here
        layout.stage_dir(args.experiment, "train") / "model.pt", device, expected_sha256=recorded
    )
    read = {tracking.TAG_CHECKPOINT: ckpt["sha256"], tracking.TAG_TRAIN_RUN: train_run}

    with tracking.stage_run(
        args.experiment, "evaluate", cfg, meta, data, {split: splits[split].sha256}, out,
        params["tracking"]["experiment_name"], tags=read,
    ) as run:
        resume_gc()
        x, y = splits[split].x, splits[split].y
        result, bits = evaluate_with_map(
            model, x, y if cfg.get("conditional") else None, int(cfg["evaluate"]["batch_size"]), device
        )
        bits.save(run.out_dir / "bits_map.npz")
        title = f"{args.experiment}\n{split} split, {result['n_images']} images"
        for png in save_bits_map_figures(bits, int(meta["levels"]), run.out_dir, title).values():
            run.log_artifact(png, artifact_path="bits_map")
        metrics = {
            "experiment": args.experiment,
            "dataset": cfg["dataset"],
            "model": cfg["model"],
            "split": split,
            "test_nats_per_image": result["nats_per_image"],
            "test_bits_per_dim": result["bits_per_dim"],
            "n_images": result["n_images"],
            "n_params": ckpt["n_params"],
        }
        tmp = run.out_dir / "metrics.json"  # moved to metrics/<exp>.json only once the run has finished
        safety.write_text_atomic(tmp, json.dumps(metrics, indent=2) + "\n")  # a full disk: one message
        run.publish_file(tmp, layout.metrics_path(args.experiment))
        kill_point("evaluate")  # crash tests: metrics written, the run and its pointer not finished
        run.log_metrics(
            {k: float(metrics[k]) for k in ("test_nats_per_image", "test_bits_per_dim", "n_images")}
        )
        if split == "test":  # the registry alias `best` ranks versions by their test bits/dim
            model_registry.promote_if_best(run, args.experiment, train_run, result["bits_per_dim"])
    print(
        f"{args.experiment}: {split} {result['bits_per_dim']:.4f} bits/dim, "
        f"{result['nats_per_image']:.3f} nats/image over {result['n_images']} images"
    )


if __name__ == "__main__":
    raise SystemExit(run_main(f"evaluate@{(sys.argv[1:] or ['?'])[0]}", main))
