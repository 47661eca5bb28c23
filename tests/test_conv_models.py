"""Model zoo behaviour: shapes and one-batch overfit for every registered model; conv-model specifics."""

import math

import pytest
import torch

from pixelzoo.likelihood import CATEGORICAL, head_of, nll_per_image
from pixelzoo.models import build_model, registered, tiny_args

MODELS = registered()


def _tiny(name, channels=1, levels=4, size=8, n_classes=None, **overrides):
    torch.manual_seed(0)
    args = {**tiny_args(name), **overrides}
    return build_model(name, channels=channels, levels=levels, height=size, width=size,
                       n_classes=n_classes, **args)


@pytest.mark.parametrize("levels", [2, 256])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", MODELS)
def test_output_shape(name, channels, levels):
    model = _tiny(name, channels, levels)
    x = torch.randint(0, levels, (2, channels, 8, 8))
    logits = model(x)
    head = head_of(model)  # a mixture head returns its parameters; the head's conditionals are B×K×C×H×W
    want = (2, levels, channels, 8, 8) if head is CATEGORICAL else (2, head.params, 8, 8)
    assert logits.shape == want and logits.dtype == torch.float32
    assert head.conditional_logits(logits, x).shape == (2, levels, channels, 8, 8)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", MODELS)
def test_one_batch_overfit(name):
    # A deterministic diagonal pattern: each pixel is predictable from its left and upper neighbours,
    # so a causal model can drive the NLL far below the uniform log K per sub-pixel.
    k, size = 4, 8
    i, j = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    x = torch.stack([(i + j + s) % k for s in range(4)])[:, None]
    model = _tiny(name, 1, k, size)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        loss = nll_per_image(model(x), x, head_of(model)).mean() / (size * size)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        per_subpixel = float(nll_per_image(model(x), x, head_of(model)).mean()) / (size * size)
    assert per_subpixel < 0.25 * math.log(k), f"{name}: {per_subpixel:.3f} nats/sub-pixel after training"


@pytest.mark.parametrize("name", ["pixelcnn", "gated_pixelcnn", "seed004_pixelcnn"])
def test_class_conditioning_reaches_the_output(name):
    model = _tiny(name, 3, 4, n_classes=5).eval()
    for p in model.parameters():  # ClassBias starts random; make sure every layer's bias matters
        p.data.normal_(0, 0.3)
    x = torch.randint(0, 4, (2, 3, 8, 8))
    a, b = model(x, torch.tensor([0, 0])), model(x, torch.tensor([3, 3]))
    assert not torch.allclose(a, b)
    soft = torch.nn.functional.one_hot(torch.tensor([3, 3]), 5).float()
    torch.testing.assert_close(model(x, soft), b)


@pytest.mark.parametrize("name", ["pixelcnn", "gated_pixelcnn"])
@pytest.mark.parametrize("residual,skip", [(False, False), (False, True), (True, False)])
def test_residual_and_skip_switches(name, residual, skip):
    full = _tiny(name, residual=True, skip=True)
    model = _tiny(name, residual=residual, skip=skip)
    x = torch.randint(0, 4, (2, 1, 8, 8))
    assert model(x).shape == (2, 4, 1, 8, 8)
    n_full = sum(p.numel() for p in full.parameters())
    assert (sum(p.numel() for p in model.parameters()) < n_full) == (not skip)


def test_seed004_unet_shortcuts_carry_first_half_features():
    # The seed's `aux = torch.squeeze(x, 0)` fed the current features; here block k of the second half
    # must receive the (layers-1-k)-th first-half map.
    model = _tiny("seed004_pixelcnn", layers=3).eval()
    first_half, received = [], []
    model.inp_post.register_forward_hook(lambda m, i, o: first_half.append(o))
    for block in model.up:
        block.register_forward_hook(lambda m, i, o: first_half.append(o))
    for block in model.down:
        block.aux.register_forward_hook(lambda m, i, o: received.append(i[0]))
    model(torch.randint(0, 4, (2, 1, 8, 8)))
    assert len(first_half) == len(received) == 3
    for got, want in zip(received, reversed(first_half), strict=True):
        assert got is want


def test_bad_arguments_are_explained():
    with pytest.raises(ValueError, match="must be >= channels"):
        build_model("pixelcnn", channels=3, levels=4, height=8, width=8, hidden=2)
    with pytest.raises(ValueError, match="must be >= channels"):
        build_model("gated_pixelcnn", channels=3, levels=4, height=8, width=8, hidden=2)
    with pytest.raises(ValueError, match="odd"):
        build_model("gated_pixelcnn", channels=1, levels=4, height=8, width=8, kernel_size=4)
    with pytest.raises(ValueError, match="norm must be one of"):
        build_model("seed004_pixelcnn", channels=1, levels=4, height=8, width=8, norm="layer")
    with pytest.raises(ValueError, match="shortcut"):
        _tiny("seed004_pixelcnn").down[0](torch.zeros(1, 6, 4, 4), None)
