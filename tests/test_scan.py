"""The recurrent scan (nn/scan.py ``lstm_scan``): forward against a cell-by-cell reference, and the
hand-written backward (``_Scan``) against finite differences, each on both step loops: the fused C
kernels (nn/native.py) and the torch ops they replace.

Every input of the scan (pre-activations, state-conv weight, initial h and c) gets its gradient checked
in float64, for the Row LSTM's padding (1, 1), the Diagonal BiLSTM's (1, 0) with its skewed spans
(positions outside a step's span hold the initial state), two groups, and spans that grow, shrink and move.
The two loops are also compared in float32 at the training sizes, where the C kernels use their own exp.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import torch

from pixelzoo.models.diagonal_bilstm import diagonal_layout
from pixelzoo.models.row_lstm import row_layout
from pixelzoo.nn import native
from pixelzoo.nn import scan as rec
from pixelzoo.nn.scan import GATES, ScanLayout, lstm_scan


@pytest.fixture(params=["native", "torch"])
def step_loop(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Run the test on the C kernels (checked to build and to be called) or on the torch ops."""
    if request.param == "torch":
        monkeypatch.setattr(native, "kernels", lambda: None)
        yield "torch"
        return
    assert native.kernels() is not None, "the C kernels did not build: is a C compiler (cc) installed?"
    calls = []
    for name in ("_forward_native", "_backward_native"):
        real = getattr(rec, name)
        monkeypatch.setattr(rec, name, lambda *a, _real=real, _name=name: (calls.append(_name), _real(*a)))
    yield "native"
    assert "_forward_native" in calls, "the scan did not use the C kernels"
    if request.node.name.startswith("test_scan_gradients"):
        assert "_backward_native" in calls, "the backward did not use the C kernels"

SKEW_3x2 = [(0, 1), (0, 2), (0, 3), (1, 3)]  # the Diagonal BiLSTM's spans for a 3-row, 2-column image
MOVING = [(1, 2), (0, 3), (2, 3), (0, 1)]


def scan_reference(pre: torch.Tensor, weight: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor,
                   padding: tuple[int, int], spans: list[tuple[int, int]], n: int) -> torch.Tensor:
    """One cell at a time over a full T×n grid: position i of step t reads the previous step's states
    at i - before .. i + after (the initial state outside the positions); positions outside the span
    hold the initial state. ``pre`` is T×n×B×4h; the result T×n×B×h."""
    steps, _, batch, g4h = pre.shape
    hidden, (before, after) = g4h // GATES, padding
    h_prev, c_prev = h0.expand(n, batch, hidden), c0.expand(n, batch, hidden)
    out = []
    for t in range(steps):
        padded = torch.cat([h0.expand(before, batch, hidden), h_prev, h0.expand(after, batch, hidden)])
        h_new, c_new = [], []
        for i in range(n):
            if not spans[t][0] <= i < spans[t][1]:
                h_new.append(h0.expand(batch, hidden)), c_new.append(c0.expand(batch, hidden))
                continue
            window = padded[i : i + before + after + 1].permute(1, 2, 0)  # B×h×k
            z = pre[t, i] + torch.einsum("ghk,bhk->bg", weight, window)
            o, f, inp, g = z.split(hidden, dim=1)
            c = torch.sigmoid(f) * c_prev[i] + torch.sigmoid(inp) * torch.tanh(g)
            h_new.append(torch.sigmoid(o) * torch.tanh(c)), c_new.append(c)
        h_prev, c_prev = torch.stack(h_new), torch.stack(c_new)
        out.append(h_prev)
    return torch.stack(out)


def packed(grid: torch.Tensor, spans: list[tuple[int, int]]) -> torch.Tensor:
    """T×n×B×C -> the span cells, step-major (the scan's packed layout)."""
    return torch.cat([grid[t, lo:hi] for t, (lo, hi) in enumerate(spans)])


