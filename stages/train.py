"""DVC stage ``train@<exp>``: train one experiment, keep its best checkpoint, record the MLflow run.

Recipe: parse -> resolve params -> re-run under the experiment's ``launcher`` if it is not ``python``
-> open the tracking run (fails fast if the store is unreachable) -> pixelzoo.training.train -> log the
history -> drop the scratch checkpoint. Under ``torchrun`` (DDP) only rank 0 tracks and writes.
"""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import nullcontext
from pathlib import Path

# Import the pixelzoo of this tree (also in `dvc exp run` and profile copies), not the installed one.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pixelzoo.config import ParamsError, load_params  # noqa: E402
from pixelzoo.tracking import TrackingUnavailable  # noqa: E402  (light: mlflow loads lazily)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("experiment", help="key of params.yaml `experiments`")
    args = parser.parse_args()
    # Heavy imports (torch, the models) only now: `--help` and argument errors answer at once.
    from pixelzoo import launch, tracking, training
    from pixelzoo.data.datasets import load_meta

    params = load_params()
    cfg = training.stage_config(params, args.experiment, "train")
    where = f"experiments.{args.experiment}.launcher"
    command = launch.relaunch_command(cfg.get("launcher", "python"), __file__, sys.argv[1:], where)
    if command:  # [DDP] e.g. torchrun: check the store before any worker starts, then become the launcher
        tracking.init_store(params["tracking"]["experiment_name"])
        launch.relaunch(command)
    data = tracking.data_dir(cfg["dataset"])
    out = tracking.stage_dir(args.experiment, "train")
    scratch = tracking.scratch_dir(args.experiment)
    is_main = int(os.environ.get("RANK", "0")) == 0  # [DDP] torchrun sets RANK; only rank 0 tracks

    run_ctx = (
        tracking.stage_run(
            args.experiment,
            "train",
            cfg,
            load_meta(data),
            data,
            ["train", "valid"],
            out,
            params["tracking"]["experiment_name"],
        )
        if is_main
        else nullcontext(None)
    )
    with run_ctx as run:
        history = training.train(cfg, data, out, scratch, log_metrics=run.log_metrics if run else None)
        if run:
            run.log_metrics(
                {
                    "best_valid_bits_per_dim": history["best_valid_bits_per_dim"],
                    "n_params": float(history["n_params"]),
                    "wall_seconds": history["wall_seconds"],
                }
            )
            run.log_artifact(out / "history.json")
    if is_main:
        training.clear_scratch(scratch)  # only now: outputs and tracking are both complete


if __name__ == "__main__":
    try:
        main()
    except (ParamsError, TrackingUnavailable) as err:  # a setting to fix: no traceback
        raise SystemExit(f"train failed:\n{err}") from None
