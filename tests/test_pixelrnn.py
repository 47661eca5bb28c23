"""Row LSTM, Diagonal BiLSTM and multi-scale PixelRNN: causality by autograd, receptive fields, loop
equivalence with slow per-pixel references written here independently, exact normalisation."""

from __future__ import annotations

import pytest
import torch

from pixelzoo.models import build_model, generation_order
from pixelzoo.models.diagonal_bilstm import DiagonalBiLSTMLayer, DiagonalLSTM, diagonal_layout
from pixelzoo.models.row_lstm import RowLSTMLayer
from pixelzoo.nn.masks import causal_mask

TOL = (
    1e-14  # relative to the largest gradient; float64 rounding noise is ~1e-16, real far-away effects ~1e-12
)
TINY = {"hidden": 6, "layers": 2, "head_hidden": 24}  # 8 head maps per colour group
MODELS = {
    "row_lstm": ("row_lstm", TINY),
    "diagonal_bilstm": ("diagonal_bilstm", TINY),
    "multiscale_diag": (
        "multiscale_pixelrnn",
        {**TINY, "layers": 1, "base": "diagonal_bilstm", "cond_channels": 4},
    ),
    "multiscale_row": ("multiscale_pixelrnn", {**TINY, "layers": 1, "base": "row_lstm", "cond_channels": 4}),
}


def make(key: str, channels: int, levels: int, height: int, width: int, **extra) -> torch.nn.Module:
    name, args = MODELS[key]
    torch.manual_seed(0)
    model = build_model(
        name, channels=channels, levels=levels, height=height, width=width, **{**args, **extra}
    )
    return model.double()


def jacobian(model: torch.nn.Module, xs: torch.Tensor) -> torch.Tensor:
    """d(random projection of the K logits of sub-pixel o of image 0)/d input, for every o: (CHW)×B×C×H×W."""
    xs = xs.clone().requires_grad_(True)
    logits = model.forward_scaled(xs)
    w = torch.randn(logits.shape[1], dtype=logits.dtype)
    out = torch.einsum("bkchw,k->bchw", logits, w)[0].reshape(-1)
    (jac,) = torch.autograd.grad(out, xs, torch.eye(out.numel(), dtype=out.dtype), is_grads_batched=True)
    return jac


def audit(
    model: torch.nn.Module, channels: int, height: int, width: int, batch: int = 2, draws: int = 3
) -> torch.Tensor:
    """Assert causality w.r.t. the model's generation order and no cross-batch flow at ``draws`` random
    inputs; return 'seen' (output × input sub-pixel), the union over the draws (a ReLU that happens to
    be off at one input hides a dependence there, not in the model)."""
    n = channels * height * width
    order = generation_order(model, channels, height, width)
    assert sorted(order.tolist()) == list(range(n))
    rank = torch.empty(n, dtype=torch.long)
    rank[order] = torch.arange(n)
    allowed = rank[None, :] < rank[:, None]  # [output, input]: the input comes strictly earlier
    seen = torch.zeros(n, n, dtype=torch.bool)
    torch.manual_seed(1)
    for _ in range(draws):
        xs = torch.rand(batch, channels, height, width, dtype=torch.float64) * 2 - 1
        jac = jacobian(model, xs).abs()
        scale = float(jac.max())
        assert scale > 0
        own = jac[:, 0].reshape(n, n)
        assert float(own[~allowed].max()) <= TOL * scale, "an output depends on its own or a later sub-pixel"
        if batch > 1:
            assert float(jac[:, 1:].max()) <= TOL * scale, "an output of image 0 depends on another image"
        seen |= own > TOL * scale
    return seen


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("key", list(MODELS))
def test_causal_by_autograd(key: str, channels: int) -> None:
    height, width = (5, 6) if key.startswith("multiscale") else (4, 6)  # odd: sub-lattice of ceil(5/2) rows
    model = make(key, channels, levels=4, height=height, width=width)
    n = channels * height * width
    seen = torch.zeros(n, n, dtype=torch.bool)
    for weights in ("default init", "random"):
        if weights == "random":  # larger weights: every ReLU group turns on for some input
            randomize(model)
        for train in (True, False):
            model.train(train)
            seen |= audit(model, channels, height, width)
    assert seen.any(dim=1).sum() == seen.shape[0] - 1  # only the very first sub-pixel sees nothing


