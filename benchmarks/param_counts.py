"""Parameter counts of the convolutional models at paper size (not run by CI).

Usage: PYTHONPATH=src python benchmarks/param_counts.py
"""

from __future__ import annotations

from pixelzoo.models import build_model

# (label, model name, build kwargs); defaults of each builder are its paper size.
CONFIGS = [
    ("PixelCNN, CIFAR-10 (15 layers, h=128, head 1024)", "pixelcnn",
     dict(channels=3, levels=256, height=32, width=32)),
    ("PixelCNN, binarized MNIST (15 layers, h=128, head 32)", "pixelcnn",
     dict(channels=1, levels=2, height=28, width=28, head_hidden=32)),
    ("Gated PixelCNN, CIFAR-10 (ours: 20 layers, 256 units, 5x5, head 1024)", "gated_pixelcnn",
     dict(channels=3, levels=256, height=32, width=32)),
    ("Gated PixelCNN, ImageNet 32x32 (20 layers, 384 units, 5x5, head 1024)", "gated_pixelcnn",
     dict(channels=3, levels=256, height=32, width=32, hidden=384)),
    ("Seed-004 conditional PixelCNN, MNIST 4 levels (4+4 layers, 200 features, 10 classes)",
     "seed004_pixelcnn", dict(channels=1, levels=4, height=28, width=28, n_classes=10)),
]


def count(model) -> tuple[int, int]:
    """(stored parameters, parameters left free by the masks)."""
    total = sum(p.numel() for p in model.parameters())
    masked_out = sum(
        int((m.mask == 0).sum()) for m in model.modules() if hasattr(m, "mask") and hasattr(m, "weight")
    )
    return total, total - masked_out


def main() -> None:
    for label, name, kwargs in CONFIGS:
        total, effective = count(build_model(name, **kwargs))
        print(f"{label:<92} {total:>12,} stored  {effective:>12,} unmasked")


if __name__ == "__main__":
    main()
