"""Layer library: grouped gate, shifts, logits layout, input scaling."""

import pytest
import torch

from pixelzoo.nn import (
    GatedMaskedConv2d,
    OutputHead,
    causal_mask,
    channel_groups,
    down_shift,
    gate,
    right_shift,
    scale_input,
    to_logits,
)


def test_gate_is_tanh_of_first_half_times_sigmoid_of_second():
    x = torch.randn(2, 8, 3, 3)
    torch.testing.assert_close(gate(x), torch.tanh(x[:, :4]) * torch.sigmoid(x[:, 4:]))
    with pytest.raises(ValueError, match="even"):
        gate(torch.randn(1, 7, 2, 2))


@pytest.mark.parametrize("hidden", [6, 8])  # 8 maps do not split evenly into R,G,B groups
def test_gated_conv_pairs_tanh_and_sigmoid_maps_of_the_same_group(hidden):
    conv = GatedMaskedConv2d("A", 3, hidden, 3, groups=3)
    half = causal_mask("A", 3, hidden, (3, 3), 3)
    assert conv.weight.shape[0] == 2 * hidden
    assert torch.equal(conv.mask[:hidden], half) and torch.equal(conv.mask[hidden:], half)
    # Gated map k at the centre reads exactly the colours before its own group.
    x = torch.randn(1, 3, 3, 3, requires_grad=True)
    out = gate(conv(x))
    groups = channel_groups(hidden, 3)
    for k in range(hidden):
        (grad,) = torch.autograd.grad(out[0, k, 1, 1], x, retain_graph=True)
        assert (grad[0, :, 1, 1] != 0).tolist() == [c < groups[k] for c in range(3)]


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
