"""The set-up every tracked stage shares, so that ``stages/<name>.py`` reads as its recipe.

- :func:`start`: the argument, the params precheck, the GC pause and the tracking process, all before
  the stage imports torch (``--help`` and a params mistake answer at once, MLflow loads meanwhile).
- :func:`inputs`: params as checked, the stage's resolved config, its data and output folders.
- :func:`trained`: for the stages that read a trained model: the device, the data splits, and the
  checkpoint checked against the sha256 its train run recorded, with the tags that name both.
- :func:`run`: the stage's MLflow run (:func:`pixelzoo.pipeline.tracking.client.stage_run`).
"""

from __future__ import annotations

import argparse
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pixelzoo.pipeline.startup import pause_gc, reuse_freed_memory


def start(doc: str | None, connect: bool = True) -> str:
    """Parse ``experiment``, precheck params.yaml for it and pause the GC until the run has started
    (:mod:`pixelzoo.pipeline.startup`); ``connect``: start the tracking process now. Returns the key."""
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("experiment", help="key of params.yaml `experiments`")
    experiment = parser.parse_args().experiment
    from pixelzoo.pipeline.settings import precheck

    precheck("params.yaml", "experiments", experiment)  # a params mistake stops here: no torch, no store
    pause_gc()
    reuse_freed_memory()  # each step's maps reuse the last step's pages (no page faults per step)
    if connect:
        from pixelzoo.pipeline.tracking import client as tracking

        tracking.connect()  # MLflow loads in the tracking process while the stage imports torch
    return experiment


@dataclass(frozen=True)
class Inputs:
    experiment: str
    stage: str
    params: dict[str, Any]
    cfg: dict[str, Any]  # the experiment as resolved for this stage (pipeline.settings.stage_config)
    data: Path  # its processed dataset
    out: Path  # the stage's output folder


def inputs(experiment: str, stage: str) -> Inputs:
    from pixelzoo.pipeline import layout
    from pixelzoo.pipeline.settings import load_checked, stage_config

    params = load_checked()
    cfg = stage_config(params, experiment, stage)
    data, out = layout.data_dir(cfg["dataset"]), layout.stage_dir(experiment, stage)
    return Inputs(experiment, stage, params, cfg, data, out)


@dataclass
class Trained:
    model: Any  # torch.nn.Module in eval mode, on ``device``
    ckpt: dict[str, Any]
    device: Any  # torch.device
    meta: dict[str, Any]
    splits: dict[str, Any]  # name -> data.splits.Split
    train_run: str
    tags: dict[str, str]  # which checkpoint bytes were read, and which train run wrote them


def trained(inp: Inputs, splits: tuple[str, ...], device: str) -> Trained:
    """Missing or corrupt inputs stop here, and a checkpoint changed since its train run is an error."""
    from pixelzoo import checkpoint
    from pixelzoo.data.splits import load_splits
    from pixelzoo.device import pick_device
    from pixelzoo.pipeline import layout
    from pixelzoo.pipeline.tracking import client as tracking

    where = pick_device(device)
    meta, loaded = load_splits(inp.data, splits)
    train_run, recorded = tracking.train_record(inp.experiment)
    path = layout.stage_dir(inp.experiment, "train") / "model.pt"
    model, ckpt = checkpoint.load_trained(path, where, expected_sha256=recorded)
    checkpoint.check_data_fits(ckpt, meta, path)  # e.g. the dataset's levels changed since training
    tags = {tracking.TAG_CHECKPOINT: ckpt["sha256"], tracking.TAG_TRAIN_RUN: train_run}
    return Trained(model, ckpt, where, meta, loaded, train_run, tags)


def run(inp: Inputs, meta: dict[str, Any], digests: dict[str, str],
        tags: dict[str, str] | None = None) -> AbstractContextManager[Any]:
    """The stage's MLflow run over ``inp.out`` (its outputs are published when it finishes)."""
    from pixelzoo.pipeline.tracking import client as tracking

    return tracking.stage_run(inp.experiment, inp.stage, inp.cfg, meta, inp.data, digests, inp.out,
                              inp.params["tracking"]["experiment_name"], tags=tags)
