"""EMA weights and per-step learning-rate decay (the PixelCNN++ recipe helpers)."""

import pytest
import torch
from torch import nn

from pixelzoo.recipe import EMA, exponential_lr


def _train(model, ema, opt, sched, steps, gen):
    for _ in range(steps):
        x = torch.randn(4, 3, generator=gen)
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        ema.update(model)


def test_ema_is_the_exponential_average():
    model = nn.Linear(2, 1)
    ema = EMA(model, decay=0.9)
    w0 = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)
    torch.testing.assert_close(ema.shadow["weight"], 0.9 * w0 + 0.1)
    with ema.applied(model):
        torch.testing.assert_close(model.weight, 0.9 * w0 + 0.1)
    assert torch.all(model.weight == 1.0)  # raw weights back


def test_kill_and_resume_is_bit_identical():
    def fresh():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.Linear(5, 1))
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        return model, EMA(model, 0.9995), opt, exponential_lr(opt, 0.999995)

    model, ema, opt, sched = fresh()
    _train(model, ema, opt, sched, 10, torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(1)
    m2, e2, o2, s2 = fresh()
    _train(m2, e2, o2, s2, 4, gen)
    ckpt = {"model": m2.state_dict(), "ema": e2.state_dict(), "opt": o2.state_dict(),
            "sched": s2.state_dict()}
    m3, e3, o3, s3 = fresh()
    m3.load_state_dict(ckpt["model"])
    e3.load_state_dict(ckpt["ema"])
    o3.load_state_dict(ckpt["opt"])
    s3.load_state_dict(ckpt["sched"])
    _train(m3, e3, o3, s3, 6, gen)
    for k, v in ema.shadow.items():
        assert torch.equal(v, e3.shadow[k]), k
    for a, b in zip(model.state_dict().values(), m3.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert opt.param_groups[0]["lr"] == o3.param_groups[0]["lr"] == pytest.approx(1e-2 * 0.999995**10)


def test_bad_values_are_explained():
    with pytest.raises(ValueError, match="decay"):
        EMA(nn.Linear(1, 1), 1.0)
    opt = torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=1.0)
    with pytest.raises(ValueError, match="per step"):
        exponential_lr(opt, 0.0)
    with pytest.raises(ValueError, match="does not match"):
        EMA(nn.Linear(1, 1)).load_state_dict(EMA(nn.Linear(1, 2, bias=False)).state_dict() | {"shadow": {}})


def test_keep_false_leaves_the_shadow_and_keep_true_is_the_plain_update():
    """``keep`` (the loop's step guard, on the device): False changes nothing, counters included."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    plain, guarded = EMA(model, 0.9), EMA(model, 0.9)
    model(torch.randn(8, 3))  # moves the BatchNorm statistics and its integer counter
    with torch.no_grad():
        model[0].weight.add_(1.0)
    guarded.update(model, keep=torch.tensor(False))
    assert all(torch.equal(guarded.shadow[k], plain.shadow[k]) for k in plain.shadow)  # both still the init
    plain.update(model)
    guarded.update(model, keep=torch.tensor(True))
    assert all(torch.equal(guarded.shadow[k], plain.shadow[k]) for k in plain.shadow)
    assert int(guarded.shadow["1.num_batches_tracked"]) == 1