def test_audit_catches_gates_without_per_gate_groups() -> None:
    """Negative control: the usual bug (one mask over all 4h gate maps) must be detected as a leak."""
    model = make("row_lstm", 3, levels=4, height=3, width=4)
    for blk in model.blocks:
        conv = blk.layer.input_to_state
        conv.mask = causal_mask("B", conv.in_channels, conv.out_channels, conv.kernel_size, 3)
    with pytest.raises(AssertionError, match="own or a later"):
        audit(model, 3, 3, 4)


def test_row_lstm_triangular_context() -> None:
    """Paper §3.1: row i-r of the context spans columns j-3-n-r .. j+2+r (7×7 mask A, n layers, k=3)."""
    height, width, n_layers = 8, 12, 2
    model = make("row_lstm", 1, levels=4, height=height, width=width, layers=n_layers)
    seen = audit(model, 1, height, width, batch=1)
    pi, pj = 7, 5
    got = seen[pi * width + pj].view(height, width)
    expected = torch.zeros(height, width, dtype=torch.bool)
    expected[pi, max(0, pj - 3 - n_layers) : pj] = True  # same row: only the left part
    for r in range(1, pi + 1):
        expected[pi - r, max(0, pj - 3 - n_layers - r) : pj + 3 + r] = True
    assert torch.equal(got, expected)
    assert not got[pi - 1, pj + 4 :].any()  # the blind spot to the upper right


def test_diagonal_bilstm_full_context_16x16() -> None:
    """Paper §3.2: every earlier pixel is in the context (no blind spot), for every pixel."""
    model = make("diagonal_bilstm", 1, levels=4, height=16, width=16, hidden=4, layers=1, head_hidden=8)
    seen = audit(model, 1, 16, 16, batch=1)
    assert torch.equal(seen, torch.ones(256, 256, dtype=torch.bool).tril(-1))


def test_diagonal_bilstm_paper_literal_has_one_pixel_blind_spot() -> None:
    """Without the image read by the first right-to-left direction, (i, j<W-4) misses (i-1, W-1)."""
    height, width = 5, 10
    model = make(
        "diagonal_bilstm", 1, 4, height, width, hidden=4, layers=2, head_hidden=8, close_blind_spot=False
    )
    randomize(model)
    seen = audit(model, 1, height, width, batch=1)
    missing = torch.ones(height * width, height * width, dtype=torch.bool).tril(-1) & ~seen
    expected = {
        (i * width + j, (i - 1) * width + width - 1) for i in range(1, height) for j in range(width - 4)
    }
    assert {tuple(p) for p in missing.nonzero().tolist()} == expected


# --- loop equivalence with slow per-pixel references -------------------------------------------------


