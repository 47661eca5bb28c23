"""Model zoo. Importing this package registers every model with :mod:`pixelzoo.models.registry`."""

from pixelzoo.models.registry import build_model, generation_order, registered, tiny_args

__all__ = ["build_model", "generation_order", "registered", "tiny_args"]
