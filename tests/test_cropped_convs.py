"""The cropped forward of masked convolutions (nn.masks.cropped_conv) computes what ``weight * mask`` does.

Every registered model, float64, one and three colour channels (R,G,B groups), with and without a
class: logits and parameter gradients with the cropped forward equal those of the masked reference.
"""

import contextlib

import pytest
import torch

from pixelzoo.models import build_model, registered, tiny_args
from pixelzoo.nn import GatedMaskedConv2d, MaskedConv2d, masks
from pixelzoo.nn.masks import PrefixPlan, crop_plan, masked_reference
from pixelzoo.nn.scan import GateConv

SIZE, LEVELS, N_CLASSES = 6, 4, 3


def _logits_and_grads(model, x, y):
    model.zero_grad(set_to_none=True)
    out = model(x, y)
    (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.detach(), grads


SHIFTED_MODELS = ("pixelcnn_pp", "pixelsnail")  # shifted convs (and attention), no masks
MASKED_MODELS = [n for n in registered() if n not in SHIFTED_MODELS]
CHANNELS_LAST_MODELS = ("pixelcnn", "gated_pixelcnn", "seed004_pixelcnn")  # nn.masks.network_input


def test_only_the_shifted_conv_models_have_no_masked_layer():
    for name in registered():
        model = build_model(name, channels=3, levels=LEVELS, height=SIZE, width=SIZE, **tiny_args(name))
        has_masks = any(isinstance(m, MaskedConv2d) for m in model.modules())
        assert has_masks == (name in MASKED_MODELS), name


@pytest.mark.parametrize("min_run", [None, 1])
@pytest.mark.parametrize("conditional", [False, True])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", MASKED_MODELS)
def test_cropped_forward_matches_the_masked_reference(name, channels, conditional, min_run, monkeypatch):
    """``min_run`` 1: every 1×1 with R,G,B runs takes one product per run (at paper size only the wide
    head layers do), so the tiny models test that path too."""
    if min_run is not None:
        monkeypatch.setattr(masks, "PREFIX_MIN_RUN", min_run)
    torch.manual_seed(0)
    # Widths that split unevenly into R,G,B groups (the centre tap of a cropped k×k keeps its mask).
    model = build_model(name, channels=channels, levels=LEVELS, height=SIZE, width=SIZE,
                        n_classes=N_CLASSES if conditional else None, **tiny_args(name)).double()
    x = torch.randint(0, LEVELS, (2, channels, SIZE, SIZE))
    y = torch.tensor([0, 2]) if conditional else None
    fast, fast_grads = _logits_and_grads(model, x, y)
    cropped = [m for m in model.modules() if isinstance(m, MaskedConv2d)
               and getattr(m, "_crop", (None, None))[1] is not None]
    with masked_reference():
        ref, ref_grads = _logits_and_grads(model, x, y)
    assert cropped, "no masked layer of this model took the cropped forward"
    if min_run == 1 and channels == 3 and name in CHANNELS_LAST_MODELS:
        assert any(isinstance(m._crop[1], PrefixPlan) for m in cropped), "no 1×1 took one product per run"
    torch.testing.assert_close(fast, ref, rtol=1e-12, atol=1e-12)
    assert fast_grads.keys() == ref_grads.keys()
    for key in ref_grads:
        torch.testing.assert_close(fast_grads[key], ref_grads[key], rtol=1e-12, atol=1e-12, msg=key)


@pytest.mark.parametrize("make", [
    lambda: MaskedConv2d("A", 3, 13, 7, groups=3),
    lambda: MaskedConv2d("B", 13, 13, 3, groups=3),
    lambda: MaskedConv2d("B", 5, 7, (1, 5), groups=1),
    lambda: MaskedConv2d("A", 1, 4, (3, 1), groups=1),
    lambda: GatedMaskedConv2d("A", 3, 7, (1, 5), groups=3),
    lambda: GateConv("B", 8, 5, (1, 3), groups=3),
])
def test_each_layer_kind_matches_and_hidden_taps_get_zero_gradient(make):
    torch.manual_seed(1)
    conv = make().double()
    x = torch.randn(2, conv.in_channels, 5, 4, dtype=torch.float64)
    out = conv(x)
    assert conv._crop[1] is not None
    out.square().sum().backward()
    grad, conv.weight.grad = conv.weight.grad, None
    with masked_reference():
        ref = conv(x)
    ref.square().sum().backward()
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, conv.weight.grad, rtol=1e-12, atol=1e-12)
    assert torch.equal(grad[conv.mask == 0], torch.zeros_like(grad[conv.mask == 0]))


