"""The PixelCNN++ training recipe as small standalone pieces (Salimans et al. 2017; openai/pixel-cnn):
Polyak / EMA weights (decay 0.9995) used for validation, test NLL and sampling, and a per-step
exponential learning-rate decay (lr × 0.999995 per step). Usable by every model; the training loop
wires them (see docs/pixelcnn_pp.md for where), these helpers know nothing of settings or files.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


class EMA:
    """Exponential moving average of a model's floating-point parameters and buffers.

    ``update(model)`` after each optimizer step: shadow ← decay·shadow + (1 − decay)·value. Integer
    buffers (counters) are copied. ``state_dict()`` goes into the checkpoint beside the raw weights;
    a resumed run that loads it continues bit-identically (the update is deterministic).
    """

    def __init__(self, model: nn.Module, decay: float = 0.9995) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module, keep: torch.Tensor | None = None) -> None:
        """``keep``: a boolean tensor on the model's device (the training loop's step guard); where it is
        False the shadow stays exactly as it was, decided on the device (no host read per step)."""
        weight: float | torch.Tensor = 1.0 - self.decay
        if keep is not None:
            weight = torch.where(keep, weight, 0.0)  # lerp by 0: s + 0·(v − s) is s bit for bit
        for k, v in model.state_dict().items():
            s = self.shadow[k]
            if s.is_floating_point():
                w = weight.to(s.dtype) if isinstance(weight, torch.Tensor) else weight
                s.lerp_(v.detach().to(s.dtype), w)
            else:
                s.copy_(v if keep is None else torch.where(keep, v, s))
        self.updates += 1

    def state_dict(self) -> dict:
        shadow = {k: v.clone() for k, v in self.shadow.items()}
        return {"decay": self.decay, "updates": self.updates, "shadow": shadow}

    def load_state_dict(self, state: dict) -> None:
        if set(state["shadow"]) != set(self.shadow):
            raise ValueError("EMA state does not match the model (different parameter names)")
        self.decay, self.updates = float(state["decay"]), int(state["updates"])
        for k, v in state["shadow"].items():
            self.shadow[k].copy_(v)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Load the averaged weights into ``model`` (e.g. a copy used for evaluation or sampling)."""
        model.load_state_dict(self.shadow)

    @contextlib.contextmanager
    def applied(self, model: nn.Module) -> Iterator[nn.Module]:
        """Inside, ``model`` holds the EMA weights; the raw weights are restored on exit (even on error)."""
        raw = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.copy_to(model)
        try:
            yield model
        finally:
            model.load_state_dict(raw)


def exponential_lr(
    optimizer: torch.optim.Optimizer, decay_per_step: float
) -> torch.optim.lr_scheduler.LRScheduler:
    """lr_t = lr_0 · decay^t, stepped once per optimizer step (PixelCNN++: 0.999995); its state_dict
    belongs in the checkpoint."""
    if not 0.0 < decay_per_step <= 1.0:
        raise ValueError(f"lr decay per step must be in (0, 1], got {decay_per_step}")
    return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=decay_per_step)
