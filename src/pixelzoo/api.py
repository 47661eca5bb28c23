"""Use a trained model from Python: ``pixelzoo.load(experiment | path | MLflow model URI)``.

    import pixelzoo
    m = pixelzoo.load("pixelcnn-digits")        # outputs/pixelcnn-digits/train/model.pt of this checkout
    nats = -m.log_prob(x)                        # exact NLL of each image, float64, as `evaluate` computes it
    x = m.sample(16, seed=0)                     # LongTensor 16×C×H×W of levels

What ``load`` accepts: an experiment key of ``params.yaml`` (its trained checkpoint in this checkout), a
``model.pt`` file or a folder holding one (e.g. what ``dvc artifacts get`` fetched), or an MLflow model
URI (``models:/<experiment>@best``, ``models:/<id>``, ``runs:/<run>/model``) logged by the train stage.

Exactness: :meth:`Model.nll` is :func:`pixelzoo.evaluation.evaluate_with_map`'s per-image sum of
per-sub-pixel float64 NLLs, the very numbers behind ``metrics/<exp>.json`` (same fp32 forward, TF32 off).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pixelzoo.errors import MissingInput, UserError
from pixelzoo.integrity import checkout_root

MODEL_FILE = "model.pt"
URI_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/")


class InputError(UserError, ValueError):
    """Images that do not fit the model (size, channels, levels, labels); the message says what it expects."""


class Model:
    """A trained pixelzoo model with its experiment's config and data shape (``data_meta``)."""

    def __init__(self, module: nn.Module, checkpoint: Mapping[str, Any], source: str,
                 device: torch.device) -> None:
        self.module, self.source, self.device = module.eval(), source, device
        self.config: dict[str, Any] = dict(checkpoint["config"])
        self.data_meta: dict[str, Any] = dict(checkpoint["data"])
        self.sha256: str = checkpoint.get("sha256", "")
        self.channels, self.height, self.width, self.levels = (
            int(self.data_meta[k]) for k in ("channels", "height", "width", "levels"))
        self.conditional = bool(self.config.get("conditional"))
        self.n_classes = int(self.data_meta["n_classes"]) if self.conditional else 0

    @property
    def name(self) -> str:
        return str(self.config.get("name", self.source))

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.channels, self.height, self.width

    def __repr__(self) -> str:
        c, h, w = self.shape
        cond = f", conditional on {self.n_classes} classes" if self.conditional else ""
        return (f"<pixelzoo.Model {self.name}: {self.config['model']}, {c}×{h}×{w} at {self.levels} "
                f"levels{cond}>")

    # ------------------------------------------------------------------ inputs
    def check_levels(self, x: Any, what: str = "images") -> torch.Tensor:
        """``x`` (N×C×H×W or C×H×W integer levels, numpy or torch) as a LongTensor, or one InputError."""
        t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
        if t.dim() == 3:
            t = t.unsqueeze(0)
        c, h, w = self.shape
        if t.dim() != 4 or tuple(t.shape[1:]) != (c, h, w):
            raise InputError(f"{what} have shape {tuple(t.shape)}; {self.name} expects N×{c}×{h}×{w} "
                             f"({c} channel{'s' if c > 1 else ''}, {h}×{w} pixels)")
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise InputError(f"{what} are {t.dtype}; {self.name} expects integer levels in "
                             f"[0, {self.levels})")
        if len(t) and (int(t.min()) < 0 or int(t.max()) >= self.levels):
            raise InputError(f"{what} hold levels in [{int(t.min())}, {int(t.max())}]; {self.name} expects "
                             f"[0, {self.levels}) (its dataset has {self.levels} levels)")
        return t.long()

    def check_labels(self, y: Any, n: int) -> torch.Tensor | None:
        """Class labels for ``n`` images: None for an unconditional model, else a LongTensor (n,)."""
        if not self.conditional:
            if y is not None:
                raise InputError(f"{self.name} is not class-conditional; give no labels")
            return None
        if y is None:
            raise InputError(f"{self.name} is class-conditional: give a class in [0, {self.n_classes}) "
                             "for the images")
        t = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y)
        if t.dim() == 0:
            t = t.expand(n)
        if t.is_floating_point() and t.dim() == 2 and tuple(t.shape) == (n, self.n_classes):
            return t.float()  # soft labels
        if t.dim() != 1 or len(t) != n or t.is_floating_point():
            raise InputError(f"labels must be {n} class indices (or one), got shape {tuple(t.shape)}")
        if len(t) and (int(t.min()) < 0 or int(t.max()) >= self.n_classes):
            raise InputError(f"labels must lie in [0, {self.n_classes}), "
                             f"found [{int(t.min())}, {int(t.max())}]")
        return t.long()

    # ------------------------------------------------------------------ likelihood
    def nll(self, x: Any, y: Any = None, batch_size: int = 100) -> torch.Tensor:
        """Exact negative log-likelihood of each image in nats: float64 (N,)."""
        from pixelzoo.evaluation import evaluate_with_map

        xs = self.check_levels(x)
        ys = self.check_labels(y, len(xs))
        if len(xs) == 0:
            return torch.zeros(0, dtype=torch.float64)
        _, bits = evaluate_with_map(self.module, xs, ys, batch_size, self.device, n_examples=0)
        return torch.from_numpy(bits.image_nats)

    def log_prob(self, x: Any, y: Any = None, batch_size: int = 100) -> torch.Tensor:
        """log p(x) of each image in nats (float64, ≤ 0): ``-nll(x)``, exact."""
        return -self.nll(x, y, batch_size)

    def bits_per_dim(self, x: Any, y: Any = None, batch_size: int = 100) -> torch.Tensor:
        """NLL of each image in bits per sub-pixel: nats / (C·H·W·ln 2)."""
        return self.nll(x, y, batch_size) / (math.prod(self.shape) * math.log(2.0))

    # ------------------------------------------------------------------ sampling
    def sample(self, n: int, y: Any = None, seed: int | None = None, method: str = "cached") -> torch.Tensor:
        """``n`` images (LongTensor n×C×H×W of levels); ``y``: a class (or n classes) for conditional models.

        ``method``: "cached" (the model's incremental session) or "naive" (one forward per sub-pixel); both
        draw the same images for the same seed."""
        return self._draw(n, y, seed, method)

    def complete(self, x: Any, known_mask: Any, y: Any = None, seed: int | None = None,
                 method: str = "cached") -> torch.Tensor:
        """Fill in the sub-pixels of ``x`` where ``known_mask`` (bool C×H×W, or H×W for all channels) is
        False, each drawn given every earlier one; known sub-pixels are kept and seen as context."""
        xs = self.check_levels(x)
        known = torch.as_tensor(np.asarray(known_mask) if not isinstance(known_mask, torch.Tensor)
                                else known_mask).bool()
        if known.dim() == 2:
            known = known.expand(self.channels, *known.shape)
        if tuple(known.shape) != self.shape:
            raise InputError(f"known_mask has shape {tuple(known.shape)}; expected {self.shape} or "
                             f"{self.shape[1:]}")
        return self._draw(len(xs), y, seed, method, x_init=xs, known=known.contiguous())

    def _draw(self, n: int, y: Any, seed: int | None, method: str, **kw: Any) -> torch.Tensor:
        from pixelzoo import sampling

        if method not in sampling.METHODS:
            raise InputError(f"method must be one of {', '.join(sampling.METHODS)}, got {method!r}")
        if n < 1:
            raise InputError(f"the number of images must be >= 1, got {n}")
        if self.conditional and y is None:
            y = torch.full((n, self.n_classes), 1.0 / self.n_classes)  # no class preferred, as sample@
        labels = self.check_labels(y, n)
        gen = torch.Generator().manual_seed(int(seed)) if seed is not None else torch.Generator()
        if seed is None:
            gen.seed()
        try:
            return sampling.sample(self.module, n, channels=self.channels, height=self.height,
                                   width=self.width, levels=self.levels, y=labels, generator=gen,
                                   method=method, **kw).cpu()
        except ValueError as err:  # e.g. a model without a cached session
            raise InputError(str(err)) from err


