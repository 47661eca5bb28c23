"""DVC stage ``train@<exp>``: train one experiment, keep its best checkpoint, record the MLflow run.

Recipe: parse -> validate params and read the data (a mistake fails here, before any work) -> re-run
under the experiment's ``launcher`` if it is not ``python`` -> open the tracking run (fails fast if the
store is unreachable) -> pixelzoo.training.train -> log the history -> drop the scratch checkpoint.
Under ``torchrun`` (DDP) only rank 0 tracks and writes.
"""

from __future__ import annotations

import os
import sys
from contextlib import nullcontext
from pathlib import Path

# Import the pixelzoo of this tree (also in `dvc exp run` and profile copies), not the installed one.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pixelzoo.errors import run_main  # noqa: E402
from pixelzoo.integrity import PidLock, file_sha256  # noqa: E402
from pixelzoo.pipeline import stage  # noqa: E402
from pixelzoo.pipeline.startup import resume_gc  # noqa: E402


def main() -> None:
    is_main = int(os.environ.get("RANK", "0")) == 0  # [DDP] torchrun sets RANK; only rank 0 tracks
    experiment = stage.start(__doc__, connect=is_main)
    # Heavy imports (torch, the models) only now: `--help`, argument and params errors answered at once,
    # and torch._dynamo, which the optimizer's first step imports (1.1 s), before the run starts
    import torch._dynamo  # noqa: F401

    from pixelzoo import checkpoint, model_registry, training
    from pixelzoo.data.splits import load_splits
    from pixelzoo.pipeline import launch, layout
    from pixelzoo.pipeline.tracking import client as tracking

    inp = stage.inputs(experiment, "train")
    params, cfg, data, out = inp.params, inp.cfg, inp.data, inp.out
    scratch = layout.scratch_dir(experiment)
    loaded = load_splits(data, ("train", "valid"))  # missing or corrupt data stops us here
    training.check_model(cfg, loaded[0])
    where = f"experiments.{experiment}.launcher"
    command = launch.relaunch_command(cfg["launcher"], __file__, sys.argv[1:], where)
    if command:  # [DDP] e.g. torchrun: check the store before any worker starts, then become the launcher
        tracking.init_store(params["tracking"]["experiment_name"])
        launch.relaunch(command)
    # One trainer per scratch folder: an orphaned train.py (its dvc parent killed) still holds it.
    lock = PidLock(scratch / "train.lock", f"train@{experiment}") if is_main else nullcontext()

    run_ctx = (
        stage.run(inp, loaded[0], {s: loaded[1][s].sha256 for s in ("train", "valid")})  # measured on read
        if is_main
        else nullcontext(None)
    )
    with lock, run_ctx as run:
        resume_gc()  # every rank: training runs with the collector on
        if run:  # CPU, memory (GPU where pynvml sees one), sampled by MLflow's monitor until the run ends
            model_registry.track_system_metrics(run, tracking.connect().call)
        written = run.out_dir if run else out  # a temp folder, renamed to `out` once the run finished
        history = training.train(
            cfg, data, written, scratch, log_metrics=run.log_metrics if run else None, loaded=loaded
        )
        if run:
            run.log_metrics(
                {
                    "best_valid_bits_per_dim": history["best_valid_bits_per_dim"],
                    "n_params": float(history["n_params"]),
                    "wall_seconds": history["wall_seconds"],
                }
            )
            run.set_tags({tracking.TAG_CHECKPOINT: file_sha256(written / "model.pt")})
            run.log_artifact(written / "history.json")
            # the best checkpoint as an MLflow model, registered as models:/<experiment>/<version>
            model_registry.log_trained_model(run, written / "model.pt", experiment,
                                             checkpoint.data_shape(loaded[0]), bool(cfg["conditional"]))
        if is_main:
            checkpoint.clear_scratch(scratch)  # only now: outputs and tracking are both complete


if __name__ == "__main__":
    raise SystemExit(run_main(f"train@{(sys.argv[1:] or ['?'])[0]}", main))
