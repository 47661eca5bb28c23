"""Causality and receptive-field audit by autograd: a leak test and a structural reachability map.

Two analyses, for two questions:

- :func:`audit_model` (the *leak test*) backpropagates from a randomly initialised model. Real weights of
  both signs are what can leak in practice (a BatchNorm in train mode, a wrong mask), but small effects
  attenuate: a long-range dependence can fall under any tolerance.
- :func:`reachability_model` (the *structural map*) answers "which input sub-pixels *can* influence an
  output at all". It runs a float64 copy in eval mode whose every parameter is positive and whose input
  is the top level everywhere: every activation is then positive, every local derivative on a
  connection is positive (ReLU, σ, tanh and the gates at positive arguments), so no two paths cancel
  and a connection in the graph gives a strictly positive gradient; only an exact zero means "no
  path". Weights are scaled by 1/fan-in so activations stay O(1) and nothing underflows (the smallest
  dependence found is reported).

For every output sub-pixel (c, i, j) of image 0 we backpropagate a random projection of its K logits
to the input levels of the whole batch and record which input sub-pixels get a non-zero gradient.
From that dependency map we report

- leaks: dependence on the current or a later sub-pixel in generation order (raster, then R→G→B by
  default; ``registry.generation_order`` for models such as multi-scale that define their own);
- cross-batch leaks: dependence on another image of the batch (train-mode BatchNorm does both);
- coverage: earlier sub-pixels never seen, and the *blind spot*: unseen earlier sub-pixels that lie
  below a seen sub-pixel of the same input channel and column (context that is reachable further up
  but skipped next to the pixel, the hole of stacked masked convolutions).

The audit runs on a float64 copy of the model (with float64 as the default dtype, so tensors a model
makes itself match), so rounding noise is ~1e-16 and a relative threshold of 1e-9 separates "exactly
no path" from real, if small, dependence (PITFALLS: float32 conv algorithms are not exact-zero).
Models must compute from ``scale_input(x, K)``, which keeps the graph of a float ``x``.

Heads (:func:`pixelzoo.likelihood.head_of`): the leak test differentiates the head's conditional
log-probabilities of every sub-pixel (for the categorical head, the logits themselves), so a
mixture's R→G→B coupling is checked in exactly the generation order: G of pixel p may see R of p, B
may see R and G. A head whose network output describes *whole pixels* (``whole_pixel``, the
PixelCNN++ mixture) is also audited at the network output (``outputs="network"``) in *pixel* order:
no parameter of pixel p may see any channel of p, so the colours of p enter only through the
coupling. The structural map of such a model is taken at the network output, in pixel order. A model
whose non-linearities have negative slopes (concat_elu) provides ``monotone_()``: the same
connections with positive slopes, which the structural copy switches on.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pixelzoo import commands
from pixelzoo.likelihood import head_of
from pixelzoo.models.registry import build_model, generation_order, registered, tiny_args


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


@dataclass
class AuditResult:
    """Dependency map of image 0 of a batch; sub-pixels are flat indices c·H·W + i·W + j."""

    channels: int
    height: int
    width: int
    batch: int
    mode: str
    dep: torch.Tensor  # bool (N_out, N_in): output sub-pixel depends on input sub-pixel of the same image
    cross: torch.Tensor  # bool (N_out,): output depends on some other image of the batch
    rank: torch.Tensor  # long (N,): position of each flat sub-pixel in generation order
    smallest: float | None = None  # structural maps: the smallest positive dependence (underflow margin)
    unit: str = "subpixel"  # "pixel": outputs describe whole pixels and may see only earlier pixels

    @property
    def allowed(self) -> torch.Tensor:
        """bool (N_out, N_in): input strictly earlier than output in generation order (sub-pixels, or
        whole pixels for ``unit == "pixel"``: a pixel comes when its first sub-pixel does)."""
        rank = self.rank
        if self.unit == "pixel":
            hw = self.height * self.width
            rank = rank.view(self.channels, hw).amin(0).repeat(self.channels)
        return rank[None, :] < rank[:, None]

    @property
    def leaks(self) -> torch.Tensor:
        """bool (N_out, N_in): dependence on the current or a later sub-pixel."""
        return self.dep & ~self.allowed

    @property
    def unseen(self) -> torch.Tensor:
        """bool (N_out, N_in): earlier sub-pixels the output never sees."""
        return self.allowed & ~self.dep

    @property
    def blind_spot(self) -> torch.Tensor:
        """bool (N_out, N_in): unseen earlier sub-pixels with a seen one above them (same channel, column)."""
        c, h, w = self.channels, self.height, self.width
        seen = (self.dep & self.allowed).view(-1, c, h, w)
        # seen_above[..., i, j]: some row i' < i of that column is seen
        seen_above = torch.cumsum(seen.long(), dim=2) - seen.long() > 0
        return self.unseen & seen_above.view(-1, c * h * w)

    def leak_list(self, limit: int = 20) -> list[tuple[tuple[int, int, int], tuple[int, int, int]]]:
        """First ``limit`` leaks as ((c, i, j) output, (c, i, j) input) pairs."""
        pairs = self.leaks.nonzero().tolist()[:limit]
        return [(self.unflat(o), self.unflat(q)) for o, q in pairs]

    def unflat(self, k: int) -> tuple[int, int, int]:
        hw = self.height * self.width
        return (k // hw, (k % hw) // self.width, k % self.width)

    def summary(self) -> dict:
        """Counts for reports and JSON."""
        return {
            "channels": self.channels,
            "height": self.height,
            "width": self.width,
            "batch": self.batch,
            "mode": self.mode,
            "unit": self.unit,
            "n_leaks": int(self.leaks.sum()),
            "n_outputs_leaking": int(self.leaks.any(1).sum()),
            "n_outputs_cross_batch": int(self.cross.sum()),
            "n_unseen_earlier": int(self.unseen.sum()),
            "n_blind_spot": int(self.blind_spot.sum()),
            "n_outputs_with_blind_spot": int(self.blind_spot.any(1).sum()),
            "first_leaks": self.leak_list(5),
            **({"smallest_dependence": self.smallest} if self.smallest is not None else {}),
        }


def audit_model(
    model: nn.Module,
    channels: int,
    levels: int,
    height: int,
    width: int,
    *,
    batch: int = 1,
    mode: str = "eval",
    n_classes: int | None = None,
    seed: int = 0,
    rel_tol: float = 1e-9,
    outputs: str = "distribution",
) -> AuditResult:
    """Dependency map of ``model`` (left untouched: the audit runs on a float64 copy) on random images.

    ``outputs``: "distribution" (the head's per-sub-pixel conditionals, generation order) or
    "network" (the raw network output; in pixel order when the head describes whole pixels).
    """
    if mode not in ("eval", "train"):
        raise ValueError(f"mode must be 'eval' or 'train', got {mode!r}")
    if outputs not in ("distribution", "network"):
        raise ValueError(f"outputs must be 'distribution' or 'network', got {outputs!r}")
    gen = torch.Generator().manual_seed(seed)
    m = copy.deepcopy(model).double()
    m.train(mode == "train")
    head = head_of(m)
    n = channels * height * width
    with _default_dtype(torch.float64):
        x = torch.randint(0, levels, (batch, channels, height, width), generator=gen).double()
        x.requires_grad_(True)
        y = torch.randint(0, n_classes, (batch,), generator=gen) if n_classes else None
        raw = m(x, y)
        logits = head.conditional_logits(raw, x) if outputs == "distribution" else head.network_outputs(raw)
        if outputs == "distribution" and tuple(logits.shape) != (batch, levels, channels, height, width):
            raise ValueError(f"model returned logits {tuple(logits.shape)}, expected B×K×C×H×W = "
                             f"{(batch, levels, channels, height, width)}")
        # A random projection of the K logits: a real dependence cannot cancel to zero by chance.
        w = torch.randn(logits.shape[1], generator=gen, dtype=torch.float64)
        out = torch.einsum("kchw,k->chw", logits[0], w).reshape(-1)
        grads = torch.stack(
            [torch.autograd.grad(out[k], x, retain_graph=True)[0] for k in range(n)]
        ).abs().reshape(n, batch, n)
        scale = grads.amax(dim=(1, 2), keepdim=True)
        nonzero = grads > rel_tol * scale
    rank = _rank(model, channels, height, width)
    unit = "pixel" if outputs == "network" and head.whole_pixel else "subpixel"
    return AuditResult(channels, height, width, batch, mode, nonzero[:, 0], nonzero[:, 1:].any((1, 2)), rank,
                       unit=unit)


def _rank(model: nn.Module, channels: int, height: int, width: int) -> torch.Tensor:
    """Position of each flat sub-pixel in the model's generation order."""
    n = channels * height * width
    order = generation_order(model, channels, height, width)
    if sorted(order.tolist()) != list(range(n)):
        raise ValueError("generation_order must be a permutation of all C·H·W sub-pixels")
    rank = torch.empty(n, dtype=torch.long)
    rank[order] = torch.arange(n)
    return rank


@torch.no_grad()
def _make_positive(m: nn.Module, seed: int) -> None:
    """Every parameter in [0.5, 1]/fan-in (vectors in [0.05, 0.1]); BatchNorm statistics neutral."""
    gen = torch.Generator().manual_seed(seed)
    for p in m.parameters():
        u = 0.5 + 0.5 * torch.rand(p.shape, generator=gen, dtype=p.dtype)
        p.copy_(u / p[0].numel() if p.dim() >= 2 else 0.1 * u)
    for mod in m.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm) and mod.running_mean is not None:
            mod.running_mean.zero_()
            mod.running_var.fill_(1.0)


