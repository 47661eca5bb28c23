"""Lineage of a reported number: ``pixelzoo-lineage <experiment>`` (``python -m pixelzoo.pipeline.lineage``).

Prints the experiment's test NLL, the MLflow runs of its train / evaluate / sample stages (from the run
pointers inside the stage outputs), the git commit and params each ran with, and the data digests
down to the raw files' checksums. Anything that no longer matches the workspace is flagged STALE by the
report's rule (:mod:`pixelzoo.pipeline.provenance`: params as resolved, data digest, code since a clean
commit). The data arrays, the checkpoint and the code are also re-hashed on disk and compared with the
digests each run measured: a file changed after the run that wrote it is TAMPERED, anything else that
differs STALE, both hashes shown. ``--check`` exits 1 if anything is STALE or TAMPERED. ``--profile quick``
reads the profile copy in ``.work/quick/``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pixelzoo import commands, integrity
from pixelzoo.data.datasets import load_meta, read_split
from pixelzoo.errors import UserError
from pixelzoo.pipeline import layout
from pixelzoo.pipeline import provenance as rules
from pixelzoo.pipeline.settings import load_checked, resolve_experiment
from pixelzoo.pipeline.tracking import client as tracking
from pixelzoo.pipeline.tracking.names import TAG_COMMIT, TAG_DATA, TAG_DIRTY, TAG_DVC_EXP

STAGES = tuple(layout.STAGE_DIRS)  # the tracked stages, in pipeline order


def lineage(experiment: str) -> tuple[list[str], bool]:
    """Report lines for ``experiment`` and whether anything is stale (run from the repository root)."""
    params = load_checked()
    lines, stale = _metrics_lines(experiment)

    def flag(ok: bool, what: str) -> None:
        nonlocal stale
        stale |= not ok
        lines.append(f"  {'ok   ' if ok else 'STALE'}  {what}")

    commit_now, dirty_now = tracking.git_state()
    cfg_now = resolve_experiment(params, experiment)
    meta = load_meta(layout.data_dir(cfg_now["dataset"]))
    runs, pointers, missing = _runs(experiment, lines)
    stale |= missing
    lines += _params_and_data_lines(runs, meta)

    root = Path.cwd()
    where = rules.code_root(root)
    lines.append(f"checks against the workspace (commit {commit_now[:12]}{', dirty' if dirty_now else ''}; "
                 f"code compared in {where}):")
    verdict = rules.resolve(root, params, experiment, pointers, rules.RunStore())
    for stage in runs:
        reasons = [r.split(": ", 1)[1] for r in verdict.stale if r.startswith(f"{stage}: ")]
        flag(not reasons, f"{stage}: " + ("; ".join(reasons) or "params, data and code match"))
        t = runs[stage].data.tags
        if t.get(TAG_DIRTY) == "true":
            lines.append(f"  note   {stage}: ran on a dirty tree; its code cannot be compared")
        elif tracking.code_changes_since(t.get(TAG_COMMIT, "unknown"), cwd=where) is None:
            commit = t.get(TAG_COMMIT, "?")[:12]
            lines.append(f"  note   {stage}: commit {commit} unknown in {where}; code not compared")
    lines.extend(f"  note   {u}" for u in verdict.unchecked)
    lines.append("files re-hashed now (data arrays, checkpoint, code) against what each run measured:")
    for verdict, what in measured_checks(experiment, runs, layout.data_dir(cfg_now["dataset"]), meta):
        stale |= verdict != "ok"
        lines.append(f"  {verdict:<8} {what}")
    return lines, stale


def _metrics_lines(experiment: str) -> tuple[list[str], bool]:
    """The committed metrics line, or why there is none (then the experiment is stale)."""
    metrics_file = layout.metrics_path(experiment)
    if not metrics_file.exists():
        return [f"{experiment}: no {metrics_file} yet (run `dvc repro evaluate@{experiment}`)"], True
    m = json.loads(metrics_file.read_text())
    return [f"{experiment}: {m['split']} {m['test_bits_per_dim']:.4f} bits/dim, "
            f"{m['test_nats_per_image']:.3f} nats/image over {m['n_images']} images "
            f"({m['model']} on {m['dataset']}, {m['n_params']} parameters)  [{metrics_file}]"], False


def _runs(experiment: str, lines: list[str]) -> tuple[dict[str, Any], dict[str, tracking.RunPointer], bool]:
    """Each tracked stage's MLflow run, read once through its pointer; a line per stage into ``lines``;
    True when a stage has no pointer."""
    from mlflow.tracking import MlflowClient

    lines.append("runs:")
    runs: dict[str, Any] = {}
    pointers: dict[str, tracking.RunPointer] = {}
    missing = False
    for stage in STAGES:
        pointer = tracking.read_pointer(layout.pointer_path(experiment, stage), stage)
        if pointer is None:
            lines.append(f"  {stage:<9} no run pointer in {layout.stage_dir(experiment, stage)}")
            missing = True
            continue
        run = MlflowClient(tracking_uri=pointer.tracking_uri).get_run(pointer.run_id)
        runs[stage], pointers[stage] = run, pointer
        t = run.data.tags
        lines.append(
            f"  {stage:<9} {run.info.run_id}  {pointer.run_name}  {run.info.status}  "
            f"commit {t.get(TAG_COMMIT, '?')[:12]}{' (dirty)' if t.get(TAG_DIRTY) == 'true' else ''}"
            f"  dvc exp {t.get(TAG_DVC_EXP, '-')}  [{pointer.tracking_uri}]"
        )
    return runs, pointers, missing


def _params_and_data_lines(runs: Mapping[str, Any], meta: Mapping[str, Any]) -> list[str]:
    lines = []
    if "train" in runs:
        lines.append("params (as resolved for train):")
        lines.extend(f"  {k} = {v}" for k, v in sorted(runs["train"].data.params.items()))
    lines.append(
        f"data: {meta['name']} (source {meta['source']}, {meta['levels']} levels, "
        f"{meta['channels']}x{meta['height']}x{meta['width']})"
    )
    lines.extend(
        f"  {split}: sha256 {h}  ({meta['counts'][split]} images)" for split, h in meta["sha256"].items()
    )
    lines.extend(f"  raw {name}: sha256 {h}" for name, h in meta.get("raw_sha256", {}).items())
    return lines


def measured_checks(
    experiment: str, runs: Mapping[str, Any], data: Path, meta: Mapping[str, Any]
) -> list[tuple[str, str]]:
    """(verdict, what) per check: ``TAMPERED`` when a file no longer matches what the run that wrote it
    recorded (a split against meta.json, model.pt against its train run); ``STALE`` when a run read or ran
    something other than what is on disk now; ``ok`` otherwise. Every mismatch shows both hashes."""
    out: list[tuple[str, str]] = []
    on_disk: dict[str, str] = {}
    for split in sorted({k.rsplit(".", 1)[1] for r in runs.values() for k in r.data.tags
                         if k.startswith(TAG_DATA + ".")}):
        try:
            on_disk[split] = read_split(data, split)[2]
        except UserError as err:
            out.append(("TAMPERED", f"data {split}: {err}"))
            continue
        recorded = meta["sha256"].get(split)
        if on_disk[split] != recorded:
            out.append(("TAMPERED", f"data {data / split}.npz: arrays sha256 {on_disk[split]}, but "
                                    f"{data / 'meta.json'} records {recorded}"))
    for stage, run in runs.items():
        t = run.data.tags
        for key in sorted(k for k in t if k.startswith(TAG_DATA + ".")):
            split = key.rsplit(".", 1)[1]
            if split in on_disk:
                ok = t[key] == on_disk[split]
                out.append(("ok" if ok else "STALE", f"{stage}: read {split} data sha256 {t[key]}"
                            + ("" if ok else f", on disk now {on_disk[split]}")))
        if stage in layout.STAGE_DIRS:
            now = integrity.code_digest(layout.stage_code(stage), Path.cwd())
            rec = t.get(tracking.TAG_CODE, "(not recorded)")
            out.append(("ok" if rec == now else "STALE",
                        f"{stage}: code sha256 {rec}" + ("" if rec == now else f", now {now}")))
    out += _checkpoint_checks(experiment, runs)
    return out


def _checkpoint_checks(experiment: str, runs: Mapping[str, Any]) -> list[tuple[str, str]]:
    train = runs.get("train")
    path = layout.stage_dir(experiment, "train") / "model.pt"
    if train is None or not path.exists():
        return []
    recorded = train.data.tags.get(tracking.TAG_CHECKPOINT)
    now = integrity.file_sha256(path)
    diff = "" if now == recorded else f", its train run {train.info.run_id} recorded {recorded}"
    out = [("ok" if now == recorded else "TAMPERED", f"checkpoint {path}: sha256 {now}{diff}")]
    for stage in ("evaluate", "sample"):
        if stage not in runs:
            continue
        t = runs[stage].data.tags
        read, parent = t.get(tracking.TAG_CHECKPOINT), t.get(tracking.TAG_TRAIN_RUN)
        ok = read == recorded and parent == train.info.run_id
        out.append(("ok" if ok else "STALE",
                    f"{stage}: loaded checkpoint sha256 {read} of train run {parent}" + ("" if ok else
                    f"; the current train run {train.info.run_id} recorded {recorded}")))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pixelzoo-lineage", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands.lineage_arguments(parser)
    args = parser.parse_args(argv)
    if args.profile or args.workdir:
        workdir = args.workdir or integrity.PROJECT_ROOT / ".work" / args.profile
        if not (workdir / "params.yaml").is_file():
            print(f"pixelzoo-lineage: no profile copy in {workdir}; run "
                  f"`python -m pixelzoo.profile {args.profile or '<profile>'}` first", file=sys.stderr)
            return 2
        os.chdir(workdir)
    try:
        lines, stale = lineage(args.experiment)
    except UserError as err:
        print(f"pixelzoo-lineage: {err}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 1 if (stale and args.check) else 0


if __name__ == "__main__":
    sys.exit(main())