def reference_gate_mask(in_channels: int, hidden: int, groups: int) -> torch.Tensor:
    """Mask B at the current pixel for the 4 gates, each gate grouped like the hidden state (4h × in)."""
    g_in = torch.arange(in_channels) * groups // in_channels
    g_out = (torch.arange(hidden) * groups // hidden).repeat(4)
    return (g_in[None, :] <= g_out[:, None]).double()


def reference_cell(z: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    h = z.shape[0] // 4
    o, f, i, g = (
        torch.sigmoid(z[:h]),
        torch.sigmoid(z[h : 2 * h]),
        torch.sigmoid(z[2 * h : 3 * h]),
        z[3 * h :],
    )
    c = f * c + i * torch.tanh(g)
    return o * torch.tanh(c), c


def randomize(module: torch.nn.Module) -> None:
    torch.manual_seed(2)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.5)


def row_lstm_reference(layer: RowLSTMLayer, x: torch.Tensor, groups: int) -> torch.Tensor:
    w_is, b_is = layer.input_to_state.weight[:, :, 0], layer.input_to_state.bias  # 4h × in × 3
    centre = w_is[:, :, 1] * reference_gate_mask(x.shape[1], layer.hidden, groups)
    w_ss, h0, c0 = layer.scan.state_conv.weight, layer.scan.h0, layer.scan.c0  # 4h × h × 3
    bsz, _, height, width = x.shape
    out = torch.zeros(bsz, layer.hidden, height, width, dtype=x.dtype)
    for b in range(bsz):
        h_prev, c_prev = [h0] * width, [c0] * width
        for i in range(height):
            h_row, c_row = [], []
            for j in range(width):
                z = b_is + centre @ x[b, :, i, j]  # the right tap (j+1) is the future: never read
                if j > 0:
                    z = z + w_is[:, :, 0] @ x[b, :, i, j - 1]
                for d in (-1, 0, 1):
                    z = z + w_ss[:, :, d + 1] @ (h_prev[j + d] if 0 <= j + d < width else h0)
                h, c = reference_cell(z, c_prev[j])
                h_row.append(h)
                c_row.append(c)
                out[b, :, i, j] = h
            h_prev, c_prev = h_row, c_row
    return out


def diagonal_reference(
    direction: DiagonalLSTM, x: torch.Tensor, groups: int, reverse: bool, extra: torch.Tensor | None = None
) -> torch.Tensor:
    """h(i,j) = cell(is(i,j) + extra(i,j) + W0 h(i-1,j) + W1 h(i,j∓1), c(i,j∓1)); outside: (h0, c0)."""
    hidden = direction.scan.hidden
    w_is = direction.input_to_state.weight[:, :, 0, 0] * reference_gate_mask(x.shape[1], hidden, groups)
    b_is = direction.input_to_state.bias
    w_ss, h0, c0 = direction.scan.state_conv.weight, direction.scan.h0, direction.scan.c0  # 4h × h × 2
    bsz, _, height, width = x.shape
    out = torch.zeros(bsz, hidden, height, width, dtype=x.dtype)
    cols = range(width - 1, -1, -1) if reverse else range(width)
    for b in range(bsz):
        hs: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}
        for i in range(height):
            for j in cols:
                side = (i, j + 1 if reverse else j - 1)
                h_side, c_side = hs.get(side, (h0, c0))
                h_above = hs[(i - 1, j)][0] if i > 0 else h0
                z = b_is + w_is @ x[b, :, i, j] + w_ss[:, :, 0] @ h_above + w_ss[:, :, 1] @ h_side
                if extra is not None:
                    z = z + extra[b, :, i, j]
                hs[(i, j)] = reference_cell(z, c_side)
                out[b, :, i, j] = hs[(i, j)][0]
    return out


@pytest.mark.parametrize("channels", [1, 3])
def test_row_lstm_layer_matches_per_pixel_reference(channels: int) -> None:
    layer = RowLSTMLayer(12, 6, channels).double()
    randomize(layer)
    x = torch.randn(2, 12, 4, 5, dtype=torch.float64)
    torch.testing.assert_close(layer(x), row_lstm_reference(layer, x, channels), atol=1e-9, rtol=0)


@pytest.mark.parametrize("reads_image", [False, True])
@pytest.mark.parametrize("channels", [1, 3])
def test_diagonal_bilstm_layer_matches_per_pixel_reference(channels: int, reads_image: bool) -> None:
    layer = DiagonalBiLSTMLayer(12, 6, channels, reads_image=reads_image).double()
    randomize(layer)
    x = torch.randn(2, 12, 4, 5, dtype=torch.float64)
    image = torch.randn(2, channels, 4, 5, dtype=torch.float64)
    extra = (
        torch.einsum("gc,bchw->bghw", layer.image_to_state.weight[:, :, 0, 0], image) if reads_image else None
    )
    left = diagonal_reference(layer.forward_dir, x, channels, reverse=False)
    right = diagonal_reference(layer.backward_dir, x, channels, reverse=True, extra=extra)
    top = layer.backward_dir.scan.h0.view(1, -1, 1, 1).expand(2, -1, 1, 5)
    expected = left + torch.cat([top, right[:, :, :-1]], dim=2)  # right-to-left map shifted down one row
    torch.testing.assert_close(layer(x, image=image), expected, atol=1e-9, rtol=0)


