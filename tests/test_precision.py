"""bf16 autocast, the GPU training path, run on CPU for every registered model: forward, backward, a step.

``precision: bf16`` on CPU takes the training loop's own autocast branch (``torch.autocast("cpu",
dtype=torch.bfloat16)``), so a dtype bug in any model shows here instead of on a rented GPU.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_training import config, make_dataset

from pixelzoo import checkpoint, training
from pixelzoo.models.registry import registered, tiny_args

BUILD = training.build_from_config  # the real builder, wrapped below


def run(tmp_path: Path, name: str, precision: str, monkeypatch: pytest.MonkeyPatch) -> tuple[dict, list, set]:
    """Two optimizer steps of ``name`` through training.train; (history, logged metrics, logits dtypes)."""
    dtypes: set[torch.dtype] = set()
    build = BUILD

    def build_and_watch(cfg, meta):  # records the dtype of the logits the loop's forward produces
        model = build(cfg, meta)
        model.register_forward_hook(lambda m, i, out: dtypes.add(out.dtype) if m.training else None)
        return model

    monkeypatch.setattr(training, "build_from_config", build_and_watch)
    conditional = name.startswith("seed004")
    cfg = config(model=name, model_args=tiny_args(name), precision=precision, max_steps=2, epochs=1,
                 conditional=conditional)
    logged: list[tuple[dict, int]] = []
    out = tmp_path / precision
    history = training.train(cfg, make_dataset(tmp_path / "data"), out, out / "scratch",
                             log_metrics=lambda m, s: logged.append((m, s)))
    return history, [m["train_step_nats"] for m, _ in logged if "train_step_nats" in m], dtypes


@pytest.mark.parametrize("name", registered())
def test_bf16_autocast_training_on_cpu_is_finite_and_close_to_fp32(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h32, loss32, dt32 = run(tmp_path, name, "fp32", monkeypatch)
    h16, loss16, dt16 = run(tmp_path, name, "bf16", monkeypatch)
    assert dt32 == {torch.float32} and dt16 == {torch.bfloat16}, (dt32, dt16)  # autocast really engaged
    assert h16["precision"] == "bf16-autocast" and h32["precision"] == "fp32"
    assert len(loss16) == len(loss32) == 2 and all(torch.isfinite(torch.tensor(loss16)))
    # Step 1 is the same initial weights on the same batch: only bf16 rounding separates the two.
    assert loss16[0] == pytest.approx(loss32[0], rel=2e-2)
    assert loss16[1] == pytest.approx(loss32[1], rel=5e-2)  # after one optimizer step in each precision
    model, ckpt = checkpoint.load_trained(tmp_path / "bf16" / "model.pt")
    assert all(torch.isfinite(p).all() for p in model.parameters())
    # Validation is exact fp32 in both: the two trained models score alike.
    assert ckpt["valid_bits_per_dim"] == pytest.approx(h32["best_valid_bits_per_dim"], rel=5e-2)
