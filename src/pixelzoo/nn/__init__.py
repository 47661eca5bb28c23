"""Layer library shared by every model: masks, masked convolutions, gates and shifts."""

from pixelzoo.nn.conditioning import ClassBias, as_soft_labels
from pixelzoo.nn.heads import OutputHead, input_conv
from pixelzoo.nn.masks import MaskedConv2d, causal_mask, channel_groups, scale_input

__all__ = [
    "ClassBias",
    "MaskedConv2d",
    "OutputHead",
    "as_soft_labels",
    "causal_mask",
    "channel_groups",
    "input_conv",
    "scale_input",
]
