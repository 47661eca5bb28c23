"""Run a params profile (e.g. the CI-scale one in ``ci/``) through the real ``dvc.yaml`` stages.

A profile is a params file that replaces ``params.yaml``. It runs in a copy of the project (the files git
tracks plus untracked, not ignored ones) under ``.work/<profile>/``, so running it modifies no tracked file
and its data, models, metrics and MLflow store never mix with the paper-scale ones. The copy is a git
repository of its own whose HEAD commit message names the source commit; the source commit and dirty flag
are also exported as ``PIXELZOO_SOURCE_COMMIT`` / ``PIXELZOO_SOURCE_DIRTY`` for the tracker.

    python -m pixelzoo.profile ci            # CI-scale profile + NLL regression check
    python -m pixelzoo.profile quick         # the same profile, then the report (`make quick`)
    python -m pixelzoo.profile rehearsal     # the paper profile, derived small and offline (rehearsal.py)
    python -m pixelzoo.profile cpu           # every architecture on real 28×28 Fashion-MNIST (the longest;
                                             # its measured time: benchmarks/README.md)

After a successful run the copy commits its ``dvc.lock``, metrics and report, so ``dvc metrics diff`` and
``dvc exp show`` inside it have a baseline; ``pixelzoo-lineage --profile <name> <exp>`` reads it from here.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pixelzoo import artifacts
from pixelzoo.integrity import PROJECT_ROOT

# A profile's params: a file of the project, or "derived:<module>" whose derive() maps params.yaml to them.
PROFILES = {"ci": "ci/params.yaml", "quick": "ci/params.yaml", "cpu": "ci/cpu.yaml",
            "rehearsal": "derived:rehearsal"}
NLL_GATED = {"ci", "quick"}  # profiles whose test NLLs are checked against ci/baseline.json
# Written in each copy: where it came from (lineage checks code against the source repository).
SOURCE_FILE = ".pixelzoo-source.json"
_GIT_ID = {"GIT_AUTHOR_NAME": "pixelzoo", "GIT_AUTHOR_EMAIL": "pixelzoo@localhost",
           "GIT_COMMITTER_NAME": "pixelzoo", "GIT_COMMITTER_EMAIL": "pixelzoo@localhost"}


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout


def source_revision(root: Path) -> tuple[str, bool]:
    """(commit, dirty) of the source checkout, by the tracker's rule; ('unknown', True) outside git."""
    from pixelzoo.pipeline.tracking.client import repo_state

    return repo_state(root)


def project_files(root: Path) -> list[str]:
    """Tracked files plus untracked files git does not ignore (what a commit of the work tree would hold)."""
    out = _git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    return sorted({f for f in out.split("\0") if f and (root / f).is_file()})


def profile_params(name: str, root: Path | None = None) -> str | dict[str, Any]:
    """The params of profile ``name``: a params file path (relative to root) or a derived mapping."""
    spec = PROFILES[name]
    if not spec.startswith("derived:"):
        return spec
    import importlib

    from pixelzoo.pipeline.settings import load_params

    module = importlib.import_module(f"pixelzoo.pipeline.profiles.{spec.split(':', 1)[1]}")
    return module.derive(load_params((root or PROJECT_ROOT) / "params.yaml"))


def prepare_workdir(
    params_file: str | Path | Mapping[str, Any], workdir: Path, root: Path | None = None,
    origin: str | None = None,
) -> Path:
    """Copy the project into ``workdir`` with ``params_file`` (or a params mapping, generated from
    ``origin``) as its params.yaml.

    Generated outputs are kept: files that disappeared from the source are removed from the copy; data/,
    outputs/, metrics/ and the MLflow store are left alone so DVC can reuse what is still up to date.
    """
    root = root or PROJECT_ROOT
    derived = isinstance(params_file, Mapping)
    params_src = None if derived else (root / params_file).resolve()
    if params_src is not None and not params_src.is_file():
        raise FileNotFoundError(f"profile params file {params_src} does not exist")
    workdir.mkdir(parents=True, exist_ok=True)
    files = project_files(root)
    manifest = workdir / ".pixelzoo-files"
    previous = set(manifest.read_text().split("\n")) if manifest.exists() else set()
    for rel in previous - set(files) - {""}:
        (workdir / rel).unlink(missing_ok=True)
    for rel in files:
        dst = workdir / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, dst)
    if derived:
        from pixelzoo.pipeline.profiles.rehearsal import dump

        (workdir / "params.yaml").write_text(dump(params_file, *([origin] if origin else [])))
    else:
        shutil.copy2(params_src, workdir / "params.yaml")
    manifest.write_text("\n".join(files))
    artifacts.sync(workdir)  # dvc.yaml declares the profile's own trained models (pixelzoo.artifacts)
    commit, dirty = source_revision(root)
    source = {"root": str(root), "commit": commit, "dirty": dirty}
    (workdir / SOURCE_FILE).write_text(json.dumps(source) + "\n")
    if not (workdir / ".git").exists():
        _git(workdir, "init", "-q")
    # One commit so DVC and the tracker find a git repository with a HEAD; its message names the source.
    _git(workdir, "add", "-A", "--", *files, "params.yaml")
    _commit(workdir, f"profile copy of {commit} dirty={dirty}")
    return workdir


