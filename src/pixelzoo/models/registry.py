"""Name -> builder registry. Every registered model is audited for causality by the test suite.

A builder is called as ``builder(channels=C, levels=K, height=H, width=W, n_classes=N|None, **args)``
and returns an ``nn.Module`` with ``forward(x, y=None) -> logits``: ``x`` a LongTensor B×C×H×W of
levels in [0, K), ``y`` an optional class index (B,) or soft label matrix (B, N); logits B×K×C×H×W.

A model generated in an order other than raster-then-channel (e.g. multi-scale) exposes
``generation_order(channels, height, width) -> LongTensor`` of flat indices ``c*H*W + i*W + j`` in
generation order; the audit and the reference sampler use it.

The arguments a model takes in ``params.yaml`` (``model_args``) are read from its builder's signature
(:func:`model_arguments`); a builder that passes ``**args`` on names where they go with ``forwards=``.
"""

from __future__ import annotations

import importlib
import inspect
import typing
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

Builder = Callable[..., nn.Module]
# Where a builder's ``**args`` go: callables (functions or classes), or a function of the args choosing them.
Forwards = tuple[Callable[..., Any], ...] | Callable[[Mapping[str, Any]], tuple[Callable[..., Any], ...]]

_BUILDERS: dict[str, Builder] = {}
_TINY: dict[str, dict[str, Any]] = {}
_FORWARDS: dict[str, Forwards] = {}
# Filled in from the dataset, never from model_args.
SHAPE_ARGS = ("channels", "levels", "height", "width", "n_classes")

# Modules that register models on import; listed once here so `registered()` sees them all.
_MODEL_MODULES = (
    "pixelzoo.models.pixelcnn",
    "pixelzoo.models.gated_pixelcnn",
    "pixelzoo.models.seed004",
    "pixelzoo.models.row_lstm",
    "pixelzoo.models.diagonal_bilstm",
    "pixelzoo.models.multiscale",
    "pixelzoo.models.pixelcnn_pp",
    "pixelzoo.models.pixelsnail",
)


def register(name: str, tiny: dict[str, Any], forwards: Forwards = ()) -> Callable[[Builder], Builder]:
    """Register ``builder`` under ``name``; ``tiny`` holds model args small enough for CPU audits.

    ``forwards``: the callables that receive the builder's ``**args`` (their keyword parameters are the
    model's arguments too), or a function of the given args returning them (e.g. chosen by ``base``).
    """

    def deco(builder: Builder) -> Builder:
        if name in _BUILDERS:
            raise ValueError(f"model {name!r} registered twice")
        _BUILDERS[name] = builder
        _TINY[name] = dict(tiny)
        _FORWARDS[name] = forwards
        return builder

    return deco


def _load_all() -> None:
    for mod in _MODEL_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as err:  # a model file not written yet is simply not registered
            if err.name != mod:
                raise


def registered() -> list[str]:
    """Names of all registered models, sorted."""
    _load_all()
    return sorted(_BUILDERS)


def tiny_args(name: str) -> dict[str, Any]:
    """Small model args for tests and audits."""
    _load_all()
    return dict(_TINY[name])


def model_arguments(name: str, args: Mapping[str, Any] | None = None) -> dict[str, inspect.Parameter]:
    """The ``model_args`` model ``name`` accepts, from its builder's signature (and where ``**args`` go).

    Each value is an ``inspect.Parameter`` whose annotation is the resolved type hint. ``args`` (the
    model_args given) matters only for a builder whose forwards depend on them.
    """
    _load_all()
    forwards = _FORWARDS[name]
    targets = (_BUILDERS[name], *(forwards(args or {}) if callable(forwards) else forwards))
    out: dict[str, inspect.Parameter] = {}
    for fn in targets:
        hints = typing.get_type_hints(fn.__init__ if isinstance(fn, type) else fn)
        for p in inspect.signature(fn).parameters.values():
            if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) or p.name in SHAPE_ARGS:
                continue
            out[p.name] = p.replace(annotation=hints.get(p.name, Any))
    return out


def build_model(
    name: str,
    *,
    channels: int,
    levels: int,
    height: int,
    width: int,
    n_classes: int | None = None,
    **args: Any,
) -> nn.Module:
    """Build the registered model ``name``; unknown names get a clear error listing the known ones."""
    _load_all()
    if name not in _BUILDERS:
        raise KeyError(f"unknown model {name!r}; registered models: {', '.join(sorted(_BUILDERS))}")
    if not 2 <= levels <= 256:
        raise ValueError(f"levels must be in [2, 256], got {levels}")
    return _BUILDERS[name](
        channels=channels, levels=levels, height=height, width=width, n_classes=n_classes, **args
    )


def generation_order(model: nn.Module, channels: int, height: int, width: int) -> torch.Tensor:
    """Flat indices (c*H*W + i*W + j) in the order the model generates sub-pixels.

    Default: raster order over pixels, channels R, G, B within each pixel.
    """
    custom = getattr(model, "generation_order", None)
    if custom is not None:
        return custom(channels, height, width)
    c = torch.arange(channels)[None, :]
    p = torch.arange(height * width)[:, None]
    return (c * height * width + p).reshape(-1)
