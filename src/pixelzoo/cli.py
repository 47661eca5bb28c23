"""pixelzoo: use what was trained (sample, score, complete) and the project's tools, under one roof.

    pixelzoo sample  MODEL -n 64 [--class 3] [--seed 0] [--method cached|naive] -o grid.png [--npz out.npz]
    pixelzoo score   MODEL images.npz|DIR_OF_PNG|image.png -o nll.csv
    pixelzoo complete MODEL image.png --keep-rows 14 -o out.png
    pixelzoo check | lineage | audit | profile | artifacts ...  (the modules of PASSTHROUGH)

MODEL: an experiment key of params.yaml (its trained checkpoint in this checkout), a model.pt file or a
folder holding one (e.g. fetched with `dvc artifacts get`), or an MLflow model URI (models:/<exp>@best).

argparse (the standard library) and lazy imports: `--help` and argument errors answer without importing
torch; a user mistake is one line on stderr and exit status 1 (2 for a usage error).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

PROG = "pixelzoo"
# Existing entry points, run with the rest of the command line (their own --help).
PASSTHROUGH = {
    "check": ("pixelzoo.pipeline.settings", "validate a params file; list every problem"),
    "lineage": ("pixelzoo.pipeline.lineage", "which run, commit, params and data made the numbers"),
    "audit": ("pixelzoo.audit", "causality and receptive-field audit of a registered model"),
    "profile": ("pixelzoo.pipeline.profiles.profile",
                "run a params profile (ci, quick, cpu, rehearsal) in .work/<profile>/"),
    "artifacts": ("pixelzoo.artifacts", "the DVC artifacts block of dvc.yaml (every trained model)"),
}
MODEL_HELP = "experiment key, model.pt file or folder, or MLflow model URI (models:/<exp>@best)"


def _parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                  epilog="MODEL: " + MODEL_HELP + ". `pixelzoo COMMAND --help` for each.")
    sub = top.add_subparsers(dest="command", metavar="COMMAND", required=True)

    s = sub.add_parser("sample", help="draw images from a trained model into a PNG grid (and .npz)")
    s.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    s.add_argument("-n", type=int, default=64, help="number of images (default 64)")
    s.add_argument("--class", dest="label", type=int, help="class of every image (conditional models)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0): same seed, same images")
    s.add_argument("--method", choices=("cached", "naive"), default="cached",
                   help="cached: the model's incremental session; naive: one forward per sub-pixel "
                        "(the reference); both draw the same images")
    s.add_argument("-o", "--out", type=Path, required=True, help="PNG grid to write")
    s.add_argument("--npz", type=Path, help="also write the images as levels: arrays x (N×C×H×W), levels")
    s.add_argument("--per-row", type=int, help="images per grid row (default ≈ √n)")

    c = sub.add_parser("score", help="exact NLL of each image (nats and bits/dim) into a CSV")
    c.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    c.add_argument("images", type=Path, metavar="IMAGES",
                   help=".npz of levels (array x, or its only array; optional labels y), a PNG, or a folder "
                        "of PNGs (8-bit, quantized as the dataset: v -> floor(v·levels/256))")
    c.add_argument("-o", "--out", type=Path, required=True, help="CSV to write: image,nats,bits_per_dim")
    c.add_argument("--class", dest="label", type=int, help="class of every image (conditional models)")
    c.add_argument("--quantize", action="store_true",
                   help="the .npz holds 0..255 pixel values, not levels: quantize them as PNGs are")
    c.add_argument("--batch-size", type=int, default=100,
                   help="images per forward (default 100, evaluate.batch_size: bit-identical to evaluate)")

    m = sub.add_parser("complete", help="keep the top rows of an image, sample the rest")
    m.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    m.add_argument("image", type=Path, help="8-bit PNG of the model's size")
    m.add_argument("--keep-rows", type=int, required=True, help="rows kept from the top of the image")
    m.add_argument("-n", type=int, default=4, help="completions to draw (default 4)")
    m.add_argument("--class", dest="label", type=int, help="class (conditional models)")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--method", choices=("cached", "naive"), default="cached")
    m.add_argument("-o", "--out", type=Path, required=True,
                   help="PNG: the original, then each completion, in one row")

    for name, (_, text) in PASSTHROUGH.items():
        sub.add_parser(name, help=text, add_help=False)
    return top


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in PASSTHROUGH:
        return _passthrough(argv[0], argv[1:])
    args = _parser().parse_args(argv)
    from pixelzoo.errors import UserError

    try:
        return {"sample": cmd_sample, "score": cmd_score, "complete": cmd_complete}[args.command](args)
    except UserError as err:
        print(f"{PROG} {args.command}: {err}", file=sys.stderr)
        return 1


def _passthrough(name: str, rest: list[str]) -> int:
    import importlib

    from pixelzoo import commands

    if name in commands.LIGHT:  # --help and usage errors answer before the heavy module is imported
        commands.parser(name, f"{PROG} {name}", PASSTHROUGH[name][1]).parse_args(rest)
    module = importlib.import_module(PASSTHROUGH[name][0])
    if name == "check":  # pixelzoo.config's CLI has one command, `check`
        rest = ["check", *rest]
    saved = sys.argv[0]
    sys.argv[0] = f"{PROG} {name}"  # argparse names the command in usage lines
    try:
        return int(module.main(rest) or 0)
    finally:
        sys.argv[0] = saved


# ----------------------------------------------------------------------------- commands
def cmd_sample(args: argparse.Namespace) -> int:
    from pixelzoo.api import InputError, load

    if args.n < 1:
        raise InputError(f"-n must be >= 1, got {args.n}")
    model = load(args.model)
    started = time.monotonic()
    images = model.sample(args.n, y=args.label, seed=args.seed, method=args.method)
    took = time.monotonic() - started
    per_row = args.per_row or max(1, round(args.n ** 0.5))
    _save_grid(images, model.levels, args.out, per_row)
    if args.npz:
        import numpy as np

        args.npz.parent.mkdir(parents=True, exist_ok=True)
        extra = {"y": np.full(args.n, args.label, dtype=np.int64)} if args.label is not None else {}
        np.savez_compressed(args.npz, x=images.numpy().astype(np.uint8), levels=model.levels, **extra)
    what = f", class {args.label}" if args.label is not None else ""
    written = f"{args.out}, {args.npz}" if args.npz else str(args.out)
    print(f"{args.n} samples of {model.name} ({args.method}, seed {args.seed}{what}) in {took:.1f} s "
          f"-> {written}")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    import math

    from pixelzoo.api import load

    model = load(args.model)
    names, x, y = read_images(args.images, model, quantize=args.quantize)
    labels = args.label if args.label is not None else y
    started = time.monotonic()
    nats = model.nll(x, labels, batch_size=args.batch_size)
    took = time.monotonic() - started
    bpd = nats / (math.prod(model.shape) * math.log(2.0))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w") as fh:
        fh.write("image,nats,bits_per_dim\n")
        for name, n, b in zip(names, nats.tolist(), bpd.tolist(), strict=True):
            fh.write(f"{name},{n!r},{b!r}\n")  # repr: every digit of the float64, as computed
    print(f"scored {len(names)} image(s) with {model.name} in {took:.1f} s: mean {float(nats.mean()):.3f} "
          f"nats/image, {float(bpd.mean()):.4f} bits/dim -> {args.out}")
    return 0


def cmd_complete(args: argparse.Namespace) -> int:
    import torch

    from pixelzoo.api import InputError, load

    model = load(args.model)
    if not 0 <= args.keep_rows <= model.height:
        raise InputError(f"--keep-rows must be in [0, {model.height}] for {model.height}-row images, "
                         f"got {args.keep_rows}")
    if args.n < 1:
        raise InputError(f"-n must be >= 1, got {args.n}")
    _, x, _ = read_images(args.image, model)
    known = torch.zeros(model.shape, dtype=torch.bool)
    known[:, : args.keep_rows] = True
    out = model.complete(x.expand(args.n, *model.shape), known, y=args.label, seed=args.seed,
                         method=args.method)
    _save_grid(torch.cat([x, out]), model.levels, args.out, args.n + 1)
    note = getattr(model.module, "completion_note", None)
    print(f"{args.n} completion(s) of {args.image} below row {args.keep_rows} with {model.name} -> {args.out}"
          + (f" ({note})" if note else ""))
    return 0


# ----------------------------------------------------------------------------- images in and out
def _save_grid(images: Any, levels: int, path: Path, per_row: int) -> None:
    from pixelzoo.sampling import save_grid

    save_grid(images, levels, path, nrow=per_row)


def read_images(src: Path, model: Any, quantize: bool = False) -> tuple[list[str], Any, Any]:
    """(names, levels N×C×H×W, labels or None) from an .npz, a PNG or a folder of PNGs, checked against
    ``model`` (size, channels, levels): any mismatch is one InputError naming the file."""
    import numpy as np

    from pixelzoo.api import InputError

    if src.is_dir():
        files = sorted(p for p in src.iterdir() if p.suffix.lower() == ".png")
        if not files:
            raise InputError(f"{src} holds no .png files")
        x = model.check_levels(np.stack([_png_levels(p, model) for p in files]))
        return [p.name for p in files], x, None
    if not src.is_file():
        raise InputError(f"{src} does not exist")
    if src.suffix.lower() == ".png":
        return [src.name], model.check_levels(_png_levels(src, model)[None]), None
    if src.suffix.lower() != ".npz":
        raise InputError(f"{src}: give an .npz of levels, a .png or a folder of .png files")
    try:
        with np.load(src) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as err:  # noqa: BLE001 - any reading failure means "not an npz"
        raise InputError(f"{src} is not a readable .npz ({type(err).__name__}: {err})") from err
    images = [k for k, a in arrays.items() if a.ndim >= 3]
    key = "x" if "x" in arrays else (images[0] if len(images) == 1 else None)
    if key is None:
        raise InputError(f"{src}: no array `x` (found {', '.join(arrays) or 'none'}); name the images `x`")
    x = arrays[key]
    if x.ndim == 3 and model.channels == 1:
        x = x[:, None]  # N×H×W gray
    if quantize:
        x = _quantize(x, model, str(src))
    x = model.check_levels(x, what=f"{src} [{key}]")
    y = arrays.get("y")
    return [f"{src.name}[{i}]" for i in range(len(x))], x, (y if model.conditional else None)


def _quantize(v: Any, model: Any, where: str) -> Any:
    """8-bit values -> the dataset's levels: floor(v·levels/256), as preprocess does."""
    import numpy as np

    from pixelzoo.api import InputError

    v = np.asarray(v)
    if v.dtype.kind not in "ui" or (v.size and (v.min() < 0 or v.max() > 255)):
        raise InputError(f"{where}: expected 8-bit pixel values 0..255 to quantize")
    return (v.astype(np.int64) * model.levels // 256).astype(np.int64)


def _png_levels(path: Path, model: Any) -> Any:
    """One 8-bit PNG as C×H×W levels of ``model``; wrong size, channels or depth: one InputError."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    from pixelzoo.api import InputError

    try:
        img = Image.open(path)
        img.load()
    except (OSError, UnidentifiedImageError) as err:
        raise InputError(f"{path} is not a readable image ({err})") from err
    c, h, w = model.shape
    if img.size != (w, h):
        raise InputError(f"{path} is {img.size[0]}×{img.size[1]} pixels; {model.name} expects {w}×{h}")
    modes = {1: ("L", "1"), 3: ("RGB",)}.get(c, ())
    if img.mode not in modes:
        want = "grayscale (PNG mode L)" if c == 1 else "RGB without alpha (PNG mode RGB)"
        raise InputError(f"{path} has PNG mode {img.mode} ({len(img.getbands())} channel(s)); "
                         f"{model.name} expects {c} channel(s): {want}, 8 bits")
    a = np.asarray(img.convert("L") if img.mode == "1" else img)
    a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    return _quantize(a, model, str(path))


if __name__ == "__main__":
    raise SystemExit(main())
