"""Stage start-up: `--help` answers without importing torch, mlflow or matplotlib (speed lives in
benchmarks/startup.py; here only what is imported), and the PNG grids need no torchvision."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "mlflow", "matplotlib", "torchvision", "pixelzoo.report")
PROBE = """
import runpy, sys
sys.argv = [{script!r}, "--help"]
try:
    runpy.run_path({script!r}, run_name="__main__")
except SystemExit:
    pass
print("LOADED", *sorted(m for m in {heavy!r} if m in sys.modules))
"""


@pytest.mark.parametrize("stage", ["download", "preprocess", "train", "evaluate", "sample", "report"])
def test_stage_help_imports_nothing_heavy(stage: str) -> None:
    script = str(ROOT / "stages" / f"{stage}.py")
    proc = subprocess.run([sys.executable, "-c", PROBE.format(script=script, heavy=HEAVY)],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    loaded = proc.stdout.strip().splitlines()[-1].split()[1:]
    assert loaded == [], f"{stage} --help imported {loaded}"


def test_png_grid_is_torchvisions_pixel_for_pixel(tmp_path: Path) -> None:
    from PIL import Image
    from torchvision.utils import save_image

    from pixelzoo.sampling import save_grid, to_unit

    g = torch.Generator().manual_seed(0)
    for shape, levels, nrow in (((5, 1, 7, 6), 2, 2), ((7, 3, 4, 4), 256, 3), ((3, 1, 5, 5), 4, 8)):
        x = torch.randint(0, levels, shape, generator=g)
        save_image(to_unit(x, levels), str(tmp_path / "tv.png"), nrow=nrow, padding=1, pad_value=0.5)
        save_grid(x, levels, tmp_path / "ours.png", nrow)
        theirs, ours = (np.array(Image.open(tmp_path / f)) for f in ("tv.png", "ours.png"))
        assert np.array_equal(theirs, ours)
