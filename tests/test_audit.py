"""Causality audit over every registered model, plus checks that the audit itself can fail.

Every model in ``registered()`` is audited at its tiny args on 8×8 images: C ∈ {1, 3}, K ∈ {2, 256},
batch ∈ {1, 3}, eval and train mode. A model registered later is audited without editing this file.
"""

import json

import pytest
import torch
from torch import nn

from pixelzoo.audit import audit, audit_model, main, render_receptive_field
from pixelzoo.models import build_model, registered
from pixelzoo.nn import MaskedConv2d, OutputHead, scale_input

SIZE = 8
MODELS = registered()


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("levels", [2, 256])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", MODELS)
def test_no_leak_in_any_registered_model(name, channels, levels, batch, mode):
    r = audit(name, channels, levels, SIZE, SIZE, batch=batch, mode=mode)
    s = r.summary()
    assert s["n_leaks"] == 0, f"{name} reads current/future sub-pixels: {s['first_leaks']}"
    assert s["n_outputs_cross_batch"] == 0, f"{name}: outputs of image 0 depend on other images"
    # Not vacuous: the last sub-pixel in generation order must see some earlier sub-pixel.
    last = int(r.rank.argmax())
    assert r.dep[last].any(), f"{name}: the audit sees no dependence at all (is x used via scale_input?)"


@pytest.mark.parametrize("name", ["pixelcnn", "gated_pixelcnn", "seed004_pixelcnn"])
def test_conditional_models_do_not_leak(name):
    s = audit(name, 3, 4, SIZE, SIZE, batch=2, mode="train", n_classes=5).summary()
    assert s["n_leaks"] == 0 and s["n_outputs_cross_batch"] == 0


@pytest.mark.parametrize("channels", [1, 3])
def test_gated_pixelcnn_has_no_blind_spot(channels):
    # Tiny args reach 4 layers × 2 = 8 rows/columns: every earlier sub-pixel of an 8×8 image is seen.
    r = audit("gated_pixelcnn", channels, 4, SIZE, SIZE)
    assert int(r.unseen.sum()) == 0 and int(r.blind_spot.sum()) == 0


@pytest.mark.parametrize("name", ["pixelcnn", "seed004_pixelcnn"])
def test_single_stream_models_have_a_blind_spot(name):
    r = audit(name, 1, 4, SIZE, SIZE)
    assert r.blind_spot.any()
    # Pixel (4, 2) misses (3, 6) one row up-right, yet sees (2, 6) further up the same column.
    o, q_hole, q_above = 4 * SIZE + 2, 3 * SIZE + 6, 2 * SIZE + 6
    assert r.blind_spot[o, q_hole] and not r.dep[o, q_hole] and r.dep[o, q_above]


def test_seed004_batchnorm_leaks_in_train_mode_only():
    train = audit("seed004_pixelcnn", 1, 4, SIZE, SIZE, batch=2, mode="train", norm="batch").summary()
    assert train["n_leaks"] > 0 and train["n_outputs_cross_batch"] > 0
    evl = audit("seed004_pixelcnn", 1, 4, SIZE, SIZE, batch=2, mode="eval", norm="batch").summary()
    assert evl["n_leaks"] == 0 and evl["n_outputs_cross_batch"] == 0


class _Toy(nn.Module):
    """One masked conv + head; ``first`` mask type and an optional batch-mixing term are the bugs."""

    def __init__(self, mask: str, mix_batch: bool = False, reverse: bool = False) -> None:
        super().__init__()
        self.conv = MaskedConv2d(mask, 1, 6, 3)
        self.head = OutputHead(6, 6, 1, 4)
        self.mix_batch, self.reverse = mix_batch, reverse

    def forward(self, x, y=None):
        h = scale_input(x, 4)
        if self.reverse:  # causal in reverse raster order
            h = h.flip(-1, -2)
        h = self.conv(h)
        if self.mix_batch:
            h = h + h.mean(0, keepdim=True)
        out = self.head(h)
        return out.flip(-1, -2) if self.reverse else out


class _Reversed(_Toy):
    def generation_order(self, channels, height, width):
        return torch.arange(channels * height * width).flip(0)


def test_audit_catches_a_current_pixel_leak():
    s = audit_model(_Toy("B"), 1, 4, 5, 5).summary()
    assert s["n_leaks"] == 25 and s["first_leaks"][0] == ((0, 0, 0), (0, 0, 0))
    assert audit_model(_Toy("A"), 1, 4, 5, 5).summary()["n_leaks"] == 0


def test_audit_catches_cross_batch_leaks():
    s = audit_model(_Toy("A", mix_batch=True), 1, 4, 5, 5, batch=2).summary()
    # Every output but the first reads the other image's earlier pixels through the batch mean.
    assert s["n_outputs_cross_batch"] == 24 and s["n_leaks"] == 0


def test_audit_follows_a_custom_generation_order():
    assert audit_model(_Reversed("A", reverse=True), 1, 4, 5, 5).summary()["n_leaks"] == 0
    assert audit_model(_Toy("A", reverse=True), 1, 4, 5, 5).summary()["n_leaks"] > 0


def test_render_and_cli_write_files(tmp_path):
    r = audit("pixelcnn", 3, 4, SIZE, SIZE)
    png = render_receptive_field(r, tmp_path / "rf.png", pixel=(4, 2))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="outside"):
        render_receptive_field(r, tmp_path / "bad.png", pixel=(SIZE, 0))
    out = str(tmp_path / "cli")
    main(["--model", "seed004_pixelcnn", "--out", out, "--size", "6", "--set", "norm=batch"])
    summary = json.loads((tmp_path / "cli" / "seed004_pixelcnn_audit.json").read_text())
    assert summary["eval"]["n_leaks"] == 0 and summary["train"]["n_leaks"] > 0
    assert (tmp_path / "cli" / "seed004_pixelcnn_train.png").exists()


def test_audit_leaves_the_model_untouched():
    model = build_model("pixelcnn", channels=1, levels=4, height=SIZE, width=SIZE, layers=1, hidden=4,
                        head_hidden=4)
    model.eval()
    audit_model(model, 1, 4, SIZE, SIZE, mode="train")
    assert not model.training and next(model.parameters()).dtype == torch.float32
