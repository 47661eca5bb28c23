"""Layer library shared by every model: masks, masked convolutions, gates and shifts."""

from pixelzoo.nn.masks import MaskedConv2d, channel_groups, causal_mask, scale_input

__all__ = ["MaskedConv2d", "causal_mask", "channel_groups", "scale_input"]
