"""Released checkpoints: every experiment's trained model is a DVC artifact declared in ``dvc.yaml``.

    dvc artifacts get <git URL or path of a pixelzoo repo> <experiment> -o outputs/<experiment>/train
    pixelzoo score outputs/<experiment>/train data/processed/<dataset>/test.npz -o nll.csv

The artifact is the train stage's output folder ``outputs/<exp>/train`` (``model.pt``: the best-validation
state_dict with its resolved config; ``mlflow_run.json``: the train run; ``history.json``): DVC fetches it
from the repository's default remote and verifies every file against the md5 in ``dvc.lock``, the
checksums of the release. ``dvc.yaml`` cannot loop in ``artifacts:``, so the block is generated from the
``experiments`` of ``params.yaml`` (``pixelzoo artifacts --write``); a test keeps it in sync, and a profile
copy gets the block of its own params (:func:`pixelzoo.profile.prepare_workdir`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

MARKER = "# --- artifacts: every trained model (generated from params.yaml by `pixelzoo artifacts --write`)"


def entries(params: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{experiment: {path, type: model, desc, labels}}`` for every experiment of ``params``."""
    datasets = params.get("datasets") or {}
    out = {}
    for key, exp in (params.get("experiments") or {}).items():
        ds = exp.get("dataset", "?")
        levels = (datasets.get(ds) or {}).get("levels", "?")
        conditional = bool(exp.get("conditional", (params.get("train_defaults") or {}).get("conditional")))
        labels = [exp.get("model", "?"), ds] + (["class-conditional"] if conditional else [])
        out[key] = {
            "path": f"outputs/{key}/train",
            "type": "model",
            "desc": f"{exp.get('model')} on {ds} ({levels} levels): best-validation checkpoint, train@{key}",
            "labels": labels,
        }
    return out


def render(params: Mapping[str, Any]) -> str:
    """The ``artifacts:`` block of dvc.yaml, with its marker line."""
    body = yaml.safe_dump({"artifacts": entries(params)}, sort_keys=False, width=200, allow_unicode=True)
    return f"{MARKER}\n{body}"


def _split(text: str) -> tuple[str, str]:
    """(dvc.yaml up to the generated block, the block); the block runs from the marker to the end."""
    at = text.find(MARKER)
    return (text, "") if at < 0 else (text[:at], text[at:])


def sync(root: Path, params_file: str = "params.yaml") -> bool:
    """Rewrite the generated block of ``root/dvc.yaml`` from ``root/params_file``; True if it changed."""
    dvc_yaml = Path(root) / "dvc.yaml"
    params = yaml.safe_load((Path(root) / params_file).read_text()) or {}
    head, block = _split(dvc_yaml.read_text())
    new = render(params)
    if block == new:
        return False
    dvc_yaml.write_text(head.rstrip("\n") + "\n\n" + new)
    return True


def in_sync(root: Path, params_file: str = "params.yaml") -> bool:
    params = yaml.safe_load((Path(root) / params_file).read_text()) or {}
    return _split((Path(root) / "dvc.yaml").read_text())[1] == render(params)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pixelzoo artifacts", description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="params.yaml", help="params file (default params.yaml)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="rewrite the block in dvc.yaml")
    mode.add_argument("--check", action="store_true", help="exit 1 if dvc.yaml's block is out of date")
    args = parser.parse_args(argv)
    root = Path.cwd()
    if not (root / "dvc.yaml").is_file() or not (root / args.params).is_file():
        print(f"pixelzoo artifacts: run in the project root (dvc.yaml and {args.params})", file=sys.stderr)
        return 1
    if args.write:
        print("dvc.yaml: artifacts " + ("updated" if sync(root, args.params) else "already up to date"))
    elif args.check:
        if not in_sync(root, args.params):
            print("dvc.yaml: the artifacts block is out of date; run `pixelzoo artifacts --write`",
                  file=sys.stderr)
            return 1
        print("dvc.yaml: artifacts up to date")
    else:
        print(render(yaml.safe_load((root / args.params).read_text()) or {}), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
