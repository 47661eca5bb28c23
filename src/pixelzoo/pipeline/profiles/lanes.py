"""Run a profile's experiments on several cores at once (``python -m pixelzoo.profile cpu --jobs 2``).

DVC runs one stage at a time per repository (``dvc repro`` holds the repository's lock), so the profile
copy alone can use one core. Lane 0 is the copy itself; lanes 1..N−1 are copies beside it
(``<copy>-lane<i>``) holding the same code, params and preprocessed data. Every lane takes the next
experiment from one queue and runs its train, evaluate and sample stages with ``dvc repro``; all lanes
record into the copy's MLflow store through one tracking process. When the queue is empty each other
lane's outputs are moved into the copy and recorded in its ``dvc.lock`` with ``dvc commit``, so the
copy's ``dvc repro`` then finds them up to date and only renders the report.
"""

from __future__ import annotations

import queue
import shutil
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

STAGES = ("train", "evaluate", "sample")


def _dvc() -> str:
    dvc = Path(sys.executable).parent / "dvc"
    return str(dvc) if dvc.exists() else "dvc"


def _repro(cwd: Path, targets: list[str], env: Mapping[str, str]) -> None:
    subprocess.run([_dvc(), "repro", *targets], cwd=cwd, check=True, env=dict(env))


def lane_dirs(workdir: Path, jobs: int) -> list[Path]:
    return [workdir] + [workdir.with_name(f"{workdir.name}-lane{i}") for i in range(1, jobs)]


def _seed_lane(workdir: Path, lane: Path, params: Any, root: Path, origin: str | None) -> None:
    """A copy of the project with the copy's params, lock and preprocessed data (not re-made), using the
    copy's DVC cache (DVC counts an output missing from its cache as changed; the cache is
    content-addressed, so lanes may share it)."""
    from pixelzoo.pipeline.profiles.profile import prepare_workdir

    prepare_workdir(params, lane, root, origin)
    subprocess.run([_dvc(), "cache", "dir", "--local", str((workdir / ".dvc" / "cache").resolve())],
                   cwd=lane, check=True, capture_output=True)
    shutil.copy2(workdir / "dvc.lock", lane / "dvc.lock")
    shutil.copytree(workdir / "data", lane / "data", dirs_exist_ok=True)


def _work(lane: Path, todo: queue.Queue[str], done: list[str], failed: list[BaseException],
          env: Mapping[str, str]) -> None:
    while not failed:
        try:
            key = todo.get_nowait()
        except queue.Empty:
            return
        try:
            _repro(lane, [f"{stage}@{key}" for stage in STAGES], env)
            done.append(key)
        except BaseException as err:  # the other lanes stop after their current experiment
            failed.append(err)


def _adopt(workdir: Path, lane: Path, keys: list[str], env: Mapping[str, str]) -> None:
    """Move a lane's outputs of ``keys`` into the copy and record them in its dvc.lock."""
    for key in keys:
        shutil.rmtree(workdir / "outputs" / key, ignore_errors=True)
        shutil.copytree(lane / "outputs" / key, workdir / "outputs" / key)
        shutil.copy2(lane / "metrics" / f"{key}.json", workdir / "metrics" / f"{key}.json")
    targets = [f"{stage}@{key}" for key in keys for stage in STAGES]
    subprocess.run([_dvc(), "commit", "--force", "--quiet", *targets], cwd=workdir, check=True, env=dict(env))


def run(workdir: Path, experiments: list[str], jobs: int, params: Any, root: Path, origin: str | None,
        env: Mapping[str, str]) -> None:
    """Train, evaluate and sample ``experiments`` on ``jobs`` lanes (``env``: the stages' environment,
    with the shared tracking process); raise CalledProcessError if any stage fails."""
    _repro(workdir, ["download", "preprocess"], env)  # once, in the copy: the lanes copy its data
    lanes = lane_dirs(workdir, jobs)
    for lane in lanes[1:]:
        _seed_lane(workdir, lane, params, root, origin)
    todo: queue.Queue[str] = queue.Queue()
    for key in experiments:
        todo.put(key)
    done: list[list[str]] = [[] for _ in lanes]
    failed: list[BaseException] = []
    threads = [threading.Thread(target=_work, args=(lane, todo, done[i], failed, env))
               for i, lane in enumerate(lanes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for lane, keys in zip(lanes[1:], done[1:], strict=True):
        if keys:  # what finished is kept even when another experiment failed
            _adopt(workdir, lane, keys, env)
    if failed:
        raise failed[0]
