"""Shared fixtures. ``repo_copy``: the project (tracked + untracked, not ignored files) in a temporary git repo."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
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


def _project_files(root: Path) -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=root, check=True, capture_output=True, text=True).stdout
    return sorted(f for f in out.split("\0") if f and (root / f).is_file())


@pytest.fixture
def repo_copy(tmp_path: Path) -> RepoCopy:
    """Copy of the working tree (committed or not, minus ignored files) as a fresh one-commit git repo."""
    dst = tmp_path / "repo"
    for rel in _project_files(ROOT):
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dst / rel)
    copy = RepoCopy(dst)
    copy.run("git", "init", "-q")
    copy.run("git", "add", "-A")
    copy.run("git", "commit", "-q", "-m", "test copy")
    return copy
