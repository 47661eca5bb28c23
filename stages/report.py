"""DVC stage ``report``: render reports/index.html, reports/README.md and reports/figures/ from the
metrics, training histories, samples and run pointers the other stages wrote."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

# Import the pixelzoo of this tree (also in `dvc exp run` and profile copies), not the installed one.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file")
    ap.add_argument("--root", type=Path, default=Path("."), help="tree holding metrics/, outputs/, data/")
    ap.add_argument("--out", type=Path, default=None, help="default: report.out_dir")
    args = ap.parse_args(argv)
    from pixelzoo.report import build_report  # matplotlib, torch: only past `--help`

    if not args.params.exists():
        raise SystemExit(f"params file {args.params} not found; run from the repo root or pass --params")
    params = yaml.safe_load(args.params.read_text()) or {}
    out = args.out or Path((params.get("report") or {}).get("out_dir", "reports"))
    written = build_report(args.root, params, out)
    print(f"report: {written.html} and {written.markdown}, {len(written.figures)} figures")
    for miss in written.missing_receptive_fields:
        print(f"report: receptive field not drawn: {miss}")


if __name__ == "__main__":
    main()
