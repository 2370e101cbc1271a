"""Host-side helpers of ``fastencodec.kernels.nvrtc`` that run without a GPU."""

import torch

from fastencodec.kernels import nvrtc


def test_aligned_copies_only_misaligned_or_strided_tensors():
    """The CUDA C++ kernels' float4 loads need 16-byte aligned, contiguous inputs."""
    base = torch.arange(64, dtype=torch.float32)
    assert nvrtc.aligned(base) is base
    shifted = base[1:33]  # 4 bytes past an aligned start
    out = nvrtc.aligned(shifted)
    assert out.data_ptr() % 16 == 0 and torch.equal(out, shifted)
    strided = base.view(8, 8).t()
    assert nvrtc.aligned(strided).is_contiguous() and torch.equal(nvrtc.aligned(strided), strided)
    assert nvrtc.aligned(None) is None


def test_device_index_names_the_device():
    assert nvrtc.device_index(torch.device("cuda", 3)) == 3
