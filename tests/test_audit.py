"""Causality audit over every registered model, plus checks that the audit itself can fail.

Every model in ``registered()`` is audited at its tiny args on 8×8 images: C ∈ {1, 3}, K ∈ {2, 256},
batch ∈ {1, 3}, eval and train mode. A model registered later is audited without editing this file.
The structural reachability map is checked against the architectures' known shapes at 16×16.
"""

import json

import pytest
import torch
from torch import nn

from pixelzoo.audit import (
    audit,
    audit_model,
    default_pixel,
    main,
    reachability,
    reachability_model,
    render_receptive_field,
)
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


@pytest.mark.parametrize(
    "name,args",
    [("pixelcnn", {"hidden": 4}), ("gated_pixelcnn", {"hidden": 8}), ("seed004_pixelcnn", {"features": 8})],
)
def test_widths_not_divisible_by_three_colours_do_not_leak(name, args):
    # The paper's widths (128, 384) do not split evenly into R,G,B groups; the masks must still hold.
    s = audit(name, 3, 4, SIZE, SIZE, batch=2, mode="train", **args).summary()
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


# ---------------------------------------------------------------- structural reachability
RF = 16


@pytest.fixture(scope="module")
def structural():
    return {name: reachability(name, 1, 4, RF, RF) for name in MODELS}


@pytest.mark.parametrize("name", MODELS)
def test_structural_map_contains_every_random_init_dependence(structural, name):
    # A dependence a random init shows is a path in the graph; the structural map must have it too,
    # and it must never show a leak the leak test does not.
    r, s = audit(name, 1, 4, RF, RF), structural[name]
    assert not (r.dep & ~s.dep).any(), f"{name}: structural map misses dependences the gradients show"
    assert s.summary()["n_leaks"] == 0 and s.smallest is not None and s.smallest > 1e-250


@pytest.mark.parametrize("name", ["gated_pixelcnn", "diagonal_bilstm"])
def test_full_context_models_see_every_earlier_pixel(structural, name):
    # At 16×16 the random-init gradients of the Diagonal BiLSTM fall under 1e-9 for far pixels (92 were
    # reported unseen); structurally it sees everything, as its paper section says.
    assert int(structural[name].unseen.sum()) == 0


@pytest.mark.parametrize("name", ["pixelcnn", "seed004_pixelcnn"])
def test_stacked_masked_convs_keep_their_blind_spot_at_full_depth(structural, name):
    s = structural[name]
    i, j = default_pixel(RF, RF)
    o = i * RF + j
    # Deep enough to reach the top row, yet the pixel one row up and far right is never seen.
    assert s.dep[o, 0 * RF + RF - 1] and not s.dep[o, (i - 1) * RF + RF - 1] and s.blind_spot[o].any()


def test_row_lstm_sees_a_triangle(structural):
    s = structural["row_lstm"]
    i, j = default_pixel(RF, RF)
    seen = s.dep[i * RF + j].view(RF, RF)
    # Rightmost seen column per row above: widens by one column per row going up, until the image edge.
    right = [int(seen[i - k].nonzero().max()) for k in range(1, i + 1)]
    assert right[0] < RF - 1, "the row above should not be seen up to the right edge"
    for a, b in zip(right[:-1], right[1:], strict=True):
        assert b == min(a + 1, RF - 1), right
    assert seen[:i].any(1).all()  # every row above is seen somewhere


def test_structural_map_flags_a_leak_and_a_broken_premise():
    assert reachability_model(_Toy("B"), 1, 4, 5, 5).summary()["n_leaks"] == 25

    class _Negative(_Toy):
        def forward(self, x, y=None):
            return super().forward(x) - 2 * scale_input(x, 4)[:, None]

    with pytest.raises(RuntimeError, match="negative dependence"):
        reachability_model(_Negative("A"), 1, 4, 5, 5)


def test_cli_reports_structural_map(tmp_path, capsys):
    main(["--model", "diagonal_bilstm", "--out", str(tmp_path), "--size", "10", "--no-leak-test"])
    summary = json.loads((tmp_path / "diagonal_bilstm_audit.json").read_text())
    assert summary["structural"]["n_unseen_earlier"] == 0 and "eval" not in summary
    assert (tmp_path / "diagonal_bilstm_structural.png").exists()
    assert '"n_unseen_earlier": 0' in capsys.readouterr().out


# ---------------------------------------------------------------- PixelCNN++: whole pixels, coupling
def _pp(channels: int, **args) -> nn.Module:
    torch.manual_seed(0)
    return build_model("pixelcnn_pp", channels=channels, levels=4, height=SIZE, width=SIZE,
                       **{"nr_resnet": 1, "filters": 8, "n_mix": 2, **args})


@pytest.mark.parametrize("args", [{}, {"weight_norm": True}], ids=["plain", "weight_norm"])
def test_pixelcnn_pp_follows_the_rgb_order_only_through_the_coupling(args):
    model = _pp(3, **args)
    dist = audit_model(model, 3, 4, SIZE, SIZE, batch=2)
    net = audit_model(model, 3, 4, SIZE, SIZE, batch=2, outputs="network")
    assert dist.unit == "subpixel" and net.unit == "pixel"
    assert dist.summary()["n_leaks"] == 0 and net.summary()["n_leaks"] == 0
    hw, p = SIZE * SIZE, 5 * SIZE + 3
    r, g, b = p, hw + p, 2 * hw + p
    # The distribution of G sees R of its own pixel, B sees R and G; R sees neither; nothing sees B.
    assert dist.dep[g, r] and dist.dep[b, r] and dist.dep[b, g]
    assert not dist.dep[r, g] and not dist.dep[r, b] and not dist.dep[g, b]
    # ...and only through the coupling: the network's parameters of p see no colour of p.
    assert not net.dep[[r, g, b]][:, [r, g, b]].any()
    assert net.dep[g, p - 1] and net.dep[r, 2 * hw + p - SIZE]  # earlier pixels, every colour


def test_pixelcnn_pp_structural_map_has_full_context():
    s = reachability("pixelcnn_pp", 3, 4, SIZE, SIZE)
    summary = s.summary()
    assert s.unit == "pixel" and summary["n_leaks"] == 0
    assert summary["n_unseen_earlier"] == 0 and summary["n_blind_spot"] == 0, summary


def test_a_planted_unshifted_convolution_is_caught():
    model = _pp(3)
    conv = model.up_ul[0][0].conv_in  # one 2×2 down-right convolution, padded as an unshifted one
    conv.pad = (0, 1, 0, 1)  # reads rows i..i+1 and columns j..j+1: the pixel itself and later ones
    for outputs in ("distribution", "network"):
        s = audit_model(model, 3, 4, SIZE, SIZE, outputs=outputs).summary()
        assert s["n_leaks"] > 0, outputs
    assert reachability_model(model, 3, 4, SIZE, SIZE).summary()["n_leaks"] > 0
    with pytest.raises(RuntimeError, match="not causal"):
        model.eval().sampling_session(torch.zeros(1, 3, SIZE, SIZE, dtype=torch.long), None)
