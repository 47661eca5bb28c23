"""DVC stage ``download@<source>``: fetch (or generate) one raw source into ``data/raw/<source>/``."""

import argparse
import sys
from pathlib import Path

# Import the pixelzoo of this tree (also inside `dvc exp run` copies), not whichever one is installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pixelzoo.data.sources import download_source  # noqa: E402
from pixelzoo.errors import run_main  # noqa: E402
from pixelzoo.pipeline.settings import load_checked, section_entry  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("source", help="a key of `sources:` in params.yaml")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--raw-root", default="data/raw")
    args = parser.parse_args(argv)
    spec = section_entry(load_checked(args.params), "sources", args.source)
    download_source(args.source, spec, Path(args.raw_root) / args.source)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(f"download@{(sys.argv[1:] or ['?'])[0]}", main))
