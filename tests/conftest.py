"""Shared fixtures. ``repo_copy``: the project (tracked + untracked, not ignored files) in a temp git repo."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from pixelzoo.data.sources import missing_mirrors
from pixelzoo.pipeline.profiles.profile import (
    commit_results,
    dvc_repro,
    prepare_workdir,
    profile_env,
    profile_params,
    project_files,
)
from pixelzoo.pipeline.settings import load_params

ROOT = Path(__file__).resolve().parents[1]

# `make test` runs the suite on every core with pytest-xdist, one test file per worker at a time (so a
# file's module fixtures are built once); the files that read the session-wide CI-profile run form one
# group so that run is built once too. The longest groups are queued first so that they start at once.
_SHARED_GROUP = {"test_pipeline": "test_ci_profile"}
_LONGEST_FIRST = (
    "test_rehearsal", "test_ci_profile", "test_faults", "test_lineage_guards", "test_rnn_sessions",
)

if os.environ.get("PYTEST_XDIST_WORKER"):
    import torch

    torch.set_num_threads(1)  # the workers share the cores: one intra-op thread each, no oversubscription


def _group(nodeid: str) -> str:
    stem = Path(nodeid.split("::", 1)[0]).stem
    return _SHARED_GROUP.get(stem, stem)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(_LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(_group(item.nodeid), len(rank)))  # stable: file order otherwise


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    from xdist.scheduler import LoadScopeScheduling

    class FileGroups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _group(nodeid)

    return FileGroups(config, log)
_GIT_ENV = {"GIT_AUTHOR_NAME": "pixelzoo-tests", "GIT_AUTHOR_EMAIL": "tests@localhost",
            "GIT_COMMITTER_NAME": "pixelzoo-tests", "GIT_COMMITTER_EMAIL": "tests@localhost"}


@dataclass
class RepoCopy:
    """A throw-away copy of the project; ``run``/``dvc`` execute there with this interpreter's tools."""

    root: Path

    @property
    def env(self) -> dict[str, str]:
        # This interpreter's bin dir first, so `python` in dvc.yaml commands and `dvc` are the test's own.
        bindir = str(Path(sys.executable).parent)
        return {**os.environ, **_GIT_ENV, "DVC_NO_ANALYTICS": "1", "OMP_NUM_THREADS": "1",
                "PATH": bindir + os.pathsep + os.environ.get("PATH", "")}

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(cmd, cwd=self.root, env=self.env, capture_output=True, text=True)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def dvc(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        dvc = Path(sys.executable).parent / "dvc"
        return self.run(str(dvc) if dvc.exists() else "dvc", *args, check=check)


@pytest.fixture
def repo_copy(tmp_path: Path) -> RepoCopy:
    """Copy of the working tree (committed or not, minus ignored files) as a fresh one-commit git repo."""
    dst = tmp_path / "repo"
    for rel in project_files(ROOT):
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dst / rel)
    copy = RepoCopy(dst)
    copy.run("git", "init", "-q")
    copy.run("git", "add", "-A")
    copy.run("git", "commit", "-q", "-m", "test copy")
    return copy


@dataclass
class ProfileRun:
    """A finished `dvc repro` of a params profile in its own copy of the project."""

    root: Path
    env: dict[str, str]

    def copy(self, dst: Path) -> ProfileRun:
        """A second copy with everything generated so far (data, models, DVC cache, MLflow store)."""
        shutil.copytree(self.root, dst, symlinks=True)
        return ProfileRun(dst, self.env)

    def repro(self, *targets: str) -> None:
        dvc_repro(self.root, *targets, env=self.env)


@pytest.fixture(scope="session")
def ci_run(tmp_path_factory: pytest.TempPathFactory) -> ProfileRun:
    """The CI-scale profile (ci/params.yaml) through every real stage, report included; run once per session.

    The pipeline, report and NLL-regression tests all read this one run.
    """
    missing = missing_mirrors(load_params(ROOT / "ci" / "params.yaml")["sources"])
    if missing:  # real data the profile reads from a system package: fail, never skip
        pytest.fail("\n".join(missing), pytrace=False)
    workdir = tmp_path_factory.mktemp("ci") / "repo"
    prepare_workdir("ci/params.yaml", workdir, ROOT)
    env = {**profile_env(ROOT), **_GIT_ENV}
    run = ProfileRun(workdir, env)
    run.repro()
    return run


@pytest.fixture(scope="session")
def rehearsal_run(tmp_path_factory: pytest.TempPathFactory) -> ProfileRun:
    """The rehearsal (params.yaml derived small and offline, pipeline.profiles.rehearsal): every default
    experiment through every stage, report included, results committed in the copy as
    `python -m pixelzoo.profile rehearsal` does; run once per session."""
    workdir = tmp_path_factory.mktemp("rehearsal") / "repo"
    prepare_workdir(profile_params("rehearsal", ROOT), workdir, ROOT)
    run = ProfileRun(workdir, {**profile_env(ROOT), **_GIT_ENV})
    run.repro()
    commit_results(workdir)
    return run
