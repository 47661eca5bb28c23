"""PixelSNAIL: paper size, heads, the causal attention and its planted leak, cached sampling (float64)."""

import math

import pytest
import torch
from draws import assert_cached_draws_naive, labels_for

from pixelzoo.audit import audit_model, reachability, reachability_model
from pixelzoo.likelihood import CATEGORICAL, DiscretizedLogisticMixture, head_of
from pixelzoo.models import build_model
from pixelzoo.models.pixelsnail import PixelSNAIL
from pixelzoo.nn.attention import CausalAttention

N, SIZE = 3, 8
TINY = {"attn_blocks": 1, "nr_resnet": 1, "filters": 8, "n_mix": 2, "key_size": 4}


def _model(channels: int, levels: int, height: int, width: int, n_classes: int | None = None, **args):
    torch.manual_seed(0)
    model = build_model("pixelsnail", channels=channels, levels=levels, height=height, width=width,
                        n_classes=n_classes, **{**TINY, **args})
    return model.double().eval()


def test_paper_size_and_heads():
    with torch.device("meta"):  # no memory: only the parameter count
        model = build_model("pixelsnail", channels=3, levels=256, height=32, width=32)
    assert isinstance(model, PixelSNAIL) and isinstance(head_of(model), DiscretizedLogisticMixture)
    assert head_of(model).params == 100 and len(model.blocks) == 12 and len(model.blocks[0].res) == 4
    block = model.blocks[0]
    assert block.q_out.out_channels == 16 and block.values == 128  # small keys, values of filters / 2
    assert sum(p.numel() for p in model.parameters()) == 91_301_448
    binary = _model(1, 2, SIZE, SIZE)
    assert head_of(binary) is CATEGORICAL
    assert binary(torch.randint(0, 2, (2, 1, SIZE, SIZE))).shape == (2, 2, 1, SIZE, SIZE)
    assert isinstance(head_of(_model(1, 2, SIZE, SIZE, head="mixture")), DiscretizedLogisticMixture)
    with pytest.raises(ValueError, match="categorical head needs one channel"):
        _model(3, 2, SIZE, SIZE, head="categorical")
    with pytest.raises(ValueError, match="heads"):
        _model(1, 4, SIZE, SIZE, heads=3)


