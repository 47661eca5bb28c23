"""DVC stage ``report``: render reports/index.html, reports/README.md and reports/figures/ from the
metrics, training histories, samples and run pointers the other stages wrote.

The previous report stays in place until the new one is fully rendered (outputs are ``persist: true``,
so DVC does not delete them first): pages are rendered into a temp folder and then swapped in."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Import the pixelzoo of this tree (also in `dvc exp run` and profile copies), not the installed one.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pixelzoo import integrity, safety  # noqa: E402
from pixelzoo.errors import run_main  # noqa: E402
from pixelzoo.pipeline.settings import load_checked, precheck, report_options  # noqa: E402
from pixelzoo.pipeline.startup import pause_gc, resume_gc  # noqa: E402

PAGES = ("figures", "curves", "table.md", "index.html", "README.md")  # the report's outputs in dvc.yaml


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file")
    ap.add_argument("--root", type=Path, default=Path("."), help="tree holding metrics/, outputs/, data/")
    ap.add_argument("--out", type=Path, default=None, help="default: report.out_dir")
    args = ap.parse_args(argv)
    precheck(args.params)  # a params mistake stops here, before torch and matplotlib load
    pause_gc()  # for the imports and params (pixelzoo.pipeline.startup)
    from pixelzoo.report import build_report  # matplotlib, torch: only past `--help`

    params = load_checked(args.params)
    resume_gc()
    out = args.out or Path(report_options(params)["out_dir"])
    if args.out is None:  # from params: refused if it leaves the project (pixelzoo.safety), before any write
        safety.under(".", str(out), what="report.out_dir")
    integrity.clean_stale_temps(out)
    tmp = integrity.temp_sibling(out)
    try:  # an OS error (a full disk) while rendering: one message; the previous report stays in place
        written = _build(build_report, args.root, params, tmp, out)
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


def _build(build_report: Callable[..., Any], root: Path, params: dict, tmp: Path, out: Path) -> Any:
    try:
        return build_report(root, params, tmp)
    except safety.WriteFailed as err:
        raise safety.WriteFailed(f"{err}; the previous report in {out}/ is kept") from err
    except OSError as err:
        raise safety.write_error(Path(err.filename) if err.filename else out, err, kept=False) from err


if __name__ == "__main__":
    raise SystemExit(run_main("report", main))
