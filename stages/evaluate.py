"""DVC stage ``evaluate@<exp>``: exact NLL of the best checkpoint on every image of the eval split.

Writes ``metrics/<exp>.json`` (committed, ``cache: false``), the MLflow run pointer (the run tagged
with the checkpoint's sha256) and, in ``outputs/<exp>/evaluate/``, the per-sub-pixel bits map:
``bits_map.npz`` and its pictures ``bits_map.png`` and ``bits_examples.png``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# Import the pixelzoo of this tree (also in `dvc exp run` and profile copies), not the installed one.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pixelzoo import safety  # noqa: E402
from pixelzoo.errors import kill_point, run_main  # noqa: E402
from pixelzoo.pipeline import stage  # noqa: E402
from pixelzoo.pipeline.startup import resume_gc  # noqa: E402


def main() -> None:
    experiment = stage.start(__doc__)
    # Heavy imports (torch, the models) only now: `--help`, argument and params errors answered at once.
    import matplotlib.figure  # noqa: F401 - matplotlib for the bits-map figures (0.4 s) while MLflow loads

    from pixelzoo import model_registry
    from pixelzoo.evaluation import evaluate_with_map, save_bits_map_figures
    from pixelzoo.pipeline import layout

    inp = stage.inputs(experiment, "evaluate")
    cfg, split = inp.cfg, inp.cfg["eval_split"]
    got = stage.trained(inp, (split,), cfg["evaluate"]["device"])
    with stage.run(inp, got.meta, {split: got.splits[split].sha256}, tags=got.tags) as run:
        resume_gc()
        x, y = got.splits[split].x, got.splits[split].y
        result, bits = evaluate_with_map(
            got.model, x, y if cfg["conditional"] else None, int(cfg["evaluate"]["batch_size"]),
            got.device,
        )
        bits.save(run.out_dir / "bits_map.npz")
        title = f"{experiment}\n{split} split, {result['n_images']} images"
        for png in save_bits_map_figures(bits, int(got.meta["levels"]), run.out_dir, title).values():
            run.log_artifact(png, artifact_path="bits_map")
        metrics = {
            "experiment": experiment,
            "dataset": cfg["dataset"],
            "model": cfg["model"],
            "split": split,
            "test_nats_per_image": result["nats_per_image"],
            "test_bits_per_dim": result["bits_per_dim"],
            "n_images": result["n_images"],
            "n_params": got.ckpt["n_params"],
        }
        tmp = run.out_dir / "metrics.json"  # moved to metrics/<exp>.json only once the run has finished
        safety.write_text_atomic(tmp, json.dumps(metrics, indent=2) + "\n")  # a full disk: one message
        run.publish_file(tmp, layout.metrics_path(experiment))
        kill_point("evaluate")  # crash tests: metrics written, the run and its pointer not finished
        run.log_metrics(
            {k: float(metrics[k]) for k in ("test_nats_per_image", "test_bits_per_dim", "n_images")}
        )
        if split == "test":  # the registry alias `best` ranks versions by their test bits/dim
            model_registry.promote_if_best(run, experiment, got.train_run, result["bits_per_dim"])
    print(
        f"{experiment}: {split} {result['bits_per_dim']:.4f} bits/dim, "
        f"{result['nats_per_image']:.3f} nats/image over {result['n_images']} images"
    )


if __name__ == "__main__":
    raise SystemExit(run_main(f"evaluate@{(sys.argv[1:] or ['?'])[0]}", main))
