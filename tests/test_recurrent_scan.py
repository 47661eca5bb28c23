"""The recurrent scan's hand-written backward (nn/recurrent.py ``_Scan``) against finite differences.

The forward is checked against per-pixel references in test_pixelrnn.py; here every input of the scan
(pre-activations, state-conv weight, initial h and c) gets its gradient checked in float64, for the
Row LSTM's padding (1, 1), the Diagonal BiLSTM's (1, 0) with inactive cells, and two groups.
"""

from __future__ import annotations

import pytest
import torch

from pixelzoo.nn.recurrent import GATES, lstm_scan


@pytest.mark.parametrize(
    "kernel,padding,groups,with_active",
    [(3, (1, 1), 1, False), (2, (1, 0), 1, True), (2, (1, 0), 2, True), (3, (2, 0), 1, False)],
)
def test_scan_gradients_match_finite_differences(
    kernel: int, padding: tuple[int, int], groups: int, with_active: bool
) -> None:
    torch.manual_seed(0)
    hidden, batch, steps, n = 2, 2, 4, 3
    pre = torch.randn(batch, groups * GATES * hidden, steps, n, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(groups * GATES * hidden, hidden, kernel, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(groups * hidden, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(groups * hidden, dtype=torch.float64, requires_grad=True)
    active = None
    if with_active:  # the skewed map's left padding: column t of row r is a cell iff t >= r
        active = torch.arange(steps)[:, None] >= torch.arange(n)[None, :]

    def scan(*args: torch.Tensor) -> torch.Tensor:
        return lstm_scan(*args, padding, active, groups)

    assert torch.autograd.gradcheck(scan, (pre, weight, h0, c0))
