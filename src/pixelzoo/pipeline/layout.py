"""Where the pipeline's things live: the repo root, the stage list and each stage's code (both read from
``dvc.yaml``, the one declaration), and the output paths every stage, lineage and the report build.

Each path built from a params name is refused (:class:`pixelzoo.safety.PathEscape`) if it leaves its
root: the second wall behind the schema's name check, before anything there is created, cleaned or
deleted.
"""

from __future__ import annotations

import functools
from pathlib import Path

import yaml

from pixelzoo import safety
from pixelzoo.errors import UserError
from pixelzoo.integrity import PROJECT_ROOT, checkout_root

POINTER_NAME = "mlflow_run.json"  # the run pointer each tracked stage leaves beside its outputs
# Where each tracked stage writes (docs/architecture.md).
STAGE_DIRS = {"train": "train", "evaluate": "evaluate", "sample": "samples"}


class NotARepository(UserError, RuntimeError):
    """A pipeline command was run outside a DVC/git checkout."""


def repo_root() -> Path:
    """:func:`pixelzoo.integrity.checkout_root`, or an error naming the folder outside any checkout."""
    root = checkout_root()
    if root is None:
        raise NotARepository(f"{Path.cwd()} is not inside a DVC/git repository; "
                             "run from the pixelzoo checkout")
    return root


@functools.cache
def _stages() -> dict[str, dict]:
    return yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]


def stages() -> tuple[str, ...]:
    """The stage names, in dvc.yaml's order."""
    return tuple(_stages())


def stage_code(stage: str) -> tuple[str, ...]:
    """The source files a stage runs: its dvc.yaml deps under ``src/`` and ``stages/`` (data and
    checkpoints excluded); the digest tagged on its run and re-measured by lineage."""
    spec = _stages()[stage]
    deps = (spec.get("do") or spec).get("deps") or []
    return tuple(d for d in deps if str(d).startswith(("src/", "stages/")) and "${" not in str(d))


def data_dir(dataset: str) -> Path:
    return safety.under("data/processed", dataset, what=f"processed data of dataset {dataset!r}")


def stage_dir(experiment: str, stage: str) -> Path:
    safety.under("outputs", experiment, what=f"outputs of experiment {experiment!r}")
    return Path("outputs") / experiment / STAGE_DIRS[stage]


def pointer_path(experiment: str, stage: str) -> Path:
    return stage_dir(experiment, stage) / POINTER_NAME


def metrics_path(experiment: str) -> Path:
    return safety.under("metrics", f"{experiment}.json", what=f"metrics of experiment {experiment!r}")


def scratch_dir(experiment: str) -> Path:
    """Resumable checkpoints: never a DVC output (DVC deletes outputs before re-running a stage)."""
    return safety.under("scratch", experiment, what=f"scratch folder of experiment {experiment!r}")
