"""DVC stage ``report``: render reports/index.html, reports/README.md and reports/figures/ from the
metrics, training histories, samples and run pointers the other stages wrote.

The previous report stays in place until the new one is fully rendered (outputs are ``persist: true``,
so DVC does not delete them first): pages are rendered into a temp folder and then swapped in."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

# Import the pixelzoo of this tree (also in `dvc exp run` and profile copies), not the installed one.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pixelzoo import integrity  # noqa: E402
from pixelzoo.errors import run_main  # noqa: E402
from pixelzoo.pipeline.settings import load_checked  # noqa: E402
from pixelzoo.pipeline.startup import pause_gc, resume_gc  # noqa: E402

PAGES = ("figures", "curves", "index.html", "README.md")  # the report's outputs in dvc.yaml


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file")
    ap.add_argument("--root", type=Path, default=Path("."), help="tree holding metrics/, outputs/, data/")
    ap.add_argument("--out", type=Path, default=None, help="default: report.out_dir")
    args = ap.parse_args(argv)
    pause_gc()  # for the imports and params (pixelzoo.pipeline.startup)
    from pixelzoo.report import build_report  # matplotlib, torch: only past `--help`

    params = load_checked(args.params)
    resume_gc()
    out = args.out or Path((params.get("report") or {}).get("out_dir", "reports"))
    integrity.clean_stale_temps(out)
    tmp = integrity.temp_sibling(out)
    try:
        written = build_report(args.root, params, tmp)
        out.mkdir(parents=True, exist_ok=True)
        for name in PAGES:  # pages last: they refer to the figures
            new, old = tmp / name, out / name
            if new.is_dir():
                integrity.publish_dir(new, old)
            elif new.exists():
                os.replace(new, old)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    n_figures = len(written.figures)
    print(f"report: {out / written.html.name} and {out / written.markdown.name}, {n_figures} figures")
    for miss in written.missing_receptive_fields:
        print(f"report: receptive field not drawn: {miss}")


if __name__ == "__main__":
    raise SystemExit(run_main("report", main))
