"""What the page says about itself: the profile banner and the NLL gate (see docs/architecture.md).

The banner comes from the params file's ``profile: {name, description, paper_numbers}`` section and
the scale actually configured (datasets, image sizes, epochs). The NLL gate is
:mod:`pixelzoo.pipeline.profiles.regression`'s check, shown when the committed baseline covers experiments
of these params.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pixelzoo.pipeline.profiles import regression
from pixelzoo.report.collect import Experiment
from pixelzoo.report.render import Banner, Cell, Section, Table


def _scale(root: Path, exps: list[Experiment]) -> list[str]:
    """One phrase per dataset: shape, levels and split sizes from meta.json (or "not built")."""
    out = []
    for name in sorted({e.dataset for e in exps}):
        meta_path = root / "data" / "processed" / name / "meta.json"
        if not meta_path.exists():
            out.append(f"{name} (not built)")
            continue
        m = json.loads(meta_path.read_text())
        counts = m.get("counts", {})
        shape = f"{m.get('channels')}×{m.get('height')}×{m.get('width')}"
        out.append(f"{name} ({shape}, {m.get('levels')} levels, {counts.get('train', '?')} train / "
                   f"{counts.get('test', '?')} test images)")
    return out


def profile_banner(root: Path, params: dict[str, Any], exps: list[Experiment]) -> Banner:
    """The profile that produced the page, its scale, and whether its numbers are paper numbers."""
    prof = params.get("profile")
    epochs = sorted({int(e.resolved["epochs"]) for e in exps})
    span = f"{epochs[0]}" if len(epochs) == 1 else f"{epochs[0]}–{epochs[-1]}"
    scale = (f"Scale: {len(exps)} experiments; data {'; '.join(_scale(root, exps)) or 'none'}; "
             f"{span} training epochs per experiment." if exps else "Scale: no experiments configured.")
    if not isinstance(prof, dict):
        return Banner("Profile: not declared", [
            "The params file has no `profile:` section, so this page cannot say which profile made it or "
            "whether its numbers are meant as paper numbers; judge them by the scale below.", scale,
        ], warn=True)
    name = str(prof.get("name", "unnamed"))
    lines = [str(prof["description"])] if prof.get("description") else []
    lines.append(scale)
    paper = prof.get("paper_numbers")
    if paper is True:
        lines.append("This profile is meant to produce paper numbers: each row beside a paper figure was "
                     "trained at the configuration that row states.")
    else:
        lines.append(f"These are NOT paper numbers: the {name} profile trains reduced models on reduced "
                     "data. Any figure placed beside a paper figure only shows that the pipeline runs end "
                     "to end; its size, and its difference from the paper, mean nothing.")
    return Banner(f"Profile: {name}", lines, warn=paper is not True)


def _baseline(root: Path, params: dict[str, Any]) -> tuple[dict[str, Any], float] | None:
    """The committed baseline and tolerance when ``params`` are gated (they have a ``regression``
    section, as the CI profile's) and the baseline covers some of their experiments; else None. Only the
    gated profile: another profile's experiment of the same name (the cpu profile's pixelcnn-fashion2
    trains on all of Fashion-MNIST) is a different run, and its "verdict" would mean nothing."""
    tol = (params.get("regression") or {}).get("tolerance_bits_per_dim")
    path = root / regression.BASELINE
    if tol is None or not path.exists():
        return None
    base = json.loads(path.read_text())
    if not set(base.get("experiments", {})) & set(params.get("experiments") or {}):
        return None
    return base, float(tol)


def _f(v: float | None, sign: bool = False) -> str:
    return "—" if v is None else (f"{v:+.4f}" if sign else f"{v:.4f}")


def gate_section(root: Path, params: dict[str, Any], exps: list[Experiment]) -> Section | None:
    """The NLL gate's verdict per experiment, as ``python -m pixelzoo.pipeline.profiles.regression check``
    gives it."""
    found = _baseline(root, params)
    if found is None:
        return None
    base, tol = found
    recorded = base.get("experiments", {})
    rows, verdicts = [], []
    for e in exps:
        if e.key not in recorded:
            continue
        cur = float(e.metrics["test_bits_per_dim"]) if e.metrics else None
        r = regression.Row(e.key, float(recorded[e.key]["test_bits_per_dim"]), cur, tol)
        verdicts.append(r.status)
        rows.append([Cell(e.key), Cell(_f(r.baseline), cls="num"), Cell(_f(r.current), cls="num"),
                     Cell(_f(r.delta, True), cls="num"), Cell(f"± {tol:.4f}", cls="num"),
                     Cell(r.status, cls="ok" if r.status == "ok" else "fail",
                          title=regression.HELP.get(r.status))])
    passed = all(v == "ok" for v in verdicts)
    env = base.get("environment", {})
    note = (f"Baseline {regression.BASELINE} recorded {base.get('recorded_at', '?')} at commit "
            f"{str(base.get('git_commit', '?'))[:8]}{' (dirty)' if base.get('git_dirty') else ''} on "
            f"{env.get('cpu', '?')}, torch {env.get('torch', '?')}, {env.get('threads', '?')} thread(s); "
            f"reason: {base.get('reason', '?')}. A row fails when its test bits/dim moves by more than the "
            "tolerance either way (better beyond it may be a causality leak).")
    summary = (f"NLL gate: {'passed' if passed else 'FAILED'} — {verdicts.count('ok')} of {len(verdicts)} "
               f"experiments within ± {tol} bits/dim of the committed baseline.")
    header = ["Experiment", "Baseline bits/dim", "Now", "Δ", "Tolerance", "Verdict"]
    return Section("NLL regression gate", "gate", [summary, Table(header, rows, note=note)])
