"""Layer library: grouped gate, shifts, logits layout, input scaling."""

import pytest
import torch

from pixelzoo.nn import OutputHead, down_shift, gate, right_shift, scale_input, to_logits


def test_gate_single_group_is_tanh_times_sigmoid():
    x = torch.randn(2, 8, 3, 3)
    torch.testing.assert_close(gate(x), torch.tanh(x[:, :4]) * torch.sigmoid(x[:, 4:]))


def test_gate_keeps_channel_groups_apart():
    # 3 groups of 4 pre-activation maps -> 3 groups of 2 gated maps; group g reads only group g.
    x = torch.randn(1, 12, 2, 2, requires_grad=True)
    out = gate(x, groups=3)
    assert out.shape == (1, 6, 2, 2)
    for g in range(3):
        (grad,) = torch.autograd.grad(out[:, 2 * g : 2 * g + 2].sum(), x, retain_graph=True)
        touched = grad.abs().sum((0, 2, 3)) > 0
        assert touched.tolist() == [k // 4 == g for k in range(12)]


def test_gate_rejects_widths_that_split_groups():
    with pytest.raises(ValueError, match="divisible"):
        gate(torch.randn(1, 10, 2, 2), groups=3)


def test_shifts_move_and_zero_fill():
    x = torch.arange(1.0, 10.0).view(1, 1, 3, 3)
    assert down_shift(x).squeeze().tolist() == [[0, 0, 0], [1, 2, 3], [4, 5, 6]]
    assert right_shift(x).squeeze().tolist() == [[0, 1, 2], [0, 4, 5], [0, 7, 8]]
    assert down_shift(x, 2).squeeze()[2].tolist() == [1, 2, 3]
    with pytest.raises(ValueError):
        down_shift(x, 0)


def test_to_logits_layout_matches_channel_groups():
    c, k = 3, 4
    out = torch.arange(c * k, dtype=torch.float).view(1, c * k, 1, 1)
    logits = to_logits(out, c, k)
    assert logits.shape == (1, k, c, 1, 1)
    assert logits[0, :, 1, 0, 0].tolist() == [4, 5, 6, 7]  # G's levels are the second block
    assert OutputHead(6, 6, c, k)(torch.randn(2, 6, 5, 5)).shape == (2, k, c, 5, 5)


def test_scale_input_range_and_float_passthrough():
    x = torch.tensor([0, 1, 2, 3])
    assert scale_input(x, 4).tolist() == pytest.approx([-1, -1 / 3, 1 / 3, 1])
    assert scale_input(x, 4).dtype == torch.float32
    xf = x.double().requires_grad_()
    y = scale_input(xf, 4)
    assert y.dtype == torch.float64 and y.requires_grad
