"""Wall time per stage kind of a finished profile run (``dvc repro`` runs stages one after another).

Each stage's last-written output marks when it finished; a stage's wall time is the gap to the stage that
finished before it (the first one is timed from the copy's ``params.yaml``, written just before
``dvc repro`` started). Read from the files, so it works on any finished copy:

    python -m pixelzoo.profile rehearsal && python benchmarks/stage_times.py .work/rehearsal
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict
from pathlib import Path

import yaml

# The file each stage writes last (see the stage scripts): stage kind -> path template.
LAST_OUTPUT = {
    "download": "data/raw/{key}/SOURCE.json",
    "preprocess": "data/processed/{key}/meta.json",
    "train": "outputs/{key}/train/mlflow_run.json",
    "evaluate": "outputs/{key}/evaluate/mlflow_run.json",
    "sample": "outputs/{key}/samples/mlflow_run.json",
    "report": "reports/index.html",
}
SECTION = {"download": "sources", "preprocess": "datasets", "train": "experiments",
           "evaluate": "experiments", "sample": "experiments", "report": None}


def stage_times(workdir: Path) -> list[tuple[str, str, float]]:
    """(kind, key, seconds) for every stage whose output exists, in finishing order."""
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    ends = []
    for kind, template in LAST_OUTPUT.items():
        keys = [""] if SECTION[kind] is None else list(params.get(SECTION[kind]) or {})
        for key in keys:
            path = workdir / template.format(key=key)
            if path.exists():
                ends.append((path.stat().st_mtime, kind, key))
    ends.sort()
    start = (workdir / "params.yaml").stat().st_mtime
    out = []
    for end, kind, key in ends:
        out.append((kind, key, end - start))
        start = end
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workdir", type=Path, nargs="?", default=Path(".work/rehearsal"))
    args = ap.parse_args(argv)
    by_kind: dict[str, list[float]] = defaultdict(list)
    for kind, _key, sec in stage_times(args.workdir):
        by_kind[kind].append(sec)
    total = sum(sum(v) for v in by_kind.values())
    print(f"{'stage kind':<11} {'stages':>6} {'total s':>8} {'median s':>9} {'max s':>7}")
    for kind in LAST_OUTPUT:
        t = by_kind.get(kind)
        if t:
            print(f"{kind:<11} {len(t):>6} {sum(t):>8.1f} {statistics.median(t):>9.1f} {max(t):>7.1f}")
    print(f"{'all':<11} {sum(len(v) for v in by_kind.values()):>6} {total:>8.1f}")
    slowest = sorted(stage_times(args.workdir), key=lambda r: -r[2])[:5]
    print("slowest: " + ", ".join(f"{k}@{key} {s:.1f}s" for k, key, s in slowest))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
