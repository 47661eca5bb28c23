"""Published figures the reproduction is compared against, as data.

Every number here is copied from /work/shared/REFERENCE.md (which records where each was read); nothing
is derived or estimated. ``cited`` marks baselines a paper quotes from other work (NADE, NICE, ...):
the report shows them as cited figures and never attaches one of our runs to them.

Papers:
- PixelRNN: van den Oord, Kalchbrenner, Kavukcuoglu, "Pixel Recurrent Neural Networks", ICML 2016
  (arXiv 1601.06759v3).
- Gated PixelCNN: van den Oord et al., "Conditional Image Generation with PixelCNN Decoders", NeurIPS 2016
  (arXiv 1606.05328), read through DDPM Table 1, PixelCNN++ Table 1 and PixelVAE Table 2.
"""

from __future__ import annotations

from dataclasses import dataclass

PIXELRNN = "van den Oord, Kalchbrenner & Kavukcuoglu, Pixel Recurrent Neural Networks, ICML 2016"
GATED_PIXELCNN_PAPER = (
    "van den Oord et al., Conditional Image Generation with PixelCNN Decoders, NeurIPS 2016 "
    "(read through DDPM Table 1, PixelCNN++ Table 1, PixelVAE Table 2)"
)
PIXELVAE = "Gulrajani et al., PixelVAE (a PyTorch reimplementation of Gated PixelCNN reported there)"
PIXELCNNPP = "Salimans et al., PixelCNN++, ICLR 2017 (Table 1)"
PIXELCNNPP_COND = "Salimans et al., PixelCNN++, ICLR 2017 (its class-conditional model)"
PIXELSNAIL = "Chen et al., PixelSNAIL, ICML 2018"
# Short names shown beside a row whose figure comes from another paper than its table.
SHORT = {
    GATED_PIXELCNN_PAPER: "van den Oord et al. 2016b",
    PIXELVAE: "PixelVAE",
    PIXELCNNPP: "Salimans et al. 2017",
    PIXELCNNPP_COND: "Salimans et al. 2017",
    PIXELSNAIL: "Chen et al. 2018",
}


@dataclass(frozen=True)
class RefRow:
    """One published figure.

    ``relation`` is how the paper states it: "=" exact, "≤" an upper bound, "≈" approximate.
    ``train`` is the training-set figure where the paper gives one. ``citation`` overrides the table's.
    """

    label: str
    value: float
    train: float | None = None
    relation: str = "="
    cited: bool = False
    citation: str | None = None
    display: str | None = None  # shown instead of ``label`` where the label alone is terse

    @property
    def name(self) -> str:
        return self.display or self.label


@dataclass(frozen=True)
class RefTable:
    """A published table: what was measured, on which split, in which unit, and where it was printed."""

    id: str
    title: str
    dataset: str
    split: str
    unit: str  # "nats" (per image) or "bits/dim"
    citation: str
    rows: tuple[RefRow, ...]

    @property
    def metric_key(self) -> str:
        """The metrics-JSON key holding our figure in this table's unit."""
        return "test_nats_per_image" if self.unit == "nats" else "test_bits_per_dim"

    def row(self, label: str) -> RefRow:
        """The row called ``label``; a clear error lists the valid labels."""
        for r in self.rows:
            if r.label == label:
                return r
        labels = ", ".join(repr(r.label) for r in self.rows)
        raise KeyError(f"reference table {self.id!r} has no row {label!r}; rows are: {labels}")


