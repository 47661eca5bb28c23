"""NLL regression gate: compare a profile run's test bits/dim with the committed baseline.

A change that makes any model's likelihood worse fails; so does one that makes it suspiciously
*better*, which in this field most often means a causality leak (a model peeking at the pixel it
predicts). An intended improvement is recorded by updating the baseline deliberately:

    python -m pixelzoo.pipeline.profiles.regression check  --workdir .work/ci
    python -m pixelzoo.pipeline.profiles.regression update --workdir .work/ci --reason "why the numbers moved"

The tolerance lives in ``ci/params.yaml`` (``regression.tolerance_bits_per_dim``) with the measurement
that justifies it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import yaml

BASELINE = Path("ci/baseline.json")
PROFILE_PARAMS = Path("ci/params.yaml")


@dataclass
class Row:
    experiment: str
    baseline: float | None
    current: float | None
    tolerance: float

    @property
    def delta(self) -> float | None:
        if self.baseline is None or self.current is None:
            return None
        return self.current - self.baseline

    @property
    def status(self) -> str:
        if self.current is None:
            return "MISSING"
        if self.baseline is None:
            return "NEW"
        if self.delta > self.tolerance:
            return "WORSE"
        if self.delta < -self.tolerance:
            return "BETTER?"
        return "ok"


def read_metrics(workdir: Path, experiments: list[str]) -> dict[str, float]:
    out = {}
    for exp in experiments:
        path = workdir / "metrics" / f"{exp}.json"
        if path.exists():
            out[exp] = float(json.loads(path.read_text())["test_bits_per_dim"])
    return out


def profile_settings(root: Path) -> tuple[list[str], float]:
    params = yaml.safe_load((root / PROFILE_PARAMS).read_text())
    return sorted(params["experiments"]), float(params["regression"]["tolerance_bits_per_dim"])


def compare(workdir: Path, root: Path) -> list[Row]:
    experiments, tol = profile_settings(root)
    baseline_path = root / BASELINE
    base = json.loads(baseline_path.read_text())["experiments"] if baseline_path.exists() else {}
    current = read_metrics(workdir, experiments)
    names = sorted(set(experiments) | set(base))
    return [Row(n, base.get(n, {}).get("test_bits_per_dim"), current.get(n), tol) for n in names]


def format_table(rows: list[Row]) -> str:
    def f(v: float | None, sign: bool = False) -> str:
        return "-" if v is None else (f"{v:+.4f}" if sign else f"{v:.4f}")

    width = max([len(r.experiment) for r in rows] + [10])
    lines = [f"{'experiment':<{width}}  baseline   current     delta  tolerance  status"]
    for r in rows:
        lines.append(f"{r.experiment:<{width}}  {f(r.baseline):>8}  {f(r.current):>8}  {f(r.delta, True):>8}"
                     f"  {r.tolerance:>9.4f}  {r.status}")
    return "\n".join(lines)


HELP = {
    "WORSE": "the test NLL got worse than the baseline allows: a regression.",
    "BETTER?": "the test NLL improved beyond the tolerance: check for a causality leak (tests/test_audit.py) "
    "or, if the improvement is intended, record it with "
    "`python -m pixelzoo.pipeline.profiles.regression update --reason ...`.",
    "MISSING": "the profile ran but produced no metrics for this experiment.",
    "NEW": "missing from ci/baseline.json (no baseline yet): after checking the numbers, record one with "
    "`python -m pixelzoo.pipeline.profiles.regression update --reason ...`.",
}


def check(workdir: Path, root: Path) -> tuple[bool, str]:
    rows = compare(workdir, root)
    bad = sorted({r.status for r in rows} - {"ok"})
    text = format_table(rows)
    if bad:  # name the experiments: a new experiment without a baseline must be easy to spot
        text += "\n\n" + "\n".join(
            f"{s} ({', '.join(r.experiment for r in rows if r.status == s)}): {HELP[s]}" for s in bad)
    return not bad, text


def environment() -> dict[str, str]:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
            "cpu": cpu, "threads": str(torch.get_num_threads())}


def update(workdir: Path, root: Path, reason: str) -> dict:
    from pixelzoo.pipeline.tracking.client import repo_state as source_revision

    experiments, tol = profile_settings(root)
    current = {}
    for exp in experiments:
        path = workdir / "metrics" / f"{exp}.json"
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: run `python -m pixelzoo.profile ci` first")
        m = json.loads(path.read_text())
        current[exp] = {k: m[k] for k in ("test_bits_per_dim", "test_nats_per_image", "n_images")}
    commit, dirty = source_revision(root)
    baseline = {
        "reason": reason,
        "git_commit": commit,
        "git_dirty": dirty,
        "recorded_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "environment": environment(),
        "tolerance_bits_per_dim_at_record": tol,
        "experiments": current,
    }
    (root / BASELINE).write_text(json.dumps(baseline, indent=2, sort_keys=True) + "\n")
    return baseline


def main(argv: list[str] | None = None) -> int:
    from pixelzoo.integrity import PROJECT_ROOT
    from pixelzoo.pipeline.tracking.names import ENV_ROOT

    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("check", "update"):
        p = sub.add_parser(name)
        p.add_argument("--workdir", type=Path, default=None, help="profile copy (default .work/ci)")
        if name == "update":
            p.add_argument("--reason", required=True, help="why the baseline changes (kept in the file)")
    args = parser.parse_args(argv)
    root = Path(os.environ.get(ENV_ROOT, PROJECT_ROOT))
    workdir = args.workdir or root / ".work" / "ci"
    if args.cmd == "update":
        update(workdir, root, args.reason)
        print(f"baseline written to {root / BASELINE}")
        return 0
    ok, text = check(workdir, root)
    print(text)
    print("NLL regression check: " + ("passed" if ok else "FAILED"), file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
