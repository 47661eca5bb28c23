"""Layer library shared by every model: masks, masked convolutions, gates and shifts."""

from pixelzoo.nn.conditioning import ClassBias, as_soft_labels
from pixelzoo.nn.gated import GatedMaskedConv2d, gate
from pixelzoo.nn.heads import OutputHead, input_conv, to_logits
from pixelzoo.nn.masks import MaskedConv2d, causal_mask, channel_groups, network_input, scale_input
from pixelzoo.nn.shifts import down_shift, right_shift

__all__ = [
    "ClassBias",
    "GatedMaskedConv2d",
    "MaskedConv2d",
    "OutputHead",
    "as_soft_labels",
    "causal_mask",
    "channel_groups",
    "down_shift",
    "gate",
    "input_conv",
    "right_shift",
    "network_input",
    "scale_input",
    "to_logits",
]
