"""PixelCNN++: paper size, conditioning, the cached sampler against the naive reference (float64)."""

import pytest
import torch
from draws import assert_cached_draws_naive, labels_for

from pixelzoo.likelihood import DiscretizedLogisticMixture, head_of
from pixelzoo.models import build_model
from pixelzoo.models.pixelcnn_pp import PixelCNNPP

N = 3


def _model(channels: int, levels: int, height: int, width: int, n_classes: int | None = None, **args):
    torch.manual_seed(0)
    args = {"nr_resnet": 1, "filters": 8, "n_mix": 2, **args}
    model = build_model("pixelcnn_pp", channels=channels, levels=levels, height=height, width=width,
                        n_classes=n_classes, **args)
    return model.double().eval()


def test_paper_size_and_head():
    with torch.device("meta"):  # no memory: only the parameter count
        model = build_model("pixelcnn_pp", channels=3, levels=256, height=32, width=32)
    assert isinstance(model, PixelCNNPP) and isinstance(head_of(model), DiscretizedLogisticMixture)
    assert head_of(model).params == 100  # 10 components × (1 + 3 means + 3 scales + 3 coefficients)
    assert sum(p.numel() for p in model.parameters()) == 53_618_660  # "about 53M" (REFERENCE.md)


def test_class_conditioning_reaches_the_output_and_is_required():
    model = _model(3, 4, 8, 8, n_classes=5)
    for p in model.parameters():
        p.data.normal_(0, 0.3)
    x = torch.randint(0, 4, (2, 3, 8, 8))
    assert not torch.allclose(model(x, torch.tensor([0, 0])), model(x, torch.tensor([3, 3])))
    with pytest.raises(ValueError, match="pass y"):
        model(x)


def test_dropout_only_in_train_mode():
    model = _model(1, 4, 8, 8, dropout=0.5)
    x = torch.randint(0, 4, (2, 1, 8, 8))
    assert torch.equal(model(x), model(x))
    model.train()
    assert not torch.equal(model(x), model(x))


VARIANTS = {  # name -> (channels, levels, height, width, n_classes, labels, completion, extra args)
    "c3k16": (3, 16, 8, 8, None, None, False, {}),
    "c1k256-odd": (1, 256, 7, 5, None, None, False, {}),
    "class": (3, 4, 6, 5, 3, "index", False, {}),
    "soft": (1, 4, 5, 6, 3, "soft", False, {"nr_resnet": 2}),
    "completion": (3, 8, 6, 6, 3, "index", True, {"n_mix": 3}),
    "weight_norm": (3, 8, 6, 5, 3, "index", False, {"weight_norm": True}),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_cached_draws_exactly_the_naive_samples(variant):
    channels, levels, h, w, n_classes, labels, completion, extra = VARIANTS[variant]
    model = _model(channels, levels, h, w, n_classes, **extra)
    if extra.get("weight_norm"):  # the initialised weights, as training starts from them
        model.data_init_(torch.randint(0, levels, (8, channels, h, w)), torch.arange(8) % n_classes)
    assert_cached_draws_naive(model, N, channels, levels, h, w, labels_for(labels, N, n_classes), completion)


def test_weight_norm_off_is_the_plain_model():
    plain, off = _model(3, 4, 6, 6), _model(3, 4, 6, 6, weight_norm=False)
    assert list(plain.state_dict()) == list(off.state_dict())
    assert not any("parametrizations" in k for k in off.state_dict())
    assert all(torch.equal(v, off.state_dict()[k]) for k, v in plain.state_dict().items())
    assert off.data_init_(torch.zeros(2, 3, 6, 6, dtype=torch.long)) is False  # a no-op


def _layer_outputs(model, x):
    outs = []
    hooks = [m.register_forward_hook(lambda m, i, o: outs.append((m, o))) for m in model.modules()
             if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    model(x)
    for h in hooks:
        h.remove()
    return outs


def test_weight_norm_data_init_sets_each_layers_output_moments():
    model = _model(3, 4, 6, 6, weight_norm=True)
    convs = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert convs and all(hasattr(m, "parametrizations") for m in convs)  # every conv, deconv and nin
    g = model.upsize_u[0].deconv.parametrizations.weight.original0
    assert g.shape == (1, 8, 1, 1)  # transposed convolutions: one g per output channel (dim 1)
    x = torch.randint(0, 4, (8, 3, 6, 6), generator=torch.Generator().manual_seed(3))
    before = model(x)
    assert model.data_init_(x) is True
    small = {b.conv_out.conv for b in model.modules() if hasattr(b, "conv_out")}
    outs = _layer_outputs(model, x)  # eval mode: the same inputs each layer saw during the init
    assert len(outs) == len(convs)
    for m, out in outs:
        scale = 0.1 if m in small else 1.0
        assert out.mean((0, 2, 3)).abs().max() < 1e-9
        std = out.std((0, 2, 3), unbiased=False)
        assert torch.allclose(std, torch.full_like(std, scale))
    assert not torch.allclose(model(x), before)