def reachability_model(
    model: nn.Module,
    channels: int,
    levels: int,
    height: int,
    width: int,
    *,
    n_classes: int | None = None,
    seed: int = 0,
    chunk: int = 128,
) -> AuditResult:
    """Structural dependency map of ``model`` (left untouched): which inputs can influence each output.

    Eval mode only (the mode the NLL and the sampler use). One copy of the image per output sub-pixel
    in the batch, so one backward gives a whole chunk of Jacobian rows; valid because in eval mode no
    image reads another (the leak test :func:`audit_model` checks exactly that).
    """
    m = copy.deepcopy(model).double().eval()
    _make_positive(m, seed)
    if hasattr(m, "monotone_"):
        m.monotone_()
    head = head_of(m)
    n = channels * height * width
    dep = torch.zeros(n, n, dtype=torch.bool)
    smallest = math.inf
    with _default_dtype(torch.float64):
        for start in range(0, n, chunk):
            rows = torch.arange(start, min(start + chunk, n))
            x = torch.full((len(rows), channels, height, width), float(levels - 1), requires_grad=True)
            y = torch.zeros(len(rows), dtype=torch.long) if n_classes else None
            logits = head.network_outputs(m(x, y))
            want = (len(rows), levels, channels, height, width)
            if not head.whole_pixel and tuple(logits.shape) != want:
                raise ValueError(f"model returned logits {tuple(logits.shape)}, expected B×K×C×H×W = {want}")
            out = logits.sum(1).reshape(len(rows), n)[torch.arange(len(rows)), rows]
            (grad,) = torch.autograd.grad(out.sum(), x)
            grad = grad.reshape(len(rows), n)
            if (grad < 0).any():  # positive weights and inputs: a negative slope means a broken premise
                raise RuntimeError("negative dependence in the positive-weight copy: the map is not exact")
            dep[rows] = grad > 0
            if dep[rows].any():
                smallest = min(smallest, float(grad[grad > 0].min()))
    rank = _rank(model, channels, height, width)
    return AuditResult(channels, height, width, 1, "structural", dep, torch.zeros(n, dtype=torch.bool), rank,
                       smallest=smallest if math.isfinite(smallest) else None,
                       unit="pixel" if head.whole_pixel else "subpixel")


