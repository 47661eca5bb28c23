"""DVC stage ``preprocess@<dataset>``: split + quantise a raw source into ``data/processed/<dataset>/``."""

import argparse
import sys
from pathlib import Path

# Import the pixelzoo of this tree (also inside `dvc exp run` copies), not whichever one is installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pixelzoo.data.preprocess import preprocess  # noqa: E402
from pixelzoo.errors import run_main  # noqa: E402
from pixelzoo.pipeline.settings import load_checked, precheck  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dataset", help="a key of `datasets:` in params.yaml")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--raw-root", default="data/raw")
    parser.add_argument("--out-root", default="data/processed")
    args = parser.parse_args(argv)
    precheck(args.params, "datasets", args.dataset)  # a params mistake stops here, before torch loads
    meta = preprocess(args.dataset, load_checked(args.params), args.raw_root, args.out_root)
    print(f"[preprocess@{args.dataset}] {meta['counts']} images, {meta['levels']} levels, "
          f"{meta['channels']}x{meta['height']}x{meta['width']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(f"preprocess@{(sys.argv[1:] or ['?'])[0]}", main))
