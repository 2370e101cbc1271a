"""The cluster LSTM kernels' weight layouts (``fastencodec.kernels.cluster_lstm``), on CPU: read the way
each kernel's threads read them, they give back ``W_hh @ h``. The kernels themselves run in
``tests/test_cluster_lstm.py`` (GPU)."""

import pytest
import torch

from fastencodec.kernels import cluster_lstm


@pytest.mark.parametrize("width", [512, 256, 128])
def test_float_layout_gives_back_the_products(width):
    """Block ``r``'s eighth ``e`` of row ``32q + u`` (gate ``q`` of unit ``32r + u``) summed over the eighths."""
    g = torch.Generator().manual_seed(0)
    w_hh = torch.randn(4 * width, width, generator=g)
    h = torch.randn(width, max(cluster_lstm.FLOAT_ITEMS), generator=g, dtype=torch.float64)
    layout = cluster_lstm.float_layout(w_hh).double()  # [rank, eighth, j, row]
    ranks, eighth = width // 32, width // 8
    assert layout.shape == (ranks, 8, eighth, 128)
    partial = torch.einsum("rejw,eji->reiw", layout, h.view(8, eighth, -1))  # the kernel's red[eighth][item][row]
    gates = partial.sum(1).view(ranks, -1, 4, 32).permute(1, 2, 0, 3).reshape(-1, 4 * width)  # item, q H + 32 r + u
    assert torch.allclose(gates, (w_hh.double() @ h).t(), atol=1e-12)


@pytest.mark.parametrize("width", [512, 128])
def test_fragments_give_back_the_products(width):
    """Warp ``w`` of block ``r`` as the tensor-core product's A operand: its m-tile's rows (units
    ``32r + 4 (w % 8) + u``, row ``4q + u`` of the tile gate ``q``) over its k-half."""
    g = torch.Generator().manual_seed(1)
    w_hh = torch.randn(4 * width, width, generator=g).half().float()
    frag = cluster_lstm.fragments(w_hh).double()  # [rank, warp, k, register, lane, 2]
    ranks = khalf = width // 32
    out = torch.zeros(4 * width, width, dtype=torch.float64)
    lane, reg, e = torch.meshgrid(torch.arange(32), torch.arange(4), torch.arange(2), indexing="ij")
    tile_row = lane // 4 + 8 * (reg % 2)  # the m16n8k16 A fragment's row and column of each element
    tile_col = 2 * (lane % 4) + 8 * (reg // 2) + e
    for r in range(ranks):
        for w in range(16):
            rows = (tile_row // 4) * width + 32 * r + 4 * (w % 8) + tile_row % 4
            for k in range(khalf):
                cols = 16 * ((w // 8) * khalf + k) + tile_col
                out[rows, cols] = frag[r, w, k].permute(1, 0, 2)
    assert torch.equal(out, w_hh.double())


def test_run_layer_refuses_the_other_kernels_weights():
    """Float16 fragments given to the float32 kernel (or a residual of another dtype) are refused before
    any launch, naming the dtypes."""
    gates = torch.zeros(2, 3, 4 * 128)
    w_hh = torch.zeros(4 * 128, 128)
    out = torch.empty(2, 3, 128)
    with pytest.raises(TypeError, match="float32 weights and residual, not weights torch.float16"):
        cluster_lstm.run_layer(gates, cluster_lstm.fragments(w_hh), out, None)
    with pytest.raises(TypeError, match="residual torch.float16"):
        cluster_lstm.run_layer(gates, cluster_lstm.float_layout(w_hh), out, out.half())


def test_run_layer_refuses_an_unknown_kernel():
    """Asking for a float32 kernel of another number of items a cluster names the ones there are."""
    gates = torch.zeros(2, 3, 4 * 128)
    out = torch.empty(2, 3, 128)
    with pytest.raises(ValueError, match=r"of 9 items a cluster \(there are \[8, 10\]\)"):
        cluster_lstm.run_layer(gates, cluster_lstm.float_layout(torch.zeros(4 * 128, 128)), out, None, items=9)


@pytest.mark.parametrize(
    ("batch", "at_once", "items"),
    [(1, 7, 8), (56, 7, 8), (57, 7, 10), (64, 7, 10), (70, 7, 10), (71, 7, 8), (256, 7, 10), (64, 8, 8), (64, 6, 8)],
)
def test_the_float32_kernel_follows_rounds_of_clusters(batch, at_once, items, monkeypatch):
    """The kernel :func:`~fastencodec.kernels.cluster_lstm.variant` takes for a batch when the device runs
    ``at_once`` clusters of either: the fewest rounds, each step costing its items plus 8 (64 items on
    an H200's 7 clusters: one round of 10-item clusters instead of two of 8-item ones; 71: two rounds
    either way, so 8; 64 on 6: 8 clusters of 8 in two rounds (32) against 7 of 10 in two (36))."""
    kernels = cluster_lstm.VARIANTS[torch.float32]
    monkeypatch.setattr(cluster_lstm, "_usable", lambda width, device, dtype: tuple((v, at_once) for v in kernels))
    assert cluster_lstm.variant(batch, 512, torch.device("cuda", 0), torch.float32).items == items