def test_state_dict_is_the_masked_layers_and_an_edited_mask_is_obeyed():
    conv = MaskedConv2d("B", 6, 6, 3, groups=3).double()
    assert set(conv.state_dict()) == {"weight", "bias", "mask"}
    assert conv.weight.shape == (6, 6, 3, 3)
    x = torch.randn(1, 6, 4, 4, dtype=torch.float64)
    conv(x)
    assert conv._crop[1] is not None
    with torch.no_grad():
        conv.mask.fill_(1)  # a leak on purpose: every tap visible; the forward must follow the mask
    full = torch.nn.functional.conv2d(x, conv.weight, conv.bias, padding=1)
    torch.testing.assert_close(conv(x), full)
    assert conv._crop[1] is None and crop_plan(conv.mask) is None


def test_a_narrow_1x1_runs_as_one_masked_gemm():
    """Runs of fewer than PREFIX_MIN_RUN outputs ran slower as separate products than the masked GEMM."""
    conv = MaskedConv2d("B", 4, 14, 1, groups=3)
    conv(torch.randn(1, 4, 3, 3).contiguous(memory_format=torch.channels_last))
    assert conv._crop[1] is None


def test_at_paper_size_the_wide_head_layers_take_one_product_per_run():
    model = build_model("pixelcnn", channels=3, levels=256, height=32, width=32)
    plans = {(m.in_channels, m.out_channels): m._plan_of(m.mask) for m in model.modules()
             if isinstance(m, MaskedConv2d) and m.kernel_size == (1, 1)}
    wide = {shape for shape, plan in plans.items() if isinstance(plan, PrefixPlan)}
    assert wide == {(256, 1024), (1024, 768)}
    assert plans[(1024, 768)].runs == ((0, 256, 342), (256, 512, 683), (512, 768, 1024))


@pytest.mark.parametrize("make", [
    lambda: MaskedConv2d("B", 13, 14, 1, groups=3),
    lambda: MaskedConv2d("A", 13, 14, 1, groups=3),  # the R outputs read nothing: bias only
    lambda: MaskedConv2d("B", 7, 5, 1, groups=3, bias=False),
    lambda: GatedMaskedConv2d("B", 9, 6, 1, groups=3),  # [f | g]: six runs, each a prefix
])
def test_a_wide_1x1_as_one_product_per_run_is_the_masked_layer(make, monkeypatch):
    monkeypatch.setattr(masks, "PREFIX_MIN_RUN", 1)
    torch.manual_seed(2)
    conv = make().double()
    x0 = torch.randn(2, conv.in_channels, 4, 3, dtype=torch.float64)
    results = []
    for reference in (False, True):
        x = x0.clone().contiguous(memory_format=torch.channels_last).requires_grad_()
        conv.zero_grad(set_to_none=True)
        with masked_reference() if reference else contextlib.nullcontext():
            out = conv(x)
        if not reference:
            assert isinstance(conv._crop[1], PrefixPlan)
            assert out.is_contiguous(memory_format=torch.channels_last)
        out.square().sum().backward()
        results.append([out, x.grad, conv.weight.grad] + ([conv.bias.grad] if conv.bias is not None else []))
    for fast, ref in zip(*results, strict=True):
        torch.testing.assert_close(fast, ref, rtol=1e-12, atol=1e-12)
    hidden = results[0][2][conv.mask == 0]
    assert torch.equal(hidden, torch.zeros_like(hidden))


def test_a_wide_1x1_under_autocast_runs_as_weight_times_mask(monkeypatch):
    """bf16 training (precision: bf16, the GPU benchmark) trains through it: autocast does not reach a
    hand-written backward, so the split is off there."""
    monkeypatch.setattr(masks, "PREFIX_MIN_RUN", 1)
    conv = MaskedConv2d("B", 12, 12, 1, groups=3)
    x = torch.randn(2, 12, 4, 4).contiguous(memory_format=torch.channels_last).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv(x)
    out.float().sum().backward()
    assert out.dtype == torch.bfloat16 and x.grad is not None and conv.weight.grad is not None


def test_a_1x1_with_an_edited_mask_or_nchw_input_runs_as_weight_times_mask(monkeypatch):
    monkeypatch.setattr(masks, "PREFIX_MIN_RUN", 1)
    conv = MaskedConv2d("B", 6, 6, 1, groups=3).double()
    x = torch.randn(1, 6, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(conv(x), torch.nn.functional.conv2d(x, conv.weight * conv.mask, conv.bias))
    with torch.no_grad():
        conv.mask[0, 5] = 1  # a leak on purpose: R reads a B input; not a prefix, the forward must obey it
    xc = x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(conv(xc), torch.nn.functional.conv2d(x, conv.weight * conv.mask, conv.bias))
    assert conv._crop[1] is None