# Per model family: (reach of the first layer, reach added per layer) in rows/columns, for
# :func:`reach_args`. Recurrent models reach the whole context (or their triangle) at any depth.
_REACH = {
    "pixelcnn": lambda a: (3, 1),
    "seed004_pixelcnn": lambda a: (3, 2),  # `layers` counts U-Net halves: 2·layers − 1 blocks
    "gated_pixelcnn": lambda a: (0, int(a.get("kernel_size", 3)) // 2),
}


# Models whose depth argument is not ``layers``: (argument, value that spans a size×size image), measured
# with the structural map (PixelCNN++: nr_resnet 2 at 8×8, 4 at 16×16; at 32×32 the paper's 5 leaves
# far-right pixels of the rows just above unseen).
_REACH_DEPTH = {
    "pixelcnn_pp": ("nr_resnet", lambda size: math.ceil(size / 4)),
}


def reach_args(name: str, size: int) -> dict[str, object]:
    """Tiny args of ``name`` with enough layers that its receptive field spans a ``size``×``size`` image.

    A stack of local convolutions reaches a few rows per layer: at tiny depth its map shows only the
    depth limit. Deep enough, what is left unseen is what the architecture never sees (the blind spot).
    """
    args = tiny_args(name)
    if name in _REACH:
        first, per = _REACH[name](args)
        args["layers"] = max(int(args["layers"]), math.ceil((size - 1 - first) / per))
    if name in _REACH_DEPTH:
        key, depth = _REACH_DEPTH[name]
        args[key] = max(int(args[key]), depth(size))
    return args


def reachability(
    name: str, channels: int, levels: int, height: int, width: int, *, n_classes: int | None = None,
    seed: int = 0, **overrides: object,
) -> AuditResult:
    """Structural map of the registered model ``name`` at :func:`reach_args` (updated by ``overrides``)."""
    torch.manual_seed(seed)
    args = {**reach_args(name, max(height, width)), **overrides}
    model = build_model(
        name, channels=channels, levels=levels, height=height, width=width, n_classes=n_classes, **args
    )
    return reachability_model(model, channels, levels, height, width, n_classes=n_classes, seed=seed)


def audit(
    name: str,
    channels: int,
    levels: int,
    height: int,
    width: int,
    *,
    batch: int = 1,
    mode: str = "eval",
    n_classes: int | None = None,
    seed: int = 0,
    **overrides: object,
) -> AuditResult:
    """Audit the registered model ``name`` at its tiny args (updated by ``overrides``)."""
    torch.manual_seed(seed)
    args = {**tiny_args(name), **overrides}
    model = build_model(
        name, channels=channels, levels=levels, height=height, width=width, n_classes=n_classes, **args
    )
    return audit_model(
        model, channels, levels, height, width, batch=batch, mode=mode, n_classes=n_classes, seed=seed
    )


# Colours of the receptive-field picture (seed 000, figs. 2 and 4: context in yellow, the hole visible).
_COLOURS = {
    "future": (0.93, 0.93, 0.93),
    "blind spot": (0.95, 0.45, 0.10),
    "unseen (out of reach)": (0.70, 0.78, 0.90),
    "seen": (1.00, 0.85, 0.10),
    "current": (0.10, 0.10, 0.10),
    "leak": (0.85, 0.00, 0.55),
}


def default_pixel(height: int, width: int) -> tuple[int, int]:
    """The pixel the maps show: low in the image and mid-row, so rows of context above it show their shape."""
    return (3 * height) // 4, width // 2


def classify(result: AuditResult, out: int) -> np.ndarray:
    """Index into ``list(_COLOURS)`` for every input sub-pixel (C×H×W) as seen from flat output ``out``."""
    keys = list(_COLOURS)
    cls = np.full(result.channels * result.height * result.width, keys.index("future"))
    # Later assignments win: the order is the legend's priority (a leak shows over anything).
    for key, where in (
        ("unseen (out of reach)", result.allowed[out]),
        ("blind spot", result.blind_spot[out]),
        ("seen", (result.dep & result.allowed)[out]),
        ("current", torch.arange(cls.size) == out),
        ("leak", result.leaks[out]),
    ):
        cls[where.numpy()] = keys.index(key)
    return cls.reshape(result.channels, result.height, result.width)


def render_receptive_field(
    result: AuditResult, path: str | Path, pixel: tuple[int, int] | None = None, title: str = ""
) -> Path:
    """Draw, for one output pixel (default :func:`default_pixel`), which input sub-pixels each channel reads.

    One row of panels per output channel, one panel per input channel, and a legend: seen earlier
    sub-pixels, blind spot, unseen out-of-reach ones, the current sub-pixel, future ones and any leak.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    c, h, w = result.channels, result.height, result.width
    i, j = pixel if pixel is not None else default_pixel(h, w)
    if not (0 <= i < h and 0 <= j < w):
        raise ValueError(f"pixel {(i, j)} lies outside the {h}×{w} image")
    palette = np.array(list(_COLOURS.values()))
    panel = 3.0 if c == 1 else 2.4
    fig, axes = plt.subplots(c, c, figsize=(panel * c + 1.9, panel * c + 0.5), squeeze=False)
    names = "RGB" if c == 3 else [str(k) for k in range(c)]
    for co in range(c):
        cls = classify(result, co * h * w + i * w + j)
        for ci in range(c):
            ax = axes[co][ci]
            ax.imshow(palette[cls[ci]], interpolation="nearest")
            ax.set_xticks([x - 0.5 for x in range(w + 1)], minor=True)
            ax.set_yticks([y - 0.5 for y in range(h + 1)], minor=True)
            ax.grid(which="minor", color="white", linewidth=0.5 if max(h, w) <= 16 else 0.2)
            ax.tick_params(which="both", length=0, labelbottom=False, labelleft=False)
            ax.plot(j, i, marker="s", markersize=4, markerfacecolor="none", markeredgecolor="red")
            label = f"output {names[co]} ← input {names[ci]}" if c > 1 else f"pixel {(i, j)}"
            ax.set_title(label, fontsize=9)
    handles = [Patch(facecolor=col, edgecolor="0.6", label=k) for k, col in _COLOURS.items()]
    fig.legend(handles=handles, loc="center right", fontsize=8, frameon=False)
    fig.suptitle(title or f"receptive field of pixel {(i, j)} ({result.mode})", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1 - 1.9 / (panel * c + 1.9), 0.94))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _overrides(pairs: list[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for kv in pairs:
        key, _, val = kv.partition("=")
        try:
            out[key] = json.loads(val)
        except json.JSONDecodeError:
            out[key] = val
    return out


def _counts(s: dict) -> str:
    keys = ("n_leaks", "n_outputs_cross_batch", "n_unseen_earlier", "n_blind_spot", "smallest_dependence")
    return json.dumps({k: s[k] for k in keys if k in s})


def main(argv: list[str] | None = None) -> None:
    """CLI: ``python -m pixelzoo.audit --model NAME --out DIR`` writes maps and a JSON summary.

    Three analyses: the structural map (deep enough to span the image, :func:`reach_args`) and the
    random-init leak test in eval and in train mode (tiny args).
    """
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands.audit_arguments(p)
    a = p.parse_args(argv)
    if a.model not in registered():
        p.error(f"unknown model {a.model!r}; registered: {', '.join(registered())}")
    if a.size < 2 or a.channels < 1:
        p.error(f"--size must be >= 2 and --channels >= 1, got {a.size} and {a.channels}")
    overrides = _overrides(a.set)
    summaries = {}
    args = {**reach_args(a.model, a.size), **overrides}
    r = reachability(a.model, a.channels, a.levels, a.size, a.size, **overrides)
    summaries["structural"] = {**r.summary(), "model_args": args}
    png = render_receptive_field(r, a.out / f"{a.model}_structural.png",
                                 title=f"{a.model} {json.dumps(args)}: structural, {a.size}×{a.size}")
    print(f"structural ({a.size}×{a.size}, args {json.dumps(args)}): {_counts(summaries['structural'])}")
    print(f"wrote {png}")
    for mode in () if a.no_leak_test else ("eval", "train"):
        r = audit(a.model, a.channels, a.levels, a.size, a.size, batch=a.batch, mode=mode, **overrides)
        summaries[mode] = r.summary()
        png = render_receptive_field(r, a.out / f"{a.model}_{mode}.png",
                                     title=f"{a.model} (tiny args), random init, {mode} mode")
        print(f"leak test, {mode} mode: {_counts(summaries[mode])}")
        print(f"wrote {png}")
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / f"{a.model}_audit.json").write_text(json.dumps(summaries, indent=2))


if __name__ == "__main__":
    main()
