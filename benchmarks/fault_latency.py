"""Time-to-fail and message of each user mistake and file fault, through the real stage commands.

In a throw-away copy of the project with the CI profile (digits already downloaded and preprocessed, one
model trained), every case of ``tests/test_config.py``'s bad-params table and each data/checkpoint fault
is run as DVC runs it (``python stages/<stage>.py <arg>``, a fresh interpreter). Prints one line per case:
wall seconds, exit code, MLflow runs created, the first line of the message. Not a test: timings depend
on the machine and its load (pin threads: OMP_NUM_THREADS=1). ``--repeat N`` runs each case N times and
prints the median wall and CPU seconds; ``--only NAME`` (repeatable) runs only the cases whose name
contains NAME; the untrusted-input cases of ``tests/test_untrusted.py`` (bad names, duplicate keys) run
too.

    OMP_NUM_THREADS=1 python benchmarks/fault_latency.py [--workdir DIR] [--repeat 3] [--only knob]
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

from test_config import BAD, EXP  # noqa: E402
from test_untrusted import BAD_NAMES, DUPLICATES  # noqa: E402

from pixelzoo.pipeline.profiles.profile import prepare_workdir, profile_env  # noqa: E402


def n_runs(root: Path) -> int:
    import sqlite3

    db = root / "mlflow.db"
    if not db.exists():
        return 0
    with sqlite3.connect(db) as con:
        return con.execute("select count(*) from runs").fetchone()[0]


def run(root: Path, env: dict, *cmd: str) -> tuple[float, float, int, str]:
    """(wall s, CPU s of the command and its children, exit code, message)."""
    import resource

    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = cpu1.ru_utime - cpu0.ru_utime + cpu1.ru_stime - cpu0.ru_stime
    lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
    # The stage's own message: its first line, and the first problem when it lists several.
    msg = lines[0] if lines else ""
    if len(lines) > 1 and lines[1].startswith("  "):
        msg += " | " + lines[1].strip()
    if "Traceback" in proc.stderr:
        msg = "TRACEBACK: " + lines[-1]
    return seconds, cpu, proc.returncode, msg


REPEAT = 1  # --repeat: runs per case; the median is printed
ONLY: list[str] = []  # --only: substrings of the case names to run (empty: all)


def report(name: str, root: Path, env: dict, *cmd: str) -> None:
    if ONLY and not any(o in name for o in ONLY):
        return
    before = n_runs(root)
    walls, cpus = [], []
    for _ in range(REPEAT):
        seconds, cpu, code, msg = run(root, env, *cmd)
        walls.append(seconds)
        cpus.append(cpu)
    runs = n_runs(root) - before
    med = f"median of {REPEAT}: " if REPEAT > 1 else ""
    print(f"- {name}: {med}{statistics.median(walls):.1f} s wall ({statistics.median(cpus):.1f} s CPU), "
          f"exit {code}, MLflow runs +{runs}: {msg}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--repeat", type=int, default=1, help="runs per case (median printed)")
    ap.add_argument("--only", action="append", default=[], help="run only cases whose name contains this")
    args = ap.parse_args()
    global REPEAT
    REPEAT = max(1, args.repeat)
    ONLY[:] = args.only
    root = (args.workdir or Path(tempfile.mkdtemp(prefix="pixelzoo-faults-"))) / "repo"
    params = yaml.safe_load((ROOT / "ci" / "params.yaml").read_text())
    params["experiments"] = {k: {**e, "epochs": 1, "max_steps": 6} for k, e in params["experiments"].items()}
    params["train_defaults"]["checkpoint_minutes"] = 0
    prepare_workdir("ci/params.yaml", root, ROOT)
    good = yaml.safe_dump(params, sort_keys=False)
    (root / "params.yaml").write_text(good)
    env = {**profile_env(ROOT), "PYTHONPATH": ""}
    dvc = str(Path(sys.executable).parent / "dvc")
    subprocess.run([dvc, "repro", f"train@{EXP}"], cwd=root, env=env, check=True, capture_output=True)
    py = sys.executable

    for name, mutate, _, _ in BAD:
        bad = copy.deepcopy(params)
        mutate(bad)
        (root / "params.yaml").write_text(yaml.safe_dump(bad, sort_keys=False))
        report(f"params: {name}", root, env, py, "stages/train.py", EXP)
    (root / "params.yaml").write_text(good)
    for name, mutate, arg, _ in BAD_NAMES:  # untrusted names (issue 27): refused before anything is written
        bad = copy.deepcopy(params)
        mutate(bad)
        (root / "params.yaml").write_text(yaml.safe_dump(bad, sort_keys=False))
        report(f"name: {name}", root, env, py, "stages/train.py", arg)
    for name, edit, _ in DUPLICATES:
        (root / "params.yaml").write_text(edit(good))
        report(f"duplicate key: {name}", root, env, py, "stages/train.py", EXP)
    (root / "params.yaml").write_text(good)

    report("unknown experiment on the command line", root, env, py, "stages/train.py", "pixelcnn-digit")
    data = root / "data/processed/digits"
    shutil.move(data, root / "moved")
    report("missing processed data", root, env, py, "stages/train.py", EXP)
    shutil.move(root / "moved", data)
    raw = root / "data/raw/digits"
    shutil.move(raw, root / "moved")
    report("missing download", root, env, py, "stages/preprocess.py", "digits")
    shutil.move(root / "moved", raw)

    saved = {p: p.read_bytes() for p in (data / "train.npz", data / "test.npz")}
    (data / "train.npz").write_bytes(saved[data / "train.npz"][:5000])
    report("truncated train.npz", root, env, py, "stages/train.py", EXP)
    import numpy as np

    with np.load(data / "test.npz") as z:
        x, y = z["x"].copy(), z["y"]
    x[0, 0, 0, 0] = (x[0, 0, 0, 0] + 1) % 17
    with open(data / "test.npz", "wb") as f:
        np.savez(f, x=x, y=y)
    report("test.npz no longer matching meta.json", root, env, py, "stages/evaluate.py", EXP)
    for p, b in saved.items():
        p.write_bytes(b)
    model = root / "outputs" / EXP / "train" / "model.pt"
    good_model = model.read_bytes()
    model.write_bytes(good_model[:2000])
    report("truncated model.pt", root, env, py, "stages/evaluate.py", EXP)
    model.write_bytes(good_model)

    nan = copy.deepcopy(params)
    nan["experiments"][EXP].update(optimizer={"name": "sgd", "lr": 1.0e12}, grad_clip=None)
    (root / "params.yaml").write_text(yaml.safe_dump(nan, sort_keys=False))
    report("NaN loss (sgd lr 1e12, no clipping)", root, env, py, "stages/train.py", EXP)
    (root / "params.yaml").write_text(good)
    # Last: DVC removes a stage's outputs before running it (they stay in its cache: `dvc checkout`).
    bad = copy.deepcopy(params)
    BAD[0][1](bad)
    (root / "params.yaml").write_text(yaml.safe_dump(bad, sort_keys=False))
    report("params: misspelt knob, via `dvc repro train@`", root, env, dvc, "repro", f"train@{EXP}")
    (root / "params.yaml").write_text(good)
    print(f"(copy kept in {root}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
          f"load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
