"""The comparison report: paper tables vs our runs, samples, learning curves, receptive fields, lineage."""

from __future__ import annotations

from typing import Any

__all__ = ["Written", "build_report"]


def __getattr__(name: str) -> Any:
    # Lazy: the params schema reads pixelzoo.report.reference without importing matplotlib and torch.
    if name in __all__:
        from pixelzoo.report import build

        return getattr(build, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