@pytest.mark.parametrize("heads", [1, 2])
def test_attention_matches_a_written_out_softmax_over_strictly_earlier_pixels(heads):
    gen = torch.Generator().manual_seed(0)
    q, k = (torch.randn(2, 4, 3, 5, generator=gen, dtype=torch.float64) for _ in range(2))
    v = torch.randn(2, 6, 3, 5, generator=gen, dtype=torch.float64)
    out = CausalAttention(heads)(q, k, v)
    qf, kf, vf = (t.flatten(2).view(2, heads, t.shape[1] // heads, 15) for t in (q, k, v))
    want = torch.zeros(2, heads, vf.shape[2], 15, dtype=torch.float64)
    for p in range(1, 15):  # pixel 0 has no earlier pixel: its output stays 0
        w = torch.softmax(torch.einsum("bhd,bhdj->bhj", qf[..., p], kf[..., :p]) / math.sqrt(qf.shape[2]), -1)
        want[..., p] = torch.einsum("bhj,bhvj->bhv", w, vf[..., :p])
    torch.testing.assert_close(out, want.reshape(2, 6, 3, 5), rtol=1e-12, atol=1e-12)
    assert torch.isfinite(out).all() and (out[:, :, 0, 0] == 0).all()


def test_first_pixel_gets_finite_outputs_and_gradients_in_fp32():
    model = build_model("pixelsnail", channels=3, levels=256, height=4, width=4, **TINY)
    x = torch.randint(0, 256, (2, 3, 4, 4))
    out = model(x)
    out.sum().backward()
    assert torch.isfinite(out).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_class_conditioning_reaches_the_output_and_is_required():
    model = _model(3, 4, SIZE, SIZE, n_classes=5)
    for p in model.parameters():
        p.data.normal_(0, 0.3)
    x = torch.randint(0, 4, (2, 3, SIZE, SIZE))
    assert not torch.allclose(model(x, torch.tensor([0, 0])), model(x, torch.tensor([3, 3])))
    with pytest.raises(ValueError, match="pass y"):
        model(x)


def test_rgb_order_only_through_the_coupling():
    model = _model(3, 4, SIZE, SIZE)
    dist = audit_model(model, 3, 4, SIZE, SIZE, batch=2)
    net = audit_model(model, 3, 4, SIZE, SIZE, batch=2, outputs="network")
    assert dist.summary()["n_leaks"] == 0 and net.summary()["n_leaks"] == 0
    hw, p = SIZE * SIZE, 5 * SIZE + 3
    r, g, b = p, hw + p, 2 * hw + p
    assert dist.dep[g, r] and dist.dep[b, r] and dist.dep[b, g] and not dist.dep[r, g]
    assert not net.dep[[r, g, b]][:, [r, g, b]].any()
    # Attention: one block already reaches far-right pixels of the row above (a conv stack would not).
    assert net.dep[r, (5 - 1) * SIZE + SIZE - 1] and net.dep[r, SIZE - 1]


@pytest.mark.parametrize("channels", [1, 3])
def test_structural_map_has_full_context_at_16x16(channels):
    s = reachability("pixelsnail", channels, 4, 16, 16).summary()
    assert s["n_leaks"] == 0 and s["n_unseen_earlier"] == 0 and s["n_blind_spot"] == 0, s


def test_a_planted_off_by_one_attention_mask_is_caught():
    model = _model(3, 4, SIZE, SIZE)
    model.blocks[0].attn.strict = False  # the query's own pixel joins its keys (which read the raw image)
    for outputs in ("distribution", "network"):
        result = audit_model(model, 3, 4, SIZE, SIZE, outputs=outputs)
        assert result.summary()["n_leaks"] > 0, outputs
    net = audit_model(model, 3, 4, SIZE, SIZE, outputs="network")
    assert all(out[1:] == inp[1:] for out, inp in net.leak_list())  # the leak is the pixel itself, only
    assert reachability_model(model, 3, 4, SIZE, SIZE).summary()["n_leaks"] > 0
    with pytest.raises(RuntimeError, match="not causal"):
        model.sampling_session(torch.zeros(1, 3, SIZE, SIZE, dtype=torch.long), None)


VARIANTS = {  # name -> (channels, levels, height, width, n_classes, labels, completion, extra args)
    "c3k16": (3, 16, 6, 6, None, None, False, {}),
    "c1k256-odd": (1, 256, 7, 5, None, None, False, {"heads": 2}),
    "c1k2-categorical": (1, 2, 6, 5, None, None, False, {"attn_blocks": 2}),
    "class": (3, 4, 6, 5, 3, "index", False, {}),
    "soft": (1, 4, 5, 6, 3, "soft", False, {"nr_resnet": 2}),
    "completion": (3, 8, 6, 6, 3, "index", True, {"attn_blocks": 2, "heads": 2}),
    "completion-binary": (1, 2, 6, 6, 3, "index", True, {}),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_cached_draws_exactly_the_naive_samples(variant):
    channels, levels, h, w, n_classes, labels, completion, extra = VARIANTS[variant]
    model = _model(channels, levels, h, w, n_classes, **extra)
    assert_cached_draws_naive(model, N, channels, levels, h, w, labels_for(labels, N, n_classes), completion)


@pytest.mark.parametrize("channels,levels,n_classes,extra", [
    (3, 16, None, {"heads": 2}), (1, 2, 3, {"attn_blocks": 2})])
def test_cached_logits_equal_the_forward(channels, levels, n_classes, extra):
    # Stricter than equal draws (a small error can leave a draw unchanged): every conditional, every step.
    model = _model(channels, levels, 5, 6, n_classes, **extra)
    x = torch.randint(0, levels, (2, channels, 5, 6), generator=torch.Generator().manual_seed(3))
    y = torch.tensor([2, 0]) if n_classes else None
    full = head_of(model).conditional_logits(model(x, y), x)
    session = model.sampling_session(x.clone(), y)
    for p in range(30):
        i, j = divmod(p, 6)
        for c in range(channels):
            torch.testing.assert_close(session.logits(c, i, j), full[:, :, c, i, j], rtol=1e-10, atol=1e-10)


@pytest.mark.slow
def test_structural_map_has_full_context_at_32x32():
    # ~50 s and ~1 GiB on one CPU thread (chunks of 16 rows keep the 1,024×1,024 score maps small).
    torch.manual_seed(0)
    model = build_model("pixelsnail", channels=1, levels=4, height=32, width=32, **TINY)
    s = reachability_model(model, 1, 4, 32, 32, chunk=16).summary()
    assert s["n_leaks"] == 0 and s["n_unseen_earlier"] == 0 and s["n_blind_spot"] == 0, s
