"""The persistent batch-1 LSTM kernel (CUDA with Triton only) against PyTorch's cuDNN LSTM."""

import numpy as np
import pytest
import torch

from fastencodec.bench import random_codec
from fastencodec.kernels import fused_lstm
from fastencodec.nn.layers import GraphedLSTM

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available() or fused_lstm._kernel() is None, reason="needs a CUDA device and Triton"
    ),
]


@pytest.mark.parametrize("steps", [1, 2, 7, 750])
@pytest.mark.parametrize("with_state", [False, True])
def test_kernel_matches_cudnn(steps, with_state):
    torch.manual_seed(steps)
    lstm = GraphedLSTM(512, 512, 2).cuda().eval().requires_grad_(False)
    x = torch.randn(steps, 1, 512, device="cuda")
    hx = (torch.randn(2, 1, 512, device="cuda"), torch.randn(2, 1, 512, device="cuda")) if with_state else None
    with torch.inference_mode():
        assert fused_lstm.supports(lstm, x)
        y, (h, c) = lstm(x, hx)
        with torch.backends.cudnn.flags(allow_tf32=False):
            y_ref, (h_ref, c_ref) = torch.nn.LSTM.forward(lstm, x, hx)
    for ours, ref in ((y, y_ref), (h, h_ref), (c, c_ref)):
        assert ours.shape == ref.shape
        torch.testing.assert_close(ours, ref, rtol=0, atol=2e-6)


def test_other_inputs_take_cudnn():
    lstm = GraphedLSTM(512, 512, 2).cuda().eval()
    with torch.inference_mode():
        assert not fused_lstm.supports(lstm, torch.randn(5, 2, 512, device="cuda"))  # batch 2
        assert not fused_lstm.supports(lstm, torch.randn(0, 1, 512, device="cuda"))  # no steps
        assert not fused_lstm.supports(lstm, torch.randn(5, 1, 512, device="cuda", dtype=torch.bfloat16))
    assert not fused_lstm.supports(lstm, torch.randn(5, 1, 512, device="cuda"))  # autograd on


def test_codec_on_cuda_matches_cpu():
    """Encode and decode through the public API on CUDA (batch 1 takes the kernel) against the CPU."""
    gpu, cpu = random_codec("cuda"), random_codec("cpu")
    audio = (0.1 * np.random.default_rng(0).standard_normal((1, 1, 48_000))).astype(np.float32)
    emb_gpu = torch.as_tensor(gpu.encode_continuous(torch.from_numpy(audio).cuda())).cpu()
    emb_cpu = torch.as_tensor(cpu.encode_continuous(audio))
    torch.testing.assert_close(emb_gpu, emb_cpu, rtol=0, atol=1e-4 * emb_cpu.abs().max().item())
    codes = cpu.encode(audio).codes
    out_gpu = torch.as_tensor(gpu.decode(torch.as_tensor(codes).cuda())).cpu()
    out_cpu = torch.as_tensor(cpu.decode(codes))
    torch.testing.assert_close(out_gpu, out_cpu, rtol=0, atol=1e-4 * out_cpu.abs().max().item())
