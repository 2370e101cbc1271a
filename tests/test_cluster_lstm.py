"""The cluster LSTM kernels (``fastencodec.kernels.cluster_lstm``, CUDA C++ on Hopper GPUs), float16
and IEEE float32: one layer against float64, an item's outputs bitwise the same alone and in any
batch, and the networks' LSTMs through them (``fp16`` and ``exact``). Skipped without a GPU they run
on; run on a GPU machine."""

import pytest
import torch

from fastencodec.kernels import triton_available

pytestmark = pytest.mark.gpu

DTYPES = [torch.float16, torch.float32]
KERNELS = [(torch.float16, 16), (torch.float32, 8), (torch.float32, 10)]
"""Each kernel: its dtype and items a cluster."""
TOLERANCE = {torch.float16: 4e-3, torch.float32: 2e-5}
"""Largest difference from float64 of an output in (-1, 1): float16 rounds at 2^-11; float32's
sums of 512 products (and the cell's 60 steps) stay far below 2e-5."""


def _fits(width: int, dtype: torch.dtype = torch.float16) -> bool:
    if not (torch.cuda.is_available() and triton_available()):
        return False
    from fastencodec.kernels import cluster_lstm

    return cluster_lstm.fits(width, torch.device("cuda"), dtype)


def _layer(width: int, batch: int, steps: int, dtype: torch.dtype, seed: int = 0):
    """Seeded inputs of one layer: gates ``[batch, steps, 4H]`` float32, ``W_hh`` ``[4H, H]`` (values of
    ``dtype``), a residual ``[batch, steps, H]`` of ``dtype``."""
    g = torch.Generator().manual_seed(seed)
    gates = torch.randn(batch, steps, 4 * width, generator=g) * 0.7
    w_hh = (torch.randn(4 * width, width, generator=g) / width**0.5).to(dtype).float()
    res = torch.randn(batch, steps, width, generator=g).to(dtype)
    return gates, w_hh, res