TABLES: tuple[RefTable, ...] = (
    RefTable(
        id="pixelrnn_t4_bmnist",
        title="Binarized MNIST: test negative log-likelihood",
        dataset="binarized MNIST (fixed binarization, Salakhutdinov & Murray 2008)",
        split="test",
        unit="nats",
        citation=f"{PIXELRNN}, Table 4",
        rows=(
            RefRow("NADE", 88.33, cited=True),
            RefRow("MADE", 86.64, cited=True),
            RefRow("EoNADE", 85.10, cited=True),
            RefRow("DARN", 84.13, relation="≈", cited=True),
            RefRow("DBN", 84.55, relation="≈", cited=True),
            RefRow("DBM", 84.62, relation="≈", cited=True),
            RefRow("DRAW", 80.97, relation="≤", cited=True),
            RefRow("PixelCNN", 81.30),
            RefRow("Row LSTM", 80.54),
            RefRow("Diagonal BiLSTM, 1 layer, h=32", 80.75),
            RefRow("Diagonal BiLSTM, 7 layers, h=16", 79.20),
            RefRow("Gated PixelCNN (reimplementation)", 80.10, citation=PIXELVAE),
        ),
    ),
    RefTable(
        id="cifar10_test",
        title="CIFAR-10: test bits/dim",
        dataset="CIFAR-10",
        split="test",
        unit="bits/dim",
        citation=f"{PIXELRNN}, Table 5",
        rows=(
            RefRow("Uniform", 8.00, cited=True),
            RefRow("Multivariate Gaussian", 4.70, cited=True),
            RefRow("NICE", 4.48, cited=True),
            RefRow("Deep Diffusion", 4.20, cited=True),
            RefRow("Deep GMMs", 4.00, cited=True),
            RefRow("RIDE", 3.47, cited=True),
            RefRow("PixelCNN", 3.14, train=3.08),
            RefRow("Row LSTM", 3.07, train=3.00),
            RefRow("Diagonal BiLSTM", 3.00, train=2.93),
            RefRow("Gated PixelCNN", 3.03, train=2.90, citation=GATED_PIXELCNN_PAPER),
            RefRow("PixelCNN++", 2.92, citation=PIXELCNNPP),
            RefRow("PixelCNN++, class-conditional", 2.94, citation=PIXELCNNPP_COND),
            RefRow("PixelSNAIL", 2.85, citation=PIXELSNAIL),
        ),
    ),
    RefTable(
        id="pixelrnn_t2_residual_skip",
        title="Row LSTM, 12 layers: residual and skip connections (CIFAR-10 validation bits/dim)",
        dataset="CIFAR-10",
        split="validation",
        unit="bits/dim",
        citation=f"{PIXELRNN}, Table 2",
        rows=(
            RefRow("no residual, no skip", 3.22),
            RefRow("no residual, skip", 3.09),
            RefRow("residual, no skip", 3.07),
            RefRow("residual, skip", 3.06),
        ),
    ),
    RefTable(
        id="pixelrnn_t3_depth",
        title="Row LSTM depth (CIFAR-10 validation bits/dim)",
        dataset="CIFAR-10",
        split="validation",
        unit="bits/dim",
        citation=f"{PIXELRNN}, Table 3",
        rows=(
            # labels are the layer counts, as params.yaml's `reference.row` names them
            RefRow("1", 3.30, display="1 layer"),
            RefRow("2", 3.20, display="2 layers"),
            RefRow("3", 3.17, display="3 layers"),
            RefRow("6", 3.09, display="6 layers"),
            RefRow("9", 3.08, display="9 layers"),
            RefRow("12", 3.06, display="12 layers"),
        ),
    ),
    RefTable(
        id="imagenet_valid",
        title="ImageNet: validation bits/dim",
        dataset="ImageNet (downsampled)",
        split="validation",
        unit="bits/dim",
        citation=f"{PIXELRNN}, Table 6",
        rows=(
            RefRow("Row LSTM, 32x32", 3.86, train=3.83),
            RefRow("Row LSTM, 64x64", 3.63, train=3.57),
            RefRow("Gated PixelCNN, 64x64", 3.57, train=3.48, citation=GATED_PIXELCNN_PAPER),
        ),
    ),
)


def table(table_id: str) -> RefTable:
    """The reference table ``table_id``; a clear error lists the known ids."""
    for t in TABLES:
        if t.id == table_id:
            return t
    ids = ", ".join(t.id for t in TABLES)
    raise KeyError(f"unknown reference table {table_id!r}; known tables: {ids}")
