"""Run a profile's experiments on several cores at once (``python -m pixelzoo.profile cpu --jobs 2``).

DVC runs one stage at a time per repository (``dvc repro`` holds the repository's lock), so the profile
copy alone can use one core. Lane 0 is the copy itself; lanes 1..N−1 are copies beside it
(``<copy>-lane<i>``) holding the same code, params and preprocessed data, and using the copy's DVC
cache. Every lane takes the next experiment that is not up to date in the copy from one queue and runs
its train, evaluate and sample stages with ``dvc repro``; all lanes record into the copy's MLflow store
(experiment and artifact folder created by the copy, before any lane starts) through one tracking
process. When the lanes are done (or one failed, or Ctrl-C), every other lane's finished outputs are
copied into the copy and recorded in its ``dvc.lock`` with ``dvc commit``, so the copy's ``dvc repro``
then finds them up to date and only renders the report.
"""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pixelzoo import integrity

STAGES = ("train", "evaluate", "sample")


class LaneFailed(subprocess.CalledProcessError):
    """A stage failed on a lane: which experiment, and the folder that keeps its logs and outputs."""

    def __init__(self, err: subprocess.CalledProcessError, lane: Path, key: str) -> None:
        super().__init__(err.returncode, err.cmd)
        self.lane, self.key = lane, key


@dataclass
class _Lane:
    path: Path
    done: list[str] = field(default_factory=list)


def dvc_executable() -> str:
    """This interpreter's dvc (the venv's), else the one on PATH."""
    dvc = Path(sys.executable).parent / "dvc"
    return str(dvc) if dvc.exists() else "dvc"


def _repro(cwd: Path, targets: list[str], env: Mapping[str, str]) -> None:
    subprocess.run([dvc_executable(), "repro", *targets], cwd=cwd, check=True, env=dict(env))


def lane_dirs(workdir: Path, jobs: int) -> list[Path]:
    return [workdir] + [workdir.with_name(f"{workdir.name}-lane{i}") for i in range(1, jobs)]


def _targets(keys: list[str]) -> list[str]:
    return [f"{stage}@{key}" for key in keys for stage in STAGES]


def pending(workdir: Path, keys: list[str], env: Mapping[str, str]) -> list[str]:
    """The experiments whose stages are not up to date in the copy (a rerun runs only those)."""
    out = subprocess.run([dvc_executable(), "status", "--json", *_targets(keys)], cwd=workdir, check=True,
                         capture_output=True, text=True, env=dict(env)).stdout
    changed = set(json.loads(out or "{}"))
    return [k for k in keys if any(t in changed for t in _targets([k]))]


def _init_store(workdir: Path, env: Mapping[str, str]) -> None:
    """The copy creates the MLflow experiment first, so its artifact folder is the copy's mlruns/."""
    from pixelzoo.pipeline.settings import load_params

    name = load_params(workdir / "params.yaml")["tracking"]["experiment_name"]
    code = f"from pixelzoo.pipeline.tracking.client import init_store; init_store({name!r})"
    subprocess.run([sys.executable, "-c", code], cwd=workdir, check=True,
                   env={**env, "DVC_ROOT": str(workdir), "PYTHONPATH": str(workdir / "src")})


def _seed_lane(workdir: Path, lane: Path, copy_project: Callable[[Path], Any]) -> None:
    """A copy of the project (``copy_project``: the profile's prepare_workdir) with the copy's lock and
    preprocessed data (not re-made), using the copy's DVC cache (DVC counts an output missing from its
    cache as changed; the cache is content-addressed, so lanes may share it)."""
    copy_project(lane)
    subprocess.run([dvc_executable(), "cache", "dir", "--local", str((workdir / ".dvc" / "cache").resolve())],
                   cwd=lane, check=True, capture_output=True)
    shutil.copy2(workdir / "dvc.lock", lane / "dvc.lock")
    shutil.copytree(workdir / "data", lane / "data", dirs_exist_ok=True)


def _work(lane: _Lane, todo: queue.Queue[str], failed: list[LaneFailed], env: Mapping[str, str]) -> None:
    while not failed:  # after a failure the other lanes stop once their current experiment is done
        try:
            key = todo.get_nowait()
        except queue.Empty:
            return
        try:
            _repro(lane.path, _targets([key]), env)
            lane.done.append(key)
        except subprocess.CalledProcessError as err:
            failed.append(LaneFailed(err, lane.path, key))
            return


def _adopt(workdir: Path, lane: Path, keys: list[str], env: Mapping[str, str]) -> None:
    """Copy a lane's outputs of ``keys`` into the copy (each folder swapped in whole) and record them in
    its dvc.lock."""
    for key in keys:
        tmp = integrity.temp_sibling(workdir / "outputs" / key)
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(lane / "outputs" / key, tmp)
        integrity.publish_dir(tmp, workdir / "outputs" / key)
        shutil.copy2(lane / "metrics" / f"{key}.json", workdir / "metrics" / f"{key}.json")
    subprocess.run([dvc_executable(), "commit", "--force", "--quiet", *_targets(keys)], cwd=workdir,
                   check=True, env=dict(env))


def run(workdir: Path, experiments: list[str], jobs: int, copy_project: Callable[[Path], Any],
        env: Mapping[str, str]) -> None:
    """Train, evaluate and sample ``experiments`` on ``jobs`` lanes (``copy_project(folder)`` makes a
    lane's copy; ``env``: the stages' environment, with the shared tracking process); raise
    :class:`LaneFailed` if a stage fails."""
    from pixelzoo.pipeline.settings import load_params

    exps = load_params(workdir / "params.yaml")["experiments"]
    datasets = sorted({exps[k]["dataset"] for k in experiments})
    _repro(workdir, [f"preprocess@{d}" for d in datasets], env)  # once, in the copy: lanes copy its data
    _init_store(workdir, env)
    todo: queue.Queue[str] = queue.Queue()
    keys = pending(workdir, experiments, env)
    for key in keys:
        todo.put(key)
    # no more lanes than experiments to run: each lane costs a copy of the project and its data
    lanes = [_Lane(path) for path in lane_dirs(workdir, max(1, min(jobs, len(keys))))]
    for lane in lanes[1:]:
        _seed_lane(workdir, lane.path, copy_project)
    failed: list[LaneFailed] = []
    threads = [threading.Thread(target=_work, args=(lane, todo, failed, env)) for lane in lanes]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:  # what finished is kept even when another experiment failed or the run was interrupted
        for t in threads:
            if t.ident is not None:
                t.join()  # (after Ctrl-C the lanes' dvc processes got the signal too)
        for lane in lanes[1:]:
            if lane.done:
                _adopt(workdir, lane.path, lane.done, env)
    if failed:
        raise failed[0]