def _float64(gates: torch.Tensor, w_hh: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The layer in float64 from a zero state, the hidden state rounded to ``dtype`` between steps as the
    kernel's is: ``[batch, steps, H]``."""
    batch, steps, four = gates.shape
    width = four // 4
    h = torch.zeros(batch, width, dtype=torch.float64)
    c = torch.zeros_like(h)
    outs = []
    for t in range(steps):
        pre = gates[:, t].double() + h.to(dtype).double() @ w_hh.double().t()
        i, f, gg, o = pre.split(width, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(gg)
        h = torch.sigmoid(o) * torch.tanh(c)
        outs.append(h)
    return torch.stack(outs, 1)


def _run(gates, w_hh, res, dtype, items=None):
    from fastencodec.kernels import cluster_lstm

    layout = cluster_lstm.fragments if dtype == torch.float16 else cluster_lstm.float_layout
    out = torch.empty(gates.shape[0], gates.shape[1], gates.shape[2] // 4, dtype=dtype, device="cuda")
    residual = None if res is None else res.cuda()
    cluster_lstm.run_layer(gates.cuda(), layout(w_hh.cuda()), out, residual, items)
    return out.cpu()


@pytest.mark.parametrize(("dtype", "items"), KERNELS)
@pytest.mark.parametrize("width", [512, 256, 128])
@pytest.mark.parametrize(("batch", "steps"), [(3, 60), (13, 2), (29, 1)])
def test_cluster_layer_matches_float64(width, batch, steps, dtype, items):
    """Clusters partly empty and full (float16: at most 8 items and 9-15, the second n-tile partly
    empty; float32: 8 or 10 a cluster); one and two steps."""
    if not _fits(width, dtype):
        pytest.skip("needs a GPU the cluster LSTM runs on")
    gates, w_hh, res = _layer(width, batch, steps, dtype)
    with torch.inference_mode():
        ref = _float64(gates, w_hh, dtype)
        out = _run(gates, w_hh, None, dtype, items).double()
        assert (out - ref).abs().max() < TOLERANCE[dtype]
        with_res = _run(gates, w_hh, res, dtype, items).double()
        assert (with_res - (ref + res.double())).abs().max() < 2 * TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("width", "batch"), [(512, 37), (128, 32)])
def test_cluster_layer_ignores_the_batch(dtype, width, batch):
    """Items 0, 5 and the last of a batch of 37 (several clusters, the last partly empty) or of 32 (full
    clusters of both kernels) alone and in the batch."""
    if not _fits(width, dtype):
        pytest.skip("needs a GPU the cluster LSTM runs on")
    gates, w_hh, res = _layer(width, batch, 40, dtype, seed=1)
    with torch.inference_mode():
        together = _run(gates, w_hh, res, dtype)
        assert torch.isfinite(together.float()).all()
        for item in (0, 5, batch - 1):
            alone = _run(gates[item : item + 1].contiguous(), w_hh, res[item : item + 1].contiguous(), dtype)
            assert torch.equal(alone, together[item : item + 1]), item
        assert torch.equal(_run(gates, w_hh, res, dtype), together)  # and run to run


@pytest.mark.parametrize("width", [512, 256, 128])
def test_float32_kernels_agree_bitwise(width):
    """Both float32 kernels (8 and 10 items a cluster) give every item's outputs bitwise, so the choice by
    batch (:func:`~fastencodec.kernels.cluster_lstm.variant`) keeps batch invariance: items alone (one
    cluster) equal the same items in a batch of 64 (where an H200 takes the 10-item kernel)."""
    if not _fits(width, torch.float32):
        pytest.skip("needs a GPU the cluster LSTM runs on")
    gates, w_hh, res = _layer(width, 64, 30, torch.float32, seed=2)
    with torch.inference_mode():
        eight, ten, chosen = (_run(gates, w_hh, res, torch.float32, items) for items in (8, 10, None))
        assert torch.equal(eight, ten)
        assert torch.equal(chosen, eight)
        for item in (0, 9, 63):
            alone = _run(gates[item : item + 1].contiguous(), w_hh, res[item : item + 1].contiguous(), torch.float32)
            assert torch.equal(alone, chosen[item : item + 1]), item


@pytest.mark.parametrize(
    ("precision", "dtype", "tolerance"), [("fp16", torch.float16, 2e-2), ("exact", torch.float32, 1e-4)]
)
def test_networks_take_the_cluster_lstm(precision, dtype, tolerance, monkeypatch):
    """The ``fp16`` and ``exact`` CUDA networks of width-512 LSTMs run them here, and the Triton kernel
    they replace (elsewhere) is as accurate (batch invariance: ``tests/test_kernels_gpu.py``)."""
    if not _fits(512, dtype):
        pytest.skip("needs a GPU the cluster LSTM runs on")
    from fastencodec.kernels import cluster_lstm, cuda
    from fastencodec.kernels.plan import LSTMStep
    from fastencodec.nn.layers import LSTM

    torch.manual_seed(0)
    module = LSTM(512, 2).cuda().eval()
    net = cuda.CudaNetwork([LSTMStep(module)], precision, "encoder")
    x = torch.randn(2, 30, 512, device="cuda").to(dtype)
    calls = []
    real = cluster_lstm.run_layer
    cluster_lstm.run_layer = lambda *a: calls.append(1) or real(*a)
    try:
        with torch.inference_mode():
            y = net._lstm(net.steps[0], x)
    finally:
        cluster_lstm.run_layer = real
    assert len(calls) == 2
    monkeypatch.setattr(cluster_lstm, "fits", lambda width, device, dtype: False)
    with torch.inference_mode():
        y_triton = net._lstm(net.steps[0], x)
        ref = module.lstm.double()(x.double().transpose(0, 1))[0].transpose(0, 1) + x.double()
    assert (y.double() - ref).abs().max() < tolerance
    assert (y_triton.double() - ref).abs().max() < tolerance


@pytest.mark.parametrize(("dtype", "items"), KERNELS)
def test_the_device_schedules_whole_clusters(dtype, items):
    """The driver's count of clusters running at once: at least one (what :func:`fits` asks), at most
    as many as the multiprocessors hold (16 a cluster at width 512, one block a multiprocessor)."""
    if not _fits(512, dtype):
        pytest.skip("needs a GPU the cluster LSTM runs on")
    from fastencodec.kernels import cluster_lstm

    device = torch.cuda.current_device()
    count = cluster_lstm.concurrent_clusters(512, device, dtype, items)
    assert 1 <= count <= torch.cuda.get_device_properties(device).multi_processor_count // 16