def _commit(workdir: Path, message: str) -> None:
    subprocess.run(["git", "commit", "-q", "--allow-empty", "-m", message], cwd=workdir, check=True,
                   env={**os.environ, **_GIT_ID})


def commit_results(workdir: Path) -> None:
    """Commit what the run wrote to git (dvc.lock, metrics, the report): the baseline for
    ``dvc metrics diff`` and ``dvc exp show`` in the copy."""
    results = [p for p in ("dvc.lock", "metrics", "reports") if (workdir / p).exists()]
    if results:
        _git(workdir, "add", "-A", "--", *results)
        _commit(workdir, "profile run results (dvc.lock, metrics, report)")


def source_of(workdir: Path) -> dict[str, Any] | None:
    """``{root, commit, dirty}`` of the checkout a profile copy was made from; None if not a copy."""
    path = Path(workdir) / SOURCE_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def profile_env(root: Path | None = None) -> dict[str, str]:
    """Environment for stage commands in a profile copy: source revision and offline-friendly DVC."""
    commit, dirty = source_revision(root or PROJECT_ROOT)
    bindir = str(Path(sys.executable).parent)
    # One thread always: the committed baseline then does not depend on the machine's core count.
    return {**os.environ, "OMP_NUM_THREADS": "1", "PIXELZOO_SOURCE_COMMIT": commit,
            "PIXELZOO_SOURCE_DIRTY": str(dirty).lower(), "DVC_NO_ANALYTICS": "1",
            "PATH": bindir + os.pathsep + os.environ.get("PATH", "")}


def dvc_repro(workdir: Path, *targets: str, env: dict[str, str] | None = None) -> None:
    """Run ``dvc repro`` in the profile copy with this interpreter's dvc; raise on failure. Its stages
    share one tracking process (pipeline.tracking.server.shared): MLflow is loaded once, not once per
    stage."""
    from pixelzoo.pipeline.profiles.lanes import dvc_executable
    from pixelzoo.pipeline.tracking import server as recorder

    cmd = [dvc_executable(), "repro", *targets]
    env = env or profile_env()
    uri = env.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(workdir).resolve() / 'mlflow.db'}"
    with recorder.shared(uri, env) as stage_env:
        subprocess.run(cmd, cwd=workdir, check=True, env=stage_env)


def run_lanes(workdir: Path, experiments: list[str], jobs: int, params: Any, root: Path,
              origin: str | None) -> None:
    """The experiments' stages on ``jobs`` lanes (:mod:`pixelzoo.pipeline.profiles.lanes`), every stage
    recording into the copy's MLflow store through one tracking process."""
    from pixelzoo.pipeline.profiles import lanes
    from pixelzoo.pipeline.tracking import server as recorder

    env = profile_env(root)
    uri = env.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(workdir).resolve() / 'mlflow.db'}"
    with recorder.shared(uri, {**env, "MLFLOW_TRACKING_URI": uri}) as stage_env:
        lanes.run(workdir, experiments, jobs, lambda lane: prepare_workdir(params, lane, root, origin),
                  stage_env)


