"""Causality and receptive-field audit by autograd.

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
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

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

    @property
    def allowed(self) -> torch.Tensor:
        """bool (N_out, N_in): input is strictly earlier than output in generation order."""
        return self.rank[None, :] < self.rank[:, None]

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
            "n_leaks": int(self.leaks.sum()),
            "n_outputs_leaking": int(self.leaks.any(1).sum()),
            "n_outputs_cross_batch": int(self.cross.sum()),
            "n_unseen_earlier": int(self.unseen.sum()),
            "n_blind_spot": int(self.blind_spot.sum()),
            "n_outputs_with_blind_spot": int(self.blind_spot.any(1).sum()),
            "first_leaks": self.leak_list(5),
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
) -> AuditResult:
    """Dependency map of ``model`` (left untouched: the audit runs on a float64 copy) on random images."""
    if mode not in ("eval", "train"):
        raise ValueError(f"mode must be 'eval' or 'train', got {mode!r}")
    gen = torch.Generator().manual_seed(seed)
    m = copy.deepcopy(model).double()
    m.train(mode == "train")
    n = channels * height * width
    with _default_dtype(torch.float64):
        x = torch.randint(0, levels, (batch, channels, height, width), generator=gen).double()
        x.requires_grad_(True)
        y = torch.randint(0, n_classes, (batch,), generator=gen) if n_classes else None
        logits = m(x, y)
        want = (batch, levels, channels, height, width)
        if tuple(logits.shape) != want:
            raise ValueError(f"model returned logits {tuple(logits.shape)}, expected B×K×C×H×W = {want}")
        # A random projection of the K logits: a real dependence cannot cancel to zero by chance.
        w = torch.randn(levels, generator=gen, dtype=torch.float64)
        out = torch.einsum("kchw,k->chw", logits[0], w).reshape(-1)
        grads = torch.stack(
            [torch.autograd.grad(out[k], x, retain_graph=True)[0] for k in range(n)]
        ).abs().reshape(n, batch, n)
        scale = grads.amax(dim=(1, 2), keepdim=True)
        nonzero = grads > rel_tol * scale
    order = generation_order(model, channels, height, width)
    if sorted(order.tolist()) != list(range(n)):
        raise ValueError("generation_order must be a permutation of all C·H·W sub-pixels")
    rank = torch.empty(n, dtype=torch.long)
    rank[order] = torch.arange(n)
    return AuditResult(channels, height, width, batch, mode, nonzero[:, 0], nonzero[:, 1:].any((1, 2)), rank)


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


def render_receptive_field(
    result: AuditResult, path: str | Path, pixel: tuple[int, int] | None = None, title: str = ""
) -> Path:
    """Draw, for one output pixel (default: the centre), which input sub-pixels each channel reads.

    One row of panels per output channel, one panel per input channel: seen earlier sub-pixels,
    blind spot, unseen out-of-reach ones, the current sub-pixel, future ones and any leak.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    c, h, w = result.channels, result.height, result.width
    i, j = pixel if pixel is not None else (h // 2, w // 2)
    if not (0 <= i < h and 0 <= j < w):
        raise ValueError(f"pixel {(i, j)} lies outside the {h}×{w} image")
    blind, leaks, seen = result.blind_spot, result.leaks, result.dep & result.allowed
    allowed = result.allowed
    fig, axes = plt.subplots(c, c, figsize=(3.2 * c + 1.6, 3.2 * c), squeeze=False)
    names = "RGB" if c == 3 else [str(k) for k in range(c)]
    for co in range(c):
        o = co * h * w + i * w + j
        for ci in range(c):
            img = torch.empty(h, w, 3)
            for ii in range(h):
                for jj in range(w):
                    q = ci * h * w + ii * w + jj
                    if leaks[o, q]:
                        key = "leak"
                    elif q == o:
                        key = "current"
                    elif seen[o, q]:
                        key = "seen"
                    elif blind[o, q]:
                        key = "blind spot"
                    elif allowed[o, q]:
                        key = "unseen (out of reach)"
                    else:
                        key = "future"
                    img[ii, jj] = torch.tensor(_COLOURS[key])
            ax = axes[co][ci]
            ax.imshow(img.numpy(), interpolation="nearest")
            ax.set_xticks([x - 0.5 for x in range(w + 1)], minor=True)
            ax.set_yticks([y - 0.5 for y in range(h + 1)], minor=True)
            ax.grid(which="minor", color="white", linewidth=0.6)
            ax.tick_params(which="both", length=0, labelbottom=False, labelleft=False)
            ax.plot(j, i, marker="s", markersize=6, markerfacecolor="none", markeredgecolor="red")
            ax.set_title(f"output {names[co]} ← input {names[ci]}", fontsize=9)
    handles = [Patch(color=col, label=k) for k, col in _COLOURS.items()]
    fig.legend(handles=handles, loc="center right", fontsize=8, frameon=False)
    fig.suptitle(title or f"receptive field of pixel {(i, j)} ({result.mode} mode)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1 - 1.4 / (3.2 * c + 1.6), 0.95))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    """CLI: ``python -m pixelzoo.audit --model NAME --out DIR`` writes maps and a JSON summary."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help=f"registered model: {', '.join(registered())}")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--levels", type=int, default=4)
    p.add_argument("--size", type=int, default=16, help="image height = width")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                   help="override a tiny arg, e.g. --set norm='\"batch\"' or --set layers=4")
    a = p.parse_args(argv)
    if a.model not in registered():
        p.error(f"unknown model {a.model!r}; registered: {', '.join(registered())}")
    overrides = {}
    for kv in a.set:
        key, _, val = kv.partition("=")
        try:
            overrides[key] = json.loads(val)
        except json.JSONDecodeError:
            overrides[key] = val
    summaries = {}
    for mode in ("eval", "train"):
        r = audit(a.model, a.channels, a.levels, a.size, a.size, batch=a.batch, mode=mode, **overrides)
        summaries[mode] = r.summary()
        png = render_receptive_field(r, a.out / f"{a.model}_{mode}.png",
                                     title=f"{a.model} (tiny args), {mode} mode")
        print(f"{mode}: {json.dumps({k: v for k, v in summaries[mode].items() if k != 'first_leaks'})}")
        print(f"wrote {png}")
    (a.out / f"{a.model}_audit.json").write_text(json.dumps(summaries, indent=2))


if __name__ == "__main__":
    main()
