"""Stage start-up cost: what every DVC stage pays before (and around) its real work.

Two figures, medians of ``--repeat`` fresh processes, one intra-op thread:

- ``--help``: ``python stages/<stage>.py --help`` (argument parsing only; target <= 1.5 s for evaluate);
- fixed overhead: the whole ``evaluate`` stage of the smallest rehearsal experiment inside a finished
  rehearsal copy (imports, params, MLflow run, checkpoint load, exact NLL of 8 tiny images, metrics):
  the work itself takes milliseconds, so this is what each of the rehearsal's ~60 model stages pays
  (target <= 2.5 s).

    python -m pixelzoo.profile rehearsal                          # once, for the copy in .work/rehearsal
    python benchmarks/startup.py                                  # this tree
    python benchmarks/startup.py --tree /path/to/older/checkout   # the same figures for another tree

``--tree`` times another checkout's stage scripts (they import their own ``src/``) in the same copy.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("download", "preprocess", "train", "evaluate", "sample", "report")
EXPERIMENT = "pixelcnn-binarized_mnist"


def timed(cmd: list[str], cwd: Path, repeat: int) -> list[float]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DVC_NO_ANALYTICS": "1"}
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return times


def _spread(t: list[float]) -> str:
    return f"{statistics.median(t):6.2f} s  (min {min(t):.2f}, max {max(t):.2f})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", type=Path, default=ROOT, help="checkout whose stages/ to time (default: this)")
    ap.add_argument("--workdir", type=Path, default=ROOT / ".work" / "rehearsal", help="a finished rehearsal")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    tree = args.tree.resolve()
    print(f"tree {tree}, python {sys.executable}, {os.cpu_count()} CPUs, median of {args.repeat}")
    for stage in STAGES:
        t = timed([sys.executable, str(tree / "stages" / f"{stage}.py"), "--help"], tree, args.repeat)
        print(f"  {stage:<10} --help          {_spread(t)}")
    if (args.workdir / "outputs" / EXPERIMENT / "train" / "model.pt").exists():
        cmd = [sys.executable, str(tree / "stages" / "evaluate.py"), EXPERIMENT]
        t = timed(cmd, args.workdir, args.repeat)
        print(f"  evaluate   fixed overhead  {_spread(t)}  [{EXPERIMENT} in {args.workdir}]")
    else:
        print(f"  (no finished rehearsal in {args.workdir}: run `python -m pixelzoo.profile rehearsal` "
              "for the fixed-overhead figure)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
