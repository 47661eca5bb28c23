"""Wall time of `python -m pixelzoo.cli [COMMAND] --help` for every command: median of 5 fresh processes.

    PYTHONPATH=$PWD/src OMP_NUM_THREADS=1 .venv/bin/python benchmarks/cli_help.py

Issue 23 asks for each under 0.5 s; tests/test_use.py checks the cause (no torch, MLflow or pydantic
imported), not the time, which depends on the machine.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

from pixelzoo import cli

COMMANDS = ["", "sample", "score", "complete", *cli.PASSTHROUGH]


def median_seconds(command: str, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "pixelzoo.cli", *[command][: bool(command)], "--help"],
                              capture_output=True, text=True)
        times.append(time.perf_counter() - started)
        if proc.returncode != 0:
            raise SystemExit(f"pixelzoo {command} --help failed: {proc.stderr.strip()}")
    return statistics.median(times)


def main() -> None:
    print("| command | median of 5 |\n|---|---:|")
    for command in COMMANDS:
        print(f"| `pixelzoo {command + ' ' if command else ''}--help` | {median_seconds(command):.2f} s |")


if __name__ == "__main__":
    main()
