"""The recurrent scan (nn/recurrent.py ``lstm_scan``): forward against a cell-by-cell reference, and the
hand-written backward (``_Scan``) against finite differences.

Every input of the scan (pre-activations, state-conv weight, initial h and c) gets its gradient checked
in float64, for the Row LSTM's padding (1, 1), the Diagonal BiLSTM's (1, 0) with its skewed spans
(positions outside a step's span hold the initial state), two groups, and spans that grow, shrink and move.
"""

from __future__ import annotations

import pytest
import torch

from pixelzoo.nn.recurrent import GATES, ScanLayout, lstm_scan

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
    kernel: int, padding: tuple[int, int], spans: list[tuple[int, int]] | None
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
    kernel: int, padding: tuple[int, int], groups: int, spans: list[tuple[int, int]] | None
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
