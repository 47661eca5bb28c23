"""pixelzoo: reproducible PixelRNN / PixelCNN family models, pipeline and lineage.

``pixelzoo.load(experiment | path | models:/...)`` returns a trained model (:mod:`pixelzoo.api`); it is
imported on first use, so ``import pixelzoo`` stays cheap (no torch).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["load", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "load":
        from pixelzoo.api import load

        return load
    raise AttributeError(f"module 'pixelzoo' has no attribute {name!r}")
