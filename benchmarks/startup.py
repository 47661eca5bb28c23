"""Stage start-up cost: what every DVC stage pays before (and around) its real work.

Two figures, medians of ``--repeat`` fresh processes, one intra-op thread, wall time and CPU time (user +
system of the stage process and its children: on a shared machine wall time also counts waiting for a core):

- ``--help``: ``python stages/<stage>.py --help`` (argument parsing only; target <= 1.5 s for evaluate);
- fixed overhead: the whole ``evaluate`` stage of the smallest rehearsal experiment inside a finished
  rehearsal copy (imports, params, MLflow run, checkpoint load, exact NLL of 8 tiny images, metrics, the
  two bits-map figures): the NLL takes milliseconds, so this is what each of the rehearsal's ~60 model
  stages pays (target <= 2.5 s);
- the whole ``train`` (3 steps and a validation pass) and ``sample`` stages of that experiment, which
  pay the same start-up around a little more work. Both rewrite their outputs in the copy (CPU training
  is deterministic: the same model.pt).

The model stages are timed twice: as ``dvc repro`` runs them on their own (each starts its own tracking
process, pixelzoo.pipeline.tracking.server) and as a profile run does (``in a profile run``: one
tracking process shared by all stages, started here as pixelzoo.pipeline.profiles.profile starts it;
its CPU is not in the stages' CPU figures).

    python -m pixelzoo.profile rehearsal                          # once, for the copy in .work/rehearsal
    python benchmarks/startup.py                                  # this tree
    python benchmarks/startup.py --tree /path/to/older/checkout   # the same figures for another tree
    python benchmarks/startup.py --tree /old --tree .            # both, runs interleaved (before/after)

``--tree`` times another checkout's stage scripts (they import their own ``src/``) in the same copy; with
several trees each repeat runs every tree in turn, so load drift on a shared machine hits all alike.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from pixelzoo.pipeline.tracking import server as recorder  # noqa: E402

STAGES = ("download", "preprocess", "train", "evaluate", "sample", "report")
EXPERIMENT = "pixelcnn-binarized_mnist"
MODEL_STAGES = (("evaluate", "fixed overhead"), ("train", "whole stage"), ("sample", "whole stage"))


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """(wall, CPU) seconds of one run of ``cmd``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _spread(t: list[float]) -> str:
    return f"{statistics.median(t):5.2f} s (min {min(t):.2f}, max {max(t):.2f})"


def _run_all(trees: list[Path], workdir: Path | None, env: dict[str, str], profile_env: dict[str, str],
             repeat: int) -> dict[tuple[Path, str], list[tuple[float, float]]]:
    """{(tree, label): [(wall, CPU)] * repeat}; each round runs every job once, so drift in the machine's
    load hits all alike."""
    jobs: dict[tuple[Path, str], tuple[list[str], Path, dict[str, str]]] = {}  # -> (command, cwd, env)
    for tree in trees:
        for stage in STAGES:
            script = str(tree / "stages" / f"{stage}.py")
            jobs[tree, f"{stage:<10} --help"] = ([sys.executable, script, "--help"], tree, env)
        for stage, label in MODEL_STAGES if workdir else ():
            cmd = [sys.executable, str(tree / "stages" / f"{stage}.py"), EXPERIMENT]
            jobs[tree, f"{stage:<10} {label}"] = (cmd, workdir, env)
            jobs[tree, f"{stage:<10} {label}, in a profile run"] = (cmd, workdir, profile_env)
    runs: dict[tuple[Path, str], list[tuple[float, float]]] = {key: [] for key in jobs}
    for _ in range(repeat):
        for key, (cmd, cwd, job_env) in jobs.items():
            runs[key].append(timed(cmd, cwd, job_env))
    return runs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", type=Path, action="append",
                    help="checkout whose stages/ to time (default: this one); repeat to compare trees")
    ap.add_argument("--workdir", type=Path, default=ROOT / ".work" / "rehearsal", help="a finished rehearsal")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "startup.json")
    args = ap.parse_args(argv)
    trees = [t.resolve() for t in args.tree or [ROOT]]
    workdir = args.workdir.resolve()
    finished = (workdir / "outputs" / EXPERIMENT / "train" / "model.pt").exists()
    load = os.getloadavg()[0]
    print(f"python {sys.executable}, {os.cpu_count()} CPUs, median of {args.repeat}, load average {load:.1f}")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DVC_NO_ANALYTICS": "1"}
    env.pop(recorder.ENV_SOCKET, None)
    with recorder.shared(f"sqlite:///{workdir / 'mlflow.db'}", env) as profile_env:
        runs = _run_all(trees, workdir if finished else None, env, profile_env, args.repeat)
    for tree in trees:
        print(f"tree {tree}")
        for (t, label), r in runs.items():
            if t == tree:
                print(f"  {label:<42} wall {_spread([w for w, _ in r])}  CPU {_spread([c for _, c in r])}")
    results = {"python": sys.executable, "cpus": os.cpu_count(), "repeat": args.repeat,
               "load_average_at_start": load, "experiment": EXPERIMENT,
               "trees": {str(tree): {label.strip(): {"wall_median_s": statistics.median(w for w, _ in r),
                                                     "cpu_median_s": statistics.median(c for _, c in r),
                                                     "wall_s": [w for w, _ in r], "cpu_s": [c for _, c in r]}
                                     for (t, label), r in runs.items() if t == tree}
                         for tree in trees}}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {args.json}")
    if finished:
        print(f"fixed overhead: the whole evaluate stage of {EXPERIMENT} in {workdir}")
    else:
        print(f"(no finished rehearsal in {workdir}: run `python -m pixelzoo.profile rehearsal` "
              "for the fixed-overhead figure)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