def _parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    # `pixelzoo profile` (pixelzoo.cli) sets argv[0] to its own name; run as a module, name the module
    prog = sys.argv[0] if sys.argv[0].startswith("pixelzoo ") else "python -m pixelzoo.profile"
    parser = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=fmt)
    parser.add_argument("profile", choices=sorted(PROFILES))
    parser.add_argument("--workdir", type=Path, help="where the copy lives (default .work/<profile>)")
    parser.add_argument("--only", nargs="+", metavar="EXPERIMENT", default=(),
                        help="run only these experiments' train/evaluate/sample stages (and their inputs); "
                             "no report, no NLL gate; with profile.seeds name each run "
                             "(<experiment>-seed<N>), or it runs the first seed only")
    parser.add_argument("--jobs", type=int, default=1, metavar="N",
                        help="train N experiments at a time, one core each (pipeline/profiles/lanes.py); "
                             "default 1")
    return parser


def _checked(args: argparse.Namespace, root: Path) -> tuple[Any, dict[str, Any], str | None] | None:
    """(params as prepare_workdir takes them, the parsed params, their origin) after every check, or None
    once the problems are printed: nothing is copied or run for a mistake."""
    from pixelzoo.data.sources import unobtainable_mirrors
    from pixelzoo.errors import UserError
    from pixelzoo.pipeline.profiles import replicates
    from pixelzoo.pipeline.settings import Problem, format_problems, load_params, validate

    try:
        params = profile_params(args.profile, root)
        loaded = params if isinstance(params, Mapping) else load_params(root / params)
    except UserError as err:
        print(f"[pixelzoo] profile {args.profile!r} not run: {err}", file=sys.stderr)
        return None
    problems = validate(loaded) + replicates.problems(loaded)  # every mistake at once, before any copy
    origin = None
    if not problems and (loaded.get("profile") or {}).get("seeds"):  # one experiment per row and seed
        spec = PROFILES[args.profile]
        origin = f"{replicates.__name__}.expand from {spec}: edit {spec}"
        params = loaded = replicates.expand(loaded)
    unknown = [e for e in args.only if e not in (loaded.get("experiments") or {})]
    if unknown:
        print(f"[pixelzoo] profile {args.profile!r} not run: --only {', '.join(unknown)}: no such experiment "
              f"(its experiments: {', '.join(loaded.get('experiments') or {})})", file=sys.stderr)
        return None
    if args.jobs < 1:
        problems.append(Problem("--jobs", f"must be at least 1, got {args.jobs}", "one lane per core"))
    if problems:
        print(f"[pixelzoo] profile {args.profile!r} not run: {format_problems(problems, 'its params')}",
              file=sys.stderr)
        return None
    notes, missing = unobtainable_mirrors(loaded.get("sources") or {})  # a missing mirror: download instead
    for note in notes:
        print(f"[pixelzoo] {note}", flush=True)
    if missing:  # before any work: a long profile must not fail at its first stage after minutes of copying
        print("[pixelzoo] " + "\n[pixelzoo] ".join(missing), file=sys.stderr)
        return None
    return params, loaded, origin


def _run_stages(args: argparse.Namespace, workdir: Path, checked: tuple[Any, dict[str, Any], str | None],
                root: Path) -> int:
    """The stages (on lanes with --jobs), then the copy's commit of its results; a failure says where."""
    params, loaded, origin = checked
    try:
        if args.jobs > 1:
            run_lanes(workdir, list(args.only or loaded["experiments"]), args.jobs, params, root, origin)
        if not (args.only and args.jobs > 1):
            dvc_repro(workdir, *(f"{s}@{e}" for e in args.only for s in ("train", "evaluate", "sample")))
    except subprocess.CalledProcessError as err:
        where = f" at {err.key} in {err.lane}" if hasattr(err, "lane") else ""
        print(f"[pixelzoo] dvc repro failed (exit {err.returncode}){where}; the copy is kept in {workdir}",
              file=sys.stderr)
        return err.returncode
    commit_results(workdir)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    root = PROJECT_ROOT
    workdir = (args.workdir or root / ".work" / args.profile).resolve()
    checked = _checked(args, root)
    if checked is None:
        return 1
    prepare_workdir(checked[0], workdir, root, checked[2])
    print(f"[pixelzoo] profile {args.profile!r} in {workdir}", flush=True)
    code = _run_stages(args, workdir, checked, root)
    if code or args.only:
        return code
    if args.profile in NLL_GATED:  # the NLL gate has a baseline for the CI profile only
        from pixelzoo.pipeline.profiles import regression

        code = regression.main(["check", "--workdir", str(workdir)])
    if args.profile != "ci":
        report = workdir / "reports" / "index.html"
        print(f"[pixelzoo] report: {report}" if report.exists() else "[pixelzoo] no report was rendered")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
