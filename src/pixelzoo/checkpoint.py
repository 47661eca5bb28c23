"""Checkpoints: the one place that writes, reads and rebuilds them (lower house: the loop saves here).

- :func:`save_checkpoint` writes atomically through :func:`pixelzoo.safety.write_atomic` (the one
  atomic write); :func:`load_checkpoint` reads with ``weights_only=True`` and turns an unreadable file into
  a :class:`CorruptFile` naming the command that rebuilds it.
- The resume state: :func:`rng_state` / :func:`set_rng_state` (torch, numpy, CUDA) and :func:`resumable`,
  which accepts a scratch checkpoint only when its identity (config, data and code digests) is this run's.
- :func:`load_trained` rebuilds the model of a stage output ``model.pt`` (checked against the sha256 its
  train run recorded); :func:`build_from_config` is the one way from (config, meta) to a model.

It lives beside the loop, not in ``pixelzoo.pipeline``: the training loop saves and resumes through it,
and the lower house imports nothing of the pipeline (tests/test_layers.py).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pixelzoo import safety
from pixelzoo.errors import CorruptFile, MissingInput
from pixelzoo.integrity import bytes_sha256
from pixelzoo.models import build_model


# ----------------------------------------------------------------------------- the model a checkpoint holds
def data_shape(meta: Mapping[str, Any]) -> dict[str, int]:
    return {k: int(meta[k]) for k in ("channels", "levels", "height", "width")}


def build_from_config(cfg: Mapping[str, Any], meta: Mapping[str, Any]) -> nn.Module:
    """The experiment's model, sized from the dataset's meta.json; class-conditional if ``conditional``."""
    n_classes = int(meta["n_classes"]) if cfg.get("conditional", False) else None
    return build_model(cfg["model"], **data_shape(meta), n_classes=n_classes, **(cfg.get("model_args") or {}))



# ----------------------------------------------------------------------------- write, read, resume
def save_checkpoint(obj: Any, path: Path) -> None:
    """``torch.save(obj)`` to ``path`` atomically (tensors and plain data only: read back weights_only)."""
    # A kill during the write never leaves a truncated checkpoint behind (temp, then rename). torch.save
    # into an open file (not a path): a full disk is then Python's OSError, not torch's "unexpected pos",
    # and safety.write_atomic names the file, removes the temp and keeps the previous checkpoint.
    safety.write_atomic(path, lambda fh: torch.save(obj, fh), path.with_suffix(path.suffix + ".tmp"))


def write_text(path: Path, text: str) -> None:
    """A text output beside the checkpoint (history.json), written the same atomic way."""
    safety.write_text_atomic(path, text, path.with_suffix(path.suffix + ".tmp"))


def rng_state() -> dict[str, Any]:
    # numpy's state as tensors and plain values, so the checkpoint loads with weights_only=True
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)]
    state = {"torch": torch.get_rng_state(), "numpy": numpy_state}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _identity_changes(saved: Mapping[str, Any] | None, now: Mapping[str, Any]) -> list[str]:
    """Why a resume checkpoint does not belong to this run (empty: it does)."""
    if not isinstance(saved, Mapping):
        return ["it records no config/data/code digests (written by an older version)"]
    out = []
    if saved.get("config") != now["config"]:
        out.append(f"resolved config sha256 {str(saved.get('config'))[:12]} != now {now['config'][:12]}")
    for split, h in now["data"].items():
        old = (saved.get("data") or {}).get(split)
        if old != h:
            out.append(f"{split} data sha256 {str(old)[:12]} != now {h[:12]}")
    if saved.get("code") != now["code"]:
        out.append(f"model/training code sha256 {str(saved.get('code'))[:12]} != now {now['code'][:12]}")
    return out


def resumable(
    path: Path, identity: Mapping[str, Any], name: str, owner: bool = True
) -> dict[str, Any] | None:
    """The resume checkpoint at ``path`` if it was written by this same run; else the owner (rank 0)
    discards it, saying why."""
    if not path.exists():
        return None
    try:
        ckpt = load_checkpoint(path, "")
        why = _identity_changes(ckpt.get("identity"), identity)
    except CorruptFile as err:
        why = [f"unreadable ({err.__cause__})"]
    if not why:
        return ckpt
    if owner:
        print(f"discarding {path}: not the same run as {name} now ({'; '.join(why)}); training from scratch",
              flush=True)
        path.unlink(missing_ok=True)
    return None


def load_checkpoint(path: Path, rebuild: str, data: bytes | None = None) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` (from ``data``, the file's bytes, when given); a truncated
    or corrupt file is a CorruptFile error naming it and ``rebuild``, the command that writes it again."""
    try:
        source = io.BytesIO(data) if data is not None else path
        return torch.load(source, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # noqa: BLE001 - zip, pickle and unpickler errors all mean "unreadable"
        raise CorruptFile(f"{path} is corrupt or truncated ({type(err).__name__}: {str(err)[:120]}); "
                          f"rebuild it with `{rebuild}`") from err


def load_trained(
    path: Path, device: torch.device | str = "cpu", expected_sha256: str | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model saved by :func:`train` (``model.pt``); returns (model in eval mode, checkpoint).

    The checkpoint's sha256 is measured on the very bytes that are loaded (``ckpt["sha256"]``); if
    ``expected_sha256`` (what its train run recorded) differs, the file was changed: a CorruptFile error.
    """
    path = Path(path)
    rebuild = f"dvc repro -f train@{path.parent.parent.name}"
    if not path.is_file():
        raise MissingInput(f"{path} not found: train the model first with `{rebuild.replace(' -f', '')}`")
    data = path.read_bytes()
    measured = bytes_sha256(data)
    changed = expected_sha256 is not None and measured != expected_sha256
    try:
        ckpt = load_checkpoint(path, rebuild, data)
    except CorruptFile as err:
        if changed:
            raise CorruptFile(f"{err} (sha256 {measured}; its train run recorded {expected_sha256})") from err
        raise
    if changed:
        raise CorruptFile(
            f"{path}: sha256 {measured} differs from {expected_sha256} recorded by the train run that wrote "
            f"it; the file was changed after training. Restore it with `dvc checkout {path.parent}` or "
            f"retrain with `{rebuild}`"
        )
    ckpt["sha256"] = measured
    model = build_from_config(ckpt["config"], ckpt["data"])
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        raise CorruptFile(f"{path} does not match its model ({str(err)[:160]}); rebuild it with `{rebuild}`"
                          ) from err
    return model.to(device).eval(), ckpt


def check_data_fits(ckpt: Mapping[str, Any], meta: Mapping[str, Any], path: Path) -> None:
    """A stage output trained on other data (levels K, channels, size) than the dataset has now would be
    scored or sampled at the wrong K without an error: a MissingInput naming the retrain command."""
    trained, now = {k: int(ckpt["data"][k]) for k in data_shape(meta)}, data_shape(meta)
    if trained != now:
        diff = ", ".join(f"{k} {trained[k]} (data now: {now[k]})" for k in now if trained[k] != now[k])
        raise MissingInput(f"{path} was trained on other data than {meta.get('name', 'the dataset')} has now "
                           f"({diff}); retrain it with `dvc repro train@{Path(path).parent.parent.name}`")


def resume_step(path: Path) -> int | str:
    try:
        return int(load_checkpoint(path, "")["state"]["global_step"])
    except Exception:  # noqa: BLE001 - only for the message
        return "?"


def clear_scratch(scratch_dir: Path) -> None:
    """Remove the resumable checkpoint once the whole stage (outputs and tracking) has finished."""
    path = Path(scratch_dir) / "resume.pt"
    if path.exists():
        path.unlink()
