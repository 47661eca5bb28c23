"""Parameter counts of the models at paper size (not run by CI).

The convolutional models at the sizes listed below; every CIFAR-10 PixelRNN experiment of params.yaml
(Row LSTM, Diagonal BiLSTM, multi-scale) with its own model_args.

Usage: PYTHONPATH=src python benchmarks/param_counts.py
"""

from __future__ import annotations

from pathlib import Path

from pixelzoo.models import build_model
from pixelzoo.pipeline.settings import load_params

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
RNN_MODELS = ("row_lstm", "diagonal_bilstm", "multiscale_pixelrnn")

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


def params_configs() -> list[tuple[str, str, dict]]:
    """The first CIFAR-10 experiment of each PixelRNN model in params.yaml, at 32×32×3, K=256."""
    out, seen = [], set()
    for key, entry in load_params(PARAMS)["experiments"].items():
        if entry["model"] in RNN_MODELS and entry["dataset"] == "cifar10" and entry["model"] not in seen:
            seen.add(entry["model"])
            out.append((f"params.yaml {key}", entry["model"],
                        dict(channels=3, levels=256, height=32, width=32, **entry.get("model_args", {}))))
    return out


def main() -> None:
    for label, name, kwargs in CONFIGS + params_configs():
        total, effective = count(build_model(name, **kwargs))
        print(f"{label:<92} {total:>12,} stored  {effective:>12,} unmasked")


if __name__ == "__main__":
    main()
