"""Cached sampling sessions of the recurrent models (Row LSTM, Diagonal BiLSTM, multi-scale): at every
step of generation, in float64, the session's logits equal the full forward's, including jumps over
known sub-pixels (completions) and class / soft-label conditioning."""

from __future__ import annotations

import pytest
import torch

from pixelzoo.models import build_model, generation_order

TINY = {"hidden": 6, "layers": 2, "head_hidden": 12}
MODELS = {
    "row_lstm": ("row_lstm", TINY, (4, 5)),
    "diagonal_bilstm": ("diagonal_bilstm", TINY, (4, 5)),
    "multiscale_diag": (
        "multiscale_pixelrnn", {**TINY, "base": "diagonal_bilstm", "cond_channels": 4}, (5, 6)
    ),
    "multiscale_row": ("multiscale_pixelrnn", {**TINY, "base": "row_lstm", "cond_channels": 4}, (5, 6)),
}


def randomize(model: torch.nn.Module) -> None:
    """Larger weights than the default init, so that every path carries a visible signal."""
    torch.manual_seed(2)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.5)


def check_session(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor | None, known: torch.Tensor,
                  levels: int) -> int:
    """Walk the generation order like the sampler; compare logits at every asked sub-pixel."""
    _, channels, height, width = x.shape
    session = model.sampling_session(x, y)
    gen = torch.Generator().manual_seed(3)
    asked = 0
    for flat in generation_order(model, channels, height, width).tolist():
        if known.view(-1)[flat]:
            continue
        c, rem = divmod(flat, height * width)
        i, j = divmod(rem, width)
        got = session.logits(c, i, j)
        torch.testing.assert_close(got, model(x, y)[:, :, c, i, j], rtol=1e-10, atol=1e-10)
        x[:, c, i, j] = torch.randint(0, levels, (x.shape[0],), generator=gen)  # the "draw"
        asked += 1
    return asked


@pytest.mark.parametrize("channels,levels", [(1, 2), (3, 4)])
@pytest.mark.parametrize("key", list(MODELS))
def test_session_logits_equal_full_forward(key: str, channels: int, levels: int) -> None:
    name, args, (height, width) = MODELS[key]
    torch.manual_seed(0)
    model = build_model(name, channels=channels, levels=levels, height=height, width=width, **args).double()
    randomize(model)
    model.eval()
    # later sub-pixels hold arbitrary values, known ones their final values
    x = torch.randint(0, levels, (2, channels, height, width))
    known = torch.zeros(channels, height, width, dtype=torch.bool)
    known[:, 1, 1:4] = True  # a jump over whole pixels in the middle of a row
    known[:, 2, width - 1] = True  # the end of a row (the Diagonal BiLSTM's row completion)
    known[channels - 1, 3, 2] = True  # only the last channel: the pixel is committed late
    known[0, 0, 3] = True  # only the first channel
    with torch.no_grad():
        asked = check_session(model, x, None, known, levels)
    assert asked == channels * height * width - int(known.sum())


@pytest.mark.parametrize("key", ["row_lstm", "diagonal_bilstm", "multiscale_row"])
@pytest.mark.parametrize("labels", ["classes", "soft"])
def test_session_with_labels(key: str, labels: str) -> None:
    name, args, (height, width) = MODELS[key]
    torch.manual_seed(0)
    model = build_model(name, channels=3, levels=4, height=height, width=width, n_classes=3, **args).double()
    randomize(model)
    model.eval()
    y = torch.tensor([0, 2]) if labels == "classes" else torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.3, 0.7]])
    x = torch.randint(0, 4, (2, 3, height, width))
    known = torch.zeros(3, height, width, dtype=torch.bool)
    known[:, 0] = True  # a completion: the whole first row given
    with torch.no_grad():
        check_session(model, x, y, known, 4)


@pytest.mark.parametrize(
    "key,extra",
    [("row_lstm", {"residual": False, "skip": False}), ("diagonal_bilstm", {"residual": False}),
     ("diagonal_bilstm", {"close_blind_spot": False, "skip": False}), ("row_lstm", {"kernel": 5})],
)
def test_session_with_ablation_switches(key: str, extra: dict) -> None:
    name, args, (height, width) = MODELS[key]
    torch.manual_seed(0)
    model = build_model(name, channels=3, levels=4, height=height, width=width, **{**args, **extra}).double()
    randomize(model)
    model.eval()
    x = torch.randint(0, 4, (2, 3, height, width))
    with torch.no_grad():
        check_session(model, x, None, torch.zeros(3, height, width, dtype=torch.bool), 4)


def test_session_refuses_calls_out_of_order() -> None:
    name, args, (height, width) = MODELS["row_lstm"]
    model = build_model(name, channels=1, levels=2, height=height, width=width, **args).eval()
    x = torch.zeros(1, 1, height, width, dtype=torch.long)
    with torch.no_grad():
        session = model.sampling_session(x, None)
        session.logits(0, 1, 2)
        with pytest.raises(ValueError, match="after a later pixel"):
            session.logits(0, 0, 4)