@pytest.mark.parametrize(
    "kernel,padding,spans",
    [(3, (1, 1), None), (2, (1, 0), SKEW_3x2 + [(2, 3)]), (3, (1, 1), MOVING + [(0, 3)])],
)
def test_scan_forward_matches_a_cell_by_cell_reference(
    kernel: int, padding: tuple[int, int], spans: list[tuple[int, int]] | None, step_loop: str
) -> None:
    torch.manual_seed(1)
    hidden, batch, steps, n = 3, 2, 5, 3
    spans = spans or [(0, n)] * steps
    pre = torch.randn(steps, n, batch, GATES * hidden, dtype=torch.float64)
    weight = torch.randn(GATES * hidden, hidden, kernel, dtype=torch.float64)
    h0, c0 = torch.randn(hidden, dtype=torch.float64), torch.randn(hidden, dtype=torch.float64)
    expected = packed(scan_reference(pre, weight, h0, c0, padding, spans, n), spans)
    got = lstm_scan(packed(pre, spans), weight, h0, c0, ScanLayout(spans, padding))
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize(
    "kernel,padding,groups,spans",
    [(3, (1, 1), 1, None), (2, (1, 0), 1, SKEW_3x2), (2, (1, 0), 2, SKEW_3x2), (3, (2, 0), 1, None),
     (3, (1, 1), 1, MOVING)],
)
def test_scan_gradients_match_finite_differences(
    kernel: int, padding: tuple[int, int], groups: int, spans: list[tuple[int, int]] | None, step_loop: str
) -> None:
    torch.manual_seed(0)
    hidden, batch, steps, n = 2, 2, 4, 3
    layout = ScanLayout(spans or [(0, n)] * steps, padding)
    pre = torch.randn(layout.cells, batch, groups * GATES * hidden, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(groups * GATES * hidden, hidden, kernel, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(groups * hidden, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(groups * hidden, dtype=torch.float64, requires_grad=True)

    def scan(*args: torch.Tensor) -> torch.Tensor:
        return lstm_scan(*args, layout, groups)

    assert torch.autograd.gradcheck(scan, (pre, weight, h0, c0))


def test_scan_rejects_what_does_not_fit() -> None:
    with pytest.raises(ValueError, match="span"):
        ScanLayout([(0, 3), (2, 2)], (1, 1))
    layout = ScanLayout([(0, 3), (0, 3)], (1, 1))
    weight, h0 = torch.zeros(GATES, 1, 3), torch.zeros(1)
    with pytest.raises(ValueError, match="packed"):
        lstm_scan(torch.zeros(5, 1, GATES), weight, h0, h0, layout)
    with pytest.raises(ValueError, match="kernel"):
        lstm_scan(torch.zeros(6, 1, GATES), torch.zeros(GATES, 1, 2), h0, h0, layout)


def scan_with_grads(layout: ScanLayout, groups: int, seed: int = 0) -> list[torch.Tensor]:
    """Output and the gradients of every input for a random float32 scan (hidden 16, batch 16)."""
    torch.manual_seed(seed)
    hidden, batch, k = 16, 16, layout.width - layout.n + 1
    inputs = [
        torch.randn(layout.cells, batch, groups * GATES * hidden),
        torch.randn(groups * GATES * hidden, hidden, k) * 0.3,
        torch.randn(groups * hidden) * 0.5,
        torch.randn(groups * hidden) * 0.5,
    ]
    for t in inputs:
        t.requires_grad_()
    out = lstm_scan(*inputs, layout, groups)
    out.backward(torch.randn_like(out))
    return [out.detach()] + [t.grad for t in inputs]


@pytest.mark.parametrize("kind", ["row_lstm", "diagonal_bilstm"])
def test_c_kernels_agree_with_the_torch_ops_in_float32(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """At the training size (28×28, batch 16, h=16) in float32, where the kernels use their own exp."""
    if kind == "row_lstm":
        layout, groups = row_layout(28, 28, (1, 1), torch.device("cpu")), 1
    else:
        layout, groups = diagonal_layout(28, 28, torch.device("cpu"))[0], 2
    assert native.kernels() is not None
    fast = scan_with_grads(layout, groups)
    monkeypatch.setattr(native, "kernels", lambda: None)
    slow = scan_with_grads(layout, groups)
    for name, a, b in zip(["output", "d pre", "d weight", "d h0", "d c0"], fast, slow, strict=True):
        assert not torch.equal(a, torch.zeros_like(a)), name
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item(), msg=name)


def test_c_kernels_propagate_nan(step_loop: str) -> None:
    """A diverged run must stay visible (training stops on a non-finite loss): NaN in, NaN out."""
    layout = row_layout(3, 4, (1, 1), torch.device("cpu"))
    pre = torch.zeros(layout.cells, 2, GATES * 4)
    pre[5, 1, 0] = float("nan")  # an o gate of pixel (1, 1): its h is NaN, and row 2 reads it
    out = lstm_scan(pre, torch.full((GATES * 4, 4, 3), 0.1), torch.zeros(4), torch.zeros(4), layout)
    nan_pixels = out[:, 1].isnan().any(dim=1).nonzero().flatten().tolist()
    assert nan_pixels == [5, 8, 9, 10] and not out[:, 0].isnan().any()


def test_kernels_build_once_and_fall_back_without_a_compiler(
    tmp_path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture  # noqa: ANN001
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    native.kernels.cache_clear()
    try:
        assert native.kernels() is not None
        (built,) = (tmp_path / "pixelzoo" / "native").glob("lstm_cells-*.so")
        stamp = built.stat().st_mtime_ns
        native.kernels.cache_clear()
        assert native.kernels() is not None and built.stat().st_mtime_ns == stamp  # reused, not rebuilt

        monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
        native.kernels.cache_clear()
        with caplog.at_level(logging.WARNING, logger="pixelzoo.nn.native"):
            assert native.kernels() is None
        assert "no C compiler" in caplog.text
        layout = row_layout(2, 3, (1, 1), torch.device("cpu"))
        out = lstm_scan(torch.zeros(layout.cells, 1, GATES), torch.zeros(GATES, 1, 3), torch.zeros(1),
                        torch.zeros(1), layout)  # fmt: skip
        assert out.shape == (6, 1, 1)
    finally:
        native.kernels.cache_clear()


def test_initial_state_of_another_dtype_takes_the_torch_loop() -> None:
    """The kernels take one dtype: a float64 c0 beside float32 pre-activations must not reach them."""
    layout = row_layout(3, 4, (1, 1), torch.device("cpu"))
    torch.manual_seed(0)
    pre, weight = torch.randn(layout.cells, 2, GATES * 4), torch.randn(GATES * 4, 4, 3) * 0.3
    h0, c0 = torch.randn(4), torch.randn(4)
    expected = lstm_scan(pre, weight, h0, c0, layout)
    torch.testing.assert_close(lstm_scan(pre, weight, h0, c0.double(), layout), expected)


def test_double_backward_fails_loudly() -> None:
    layout = row_layout(2, 3, (1, 1), torch.device("cpu"))
    pre = torch.randn(layout.cells, 1, GATES, requires_grad=True)
    out = lstm_scan(pre, torch.randn(GATES, 1, 3), torch.zeros(1), torch.zeros(1), layout)
    (grad,) = torch.autograd.grad(out.sum(), pre, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|does not require grad"):
        torch.autograd.grad(grad.sum(), pre)
