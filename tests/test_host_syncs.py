"""Issue 24.1: the training loop reads nothing back to the host between log points. Every tensor-to-Python
conversion (the host synchronizations of a GPU run) is counted on the CPU: two runs that differ only in
their number of steps between log points (one epoch, no log point and no save inside it) make exactly the
same number of conversions."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_training import RECIPE, config, make_dataset

from pixelzoo import training

CONVERSIONS = ("item", "tolist", "__float__", "__int__", "__bool__", "__index__")


def _count_conversions(monkeypatch: pytest.MonkeyPatch, data: Path, out: Path, steps: int,
                       recipe: dict) -> int:
    calls = {"n": 0}
    for name in CONVERSIONS:
        original = getattr(torch.Tensor, name)

        def counted(self: torch.Tensor, *args: object, _original=original) -> object:  # noqa: ANN001
            calls["n"] += 1
            return _original(self, *args)

        monkeypatch.setattr(torch.Tensor, name, counted)
    # one epoch cut at `steps`: the same validation and epoch end, log points and saves never in between
    cfg = config(epochs=1, max_steps=steps, log_every_steps=1000, checkpoint_minutes=1000, **recipe)
    training.train(cfg, data, out, out / "scratch")
    monkeypatch.undo()
    return calls["n"]


@pytest.mark.parametrize("recipe", [{}, RECIPE], ids=["plain", "ema+lr_decay"])
def test_no_host_sync_per_training_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        recipe: dict) -> None:
    """With the PixelCNN++ recipe on too: the EMA follows the step guard on the device."""
    data = make_dataset(tmp_path / "data")
    short = _count_conversions(monkeypatch, data, tmp_path / "a", steps=2, recipe=recipe)
    long = _count_conversions(monkeypatch, data, tmp_path / "b", steps=6, recipe=recipe)
    assert short > 0  # the counter sees the reads at the epoch end (it can fail)
    assert long - short == 0, f"{(long - short) / 4:.2f} host syncs per training step"
