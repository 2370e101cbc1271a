"""The cluster LSTM kernel (``fastencodec.kernels.cluster_lstm``, CUDA C++ on Hopper GPUs): one
layer against float64, an item's outputs bitwise the same alone and in any batch, and the ``fp16``
networks' LSTM through it. Skipped without a GPU it runs on; run on a GPU machine."""

import pytest
import torch

from fastencodec.kernels import triton_available

pytestmark = pytest.mark.gpu


def _fits(width: int) -> bool:
    if not (torch.cuda.is_available() and triton_available()):
        return False
    from fastencodec.kernels import cluster_lstm

    return cluster_lstm.fits(width, torch.device("cuda"))


def _layer(width: int, batch: int, steps: int, seed: int = 0):
    """Seeded inputs of one layer: gates ``[batch, steps, 4H]`` float32, ``W_hh`` ``[4H, H]`` (values of
    float16), a residual ``[batch, steps, H]`` float16."""
    g = torch.Generator().manual_seed(seed)
    gates = torch.randn(batch, steps, 4 * width, generator=g) * 0.7
    w_hh = (torch.randn(4 * width, width, generator=g) / width**0.5).half().float()
    res = torch.randn(batch, steps, width, generator=g).half()
    return gates, w_hh, res


def _float64(gates: torch.Tensor, w_hh: torch.Tensor) -> torch.Tensor:
    """The layer in float64 from a zero state, the hidden state rounded to float16 between steps as the
    kernel's is: ``[batch, steps, H]``."""
    batch, steps, four = gates.shape
    width = four // 4
    h = torch.zeros(batch, width, dtype=torch.float64)
    c = torch.zeros_like(h)
    outs = []
    for t in range(steps):
        pre = gates[:, t].double() + h.half().double() @ w_hh.double().t()
        i, f, gg, o = pre.split(width, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(gg)
        h = torch.sigmoid(o) * torch.tanh(c)
        outs.append(h)
    return torch.stack(outs, 1)


def _run(gates, w_hh, res):
    from fastencodec.kernels import cluster_lstm

    out = torch.empty(gates.shape[0], gates.shape[1], gates.shape[2] // 4, dtype=torch.float16, device="cuda")
    residual = None if res is None else res.cuda()
    cluster_lstm.run_layer(gates.cuda(), cluster_lstm.fragments(w_hh.cuda()), out, residual)
    return out.cpu()


@pytest.mark.parametrize("width", [512, 256, 128])
@pytest.mark.parametrize(("batch", "steps"), [(3, 60), (13, 2), (29, 1)])
def test_cluster_layer_matches_float64(width, batch, steps):
    """Clusters of at most 8 items and of 9-15 (the second n-tile partly empty); one and two steps."""
    if not _fits(width):
        pytest.skip("needs a GPU the cluster LSTM runs on")
    gates, w_hh, res = _layer(width, batch, steps)
    with torch.inference_mode():
        ref = _float64(gates, w_hh)
        out = _run(gates, w_hh, None).double()
        assert (out - ref).abs().max() < 4e-3  # float16 outputs of values in (-1, 1): 2^-11 a rounding
        with_res = _run(gates, w_hh, res).double()
        assert (with_res - (ref + res.double())).abs().max() < 8e-3


def test_cluster_layer_ignores_the_batch():
    """Items 0, 5 and 36 of a batch of 37 (three clusters, the last partly empty) alone and in the batch."""
    if not _fits(512):
        pytest.skip("needs a GPU the cluster LSTM runs on")
    gates, w_hh, res = _layer(512, 37, 40, seed=1)
    with torch.inference_mode():
        batch = _run(gates, w_hh, res)
        assert torch.isfinite(batch.float()).all()
        for item in (0, 5, 36):
            alone = _run(gates[item : item + 1].contiguous(), w_hh, res[item : item + 1].contiguous())
            assert torch.equal(alone, batch[item : item + 1]), item
        assert torch.equal(_run(gates, w_hh, res), batch)  # and run to run


def test_fp16_networks_take_the_cluster_lstm():
    """The ``fp16`` CUDA networks of width-512 LSTMs run them here (and their accuracy and batch
    invariance are those of ``tests/test_kernels_gpu.py``)."""
    if not _fits(512):
        pytest.skip("needs a GPU the cluster LSTM runs on")
    from fastencodec.kernels import cluster_lstm, cuda
    from fastencodec.kernels.plan import LSTMStep
    from fastencodec.nn.layers import LSTM

    torch.manual_seed(0)
    module = LSTM(512, 2).cuda().eval()
    net = cuda.CudaNetwork([LSTMStep(module)], "fp16", "encoder")
    x = torch.randn(2, 30, 512, device="cuda").half()
    calls = []
    real = cluster_lstm.run_layer
    cluster_lstm.run_layer = lambda *a: calls.append(1) or real(*a)
    try:
        with torch.inference_mode():
            y = net._lstm(net.steps[0], x)
    finally:
        cluster_lstm.run_layer = real
    assert len(calls) == 2
    with torch.inference_mode():
        ref = module.lstm.double()(x.double().transpose(0, 1))[0].transpose(0, 1) + x.double()
    assert (y.double() - ref).abs().max() < 2e-2
