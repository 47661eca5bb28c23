"""Per-sub-pixel bits maps of the evaluation: exact, consistent with the reported bits/dim."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from test_training import FixedLogits

from pixelzoo.evaluation import BitsMap, evaluate_nll, evaluate_with_map, save_bits_map_figures


def _data() -> tuple[FixedLogits, torch.Tensor, np.ndarray]:
    torch.manual_seed(0)
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4])
    x = torch.randint(0, 4, (23, 3, 5, 4), dtype=torch.uint8)
    bits = -np.log2(probs.double().numpy())[x.long().numpy()]  # by hand, per sub-pixel
    return FixedLogits(probs), x, bits


@pytest.mark.parametrize("batch", [4, 23, 100])
def test_bits_map_is_exact_and_matches_bits_per_dim(batch: int) -> None:
    model, x, bits = _data()
    metrics, m = evaluate_with_map(model, x, None, batch, "cpu", n_examples=5)
    assert m.mean_bits.shape == (3, 5, 4)
    np.testing.assert_allclose(m.mean_bits, bits.mean(0), rtol=1e-6)  # float32 logits, float64 sums
    assert m.mean_bits.mean() == pytest.approx(metrics["bits_per_dim"], rel=1e-12)
    # Examples span a batch boundary when batch=4: images 0..4, each with its own map.
    assert list(m.example_index) == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(m.example_images, x[:5].numpy())
    np.testing.assert_allclose(m.example_bits, bits[:5], rtol=1e-6)
    assert metrics == evaluate_nll(model, x, None, batch, "cpu")


def test_bits_map_round_trip_and_figures(tmp_path: Path) -> None:
    model, x, _ = _data()
    _, m = evaluate_with_map(model, x, None, 7, "cpu", n_examples=30)  # more examples than images
    assert len(m.example_index) == 23
    back = BitsMap.load(m.save(tmp_path / "bits_map.npz"))
    for k in ("mean_bits", "example_index", "example_images", "example_bits"):
        np.testing.assert_array_equal(getattr(back, k), getattr(m, k))
    m3 = BitsMap(m.mean_bits, m.example_index[:2], m.example_images[:2], m.example_bits[:2])
    paths = save_bits_map_figures(m3, 4, tmp_path / "figs", "toy")
    for p in paths.values():
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(paths) == ["bits_examples", "bits_map"]


def test_uniform_model_spends_log2_levels_bits_everywhere() -> None:
    x = torch.randint(0, 16, (6, 1, 3, 3), dtype=torch.uint8)
    _, m = evaluate_with_map(FixedLogits(torch.full((16,), 1 / 16)), x, None, 4, "cpu")
    np.testing.assert_allclose(m.mean_bits, np.full((1, 3, 3), math.log2(16)), rtol=1e-6)
