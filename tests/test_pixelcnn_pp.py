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
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_cached_draws_exactly_the_naive_samples(variant):
    channels, levels, h, w, n_classes, labels, completion, extra = VARIANTS[variant]
    model = _model(channels, levels, h, w, n_classes, **extra)
    assert_cached_draws_naive(model, N, channels, levels, h, w, labels_for(labels, N, n_classes), completion)