# --- skew, likelihood, interface -----------------------------------------------------------------------


@pytest.mark.parametrize("height,width", [(3, 4), (4, 3), (5, 5), (1, 6)])
def test_diagonal_layout_is_the_skew(height: int, width: int) -> None:
    """Step t of the Diagonal BiLSTM scan is column t of the skewed map (pixels (r, t - r)), rows in
    order, without the map's padding cells; the two permutations invert each other."""
    layout, to_cells, to_raster = diagonal_layout(height, width, torch.device("cpu"))
    assert layout.n == height and len(layout.spans) == width + height - 1 and layout.cells == height * width
    cells = iter(to_cells.tolist())
    for t, (lo, hi) in enumerate(layout.spans):
        expected = [r * width + t - r for r in range(height) if 0 <= t - r < width]
        assert list(range(lo, hi)) == [p // width for p in expected]
        assert [next(cells) for _ in range(lo, hi)] == expected
    assert torch.equal(to_cells[to_raster], torch.arange(height * width))


@pytest.mark.parametrize(
    "key,channels,levels,height,width",
    [
        ("row_lstm", 1, 3, 2, 4),
        ("diagonal_bilstm", 1, 3, 2, 4),
        ("multiscale_diag", 1, 3, 2, 4),
        ("row_lstm", 3, 2, 2, 2),
        ("diagonal_bilstm", 3, 2, 2, 2),
        ("multiscale_row", 3, 2, 2, 2),
        ("multiscale_row", 1, 2, 3, 3),
    ],
)
def test_probabilities_of_all_images_sum_to_one(
    key: str, channels: int, levels: int, height: int, width: int
) -> None:
    """Summed categorical log-likelihoods over every possible image: a proper distribution sums to 1."""
    model = make(key, channels, levels, height, width).eval()
    n = channels * height * width
    grid = torch.cartesian_prod(*[torch.arange(levels)] * n).view(-1, channels, height, width)
    with torch.no_grad():
        logp = model(grid).log_softmax(dim=1).gather(1, grid[:, None]).sum(dim=(1, 2, 3, 4))
    assert grid.shape[0] == levels**n
    assert abs(float(logp.exp().sum()) - 1.0) < 1e-9


def test_multiscale_generation_order_puts_sub_lattice_first() -> None:
    model = make("multiscale_diag", 3, levels=4, height=4, width=4)
    order = model.generation_order(3, 4, 4)
    pix, ch = order % 16, order // 16
    first = pix[: 4 * 3]
    assert set(first.tolist()) == {0, 2, 8, 10}  # (0,0), (0,2), (2,0), (2,2)
    assert ch[:6].tolist() == [0, 1, 2, 0, 1, 2]  # R, G, B within a pixel
    assert pix[12:].view(-1, 3)[:, 0].tolist() == [1, 3, 4, 5, 6, 7, 9, 11, 12, 13, 14, 15]


def test_class_conditioning_and_input_errors() -> None:
    model = make("row_lstm", 1, levels=4, height=3, width=3, n_classes=5).float()
    x = torch.randint(0, 4, (2, 1, 3, 3))
    a, b = model(x, torch.tensor([0, 0])), model(x, torch.tensor([0, 1]))
    assert torch.equal(a[0], b[0]) and not torch.equal(a[1], b[1])
    with pytest.raises(ValueError, match="pass y"):
        model(x)
    with pytest.raises(ValueError, match=r"levels must lie in \[0, 4\)"):
        model(x + 4)
    with pytest.raises(ValueError, match="scale must be in"):
        make("multiscale_diag", 1, levels=4, height=5, width=4, scale=1)
