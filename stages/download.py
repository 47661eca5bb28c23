"""DVC stage ``download@<source>``: fetch (or generate) one raw source into ``data/raw/<source>/``."""

import argparse
import sys
from pathlib import Path

# Import the pixelzoo of this tree (also inside `dvc exp run` copies), not whichever one is installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pixelzoo import safety  # noqa: E402
from pixelzoo.data.sources import download_source  # noqa: E402
from pixelzoo.errors import run_main  # noqa: E402
from pixelzoo.pipeline.settings import load_checked, precheck, section_entry  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("source", help="a key of `sources:` in params.yaml")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--raw-root", default="data/raw")
    args = parser.parse_args(argv)
    precheck(args.params, "sources", args.source)  # a params mistake stops here, before torch loads
    spec = section_entry(load_checked(args.params), "sources", args.source)
    raw_dir = safety.under(args.raw_root, args.source, what=f"raw folder of source {args.source!r}")
    download_source(args.source, spec, raw_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(f"download@{(sys.argv[1:] or ['?'])[0]}", main))
