"""Stage start-up: `--help` answers without importing torch, mlflow or matplotlib (speed lives in
benchmarks/startup.py; here only what is imported), the PNG grids need no torchvision, validated params
are not re-validated (no torch for download/preprocess), and the GC pause of a stage's set-up."""

from __future__ import annotations

import gc
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pixelzoo.errors import UserError, run_main
from pixelzoo.pipeline import settings as config
from pixelzoo.pipeline.startup import pause_gc

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
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


def test_validated_params_are_stamped_and_the_next_stage_needs_no_torch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(ROOT / "ci" / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    params = config.load_checked()
    stamp = config.checked_stamp((tmp_path / "params.yaml").read_text())
    assert stamp.is_file() and stamp.parent == config.CHECKED_DIR
    probe = ("import sys; from pixelzoo.pipeline import settings; settings.load_checked(); "
             "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, env=ENV)
    assert out.returncode == 0 and out.stdout.split() == ["False"], out.stderr
    # Another text is another stamp, and a problem is never remembered: every stage reports it.
    params["experiments"]["pixelcnn-digits"]["model_args"]["hiden"] = 3
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    for _ in range(2):
        with pytest.raises(config.ParamsError, match="model_args.hiden: unknown argument"):
            config.load_checked()


def test_set_up_gc_pause_is_frozen_at_the_work_and_undone_by_a_failed_stage() -> None:
    probe = ("import gc; from pixelzoo.pipeline.startup import pause_gc, resume_gc; pause_gc(); x = [[]]; "
             "assert not gc.isenabled(); resume_gc(); print(gc.isenabled(), gc.get_freeze_count() > 0)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=ENV)
    assert out.stdout.split() == ["True", "True"], out.stderr

    def fails_during_set_up() -> None:
        pause_gc()
        raise UserError("inputs missing")

    assert run_main("stage@x", fails_during_set_up) == 1 and gc.isenabled()  # not left paused in a caller


WHERE = """
import sys
from pixelzoo.pipeline.startup import reuse_freed_memory
applied = reuse_freed_memory() if sys.argv[1] == "reuse" else False
import torch
block = torch.empty(2**24)  # 64 MiB: over glibc's largest mmap threshold
ptr = block.data_ptr()
for line in open("/proc/self/maps"):
    span, *rest = line.split(maxsplit=5)
    lo, hi = (int(v, 16) for v in span.split("-"))
    if lo <= ptr < hi:
        print(applied, rest[4].strip() if len(rest) > 4 and rest[4].strip() else "anonymous")
"""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's allocator")
def test_model_stages_serve_large_blocks_from_the_heap() -> None:
    """Under glibc's default a 64 MiB map is a fresh anonymous mapping (unmapped on free, its pages
    faulted in afresh next step: benchmarks/README.md measures that cost); after reuse_freed_memory
    (every model stage calls it in stage.start) it lies in the process heap, reused once freed."""
    runs = {mode: subprocess.run([sys.executable, "-c", WHERE, mode], capture_output=True, text=True,
                                 env=ENV, check=True).stdout.split() for mode in ("default", "reuse")}
    assert runs == {"default": ["False", "anonymous"], "reuse": ["True", "[heap]"]}, runs
    source = (ROOT / "src" / "pixelzoo" / "pipeline" / "stage.py").read_text()
    assert "reuse_freed_memory()" in source.split("def start", 1)[1].split("\ndef ", 1)[0]