# ---------------------------------------------------------------------- load
def checkpoint_path(ref: str | Path) -> Path:
    """The ``model.pt`` that ``ref`` (a file, a folder, or an experiment key of this checkout) names."""
    path = Path(ref)
    if path.is_file():
        return path
    for candidate in (path / MODEL_FILE, path / "train" / MODEL_FILE):
        if candidate.is_file():
            return candidate
    by_key = (checkout_root() or Path.cwd()) / "outputs" / str(ref) / "train" / MODEL_FILE
    if by_key.is_file():
        return by_key
    raise MissingInput(
        f"no trained model at {ref!r}: not a model.pt file or a folder holding one, and "
        f"{by_key} does not exist. Train it (`dvc repro train@{ref}`), fetch it (`dvc pull "
        f"outputs/{ref}/train` or `dvc artifacts get <repo> <artifact>`), or pass an MLflow model URI "
        f"(models:/<experiment>@best)")


def load(ref: str | Path, device: str = "cpu") -> Model:
    """A trained model: experiment key, ``model.pt`` path or folder, or MLflow model URI (see module doc).

    ``device``: "cpu" (default), "cuda" or "auto"."""
    from pixelzoo.checkpoint import load_trained
    from pixelzoo.device import pick_device

    dev = pick_device(device)
    if isinstance(ref, str) and ref.startswith(URI_SCHEMES):
        return _load_mlflow(ref, dev)
    path = checkpoint_path(ref)
    module, ckpt = load_trained(path, dev)
    return Model(module, ckpt, str(path), dev)


def _load_mlflow(uri: str, device: torch.device) -> Model:
    """Download the logged model's checkpoint (MLflow's artifact store) and load it here."""
    import mlflow


    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    except Exception as err:  # noqa: BLE001 - an unknown name/alias or an unreachable server: say which
        raise MissingInput(f"cannot fetch MLflow model {uri} from {mlflow.get_tracking_uri()} "
                           f"({type(err).__name__}: {str(err)[:200]})") from err
    found = sorted(local.rglob(MODEL_FILE))
    if not found:
        raise MissingInput(f"MLflow model {uri} holds no {MODEL_FILE}: not logged by pixelzoo")
    from pixelzoo.checkpoint import load_trained

    module, ckpt = load_trained(found[0], device)
    return Model(module, ckpt, uri, device)
