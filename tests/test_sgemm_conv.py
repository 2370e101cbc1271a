"""The IEEE float32 convolution kernel (``fastencodec.kernels.sgemm_conv``, CUDA C++): against float64
torch with reflect and zero padding, strides, dilation, an ELU before and after, a residual; an item's
outputs bitwise the same alone, in a batch and in a ragged batch. Skipped without a GPU it runs on."""

import pytest
import torch
import torch.nn.functional as F

pytestmark = pytest.mark.gpu


def _fits(c_in: int, c_out: int) -> bool:
    if not torch.cuda.is_available():
        return False
    from fastencodec.kernels import sgemm_conv

    return sgemm_conv.fits(torch.device("cuda"), c_in, c_out)


def _reference(x, w, bias, left, right, stride, dil, reflect, elu_in, res, elu_out):
    """Float64 torch: ``x`` ``[B, T, c_in]`` channels-last, ``w`` ``[K, c_in, c_out]``."""
    h = x.double().transpose(1, 2)
    if elu_in:
        h = F.elu(h)
    h = F.pad(h, (left, right), mode="reflect" if reflect else "constant")
    y = F.conv1d(h, w.double().permute(2, 1, 0), bias.double(), stride=stride, dilation=dil).transpose(1, 2)
    if res is not None:
        y = y + res.double()
    return F.elu(y) if elu_out else y


CASES = [  # c_in, c_out, taps, stride, dilation, reflect, elu_in, residual, elu_out
    (64, 128, 8, 4, 1, True, True, False, False),
    (256, 128, 3, 1, 3, True, True, True, True),
    (128, 256, 10, 5, 1, False, False, False, True),
    (512, 2048, 1, 1, 1, False, False, False, False),
    (16, 256, 1, 1, 1, False, False, True, False),  # a single reduction chunk, two output blocks
]


@pytest.mark.parametrize(("c_in", "c_out", "taps", "stride", "dil", "reflect", "elu_in", "add", "elu_out"), CASES)
def test_matches_float64(c_in, c_out, taps, stride, dil, reflect, elu_in, add, elu_out):
    if not _fits(c_in, c_out):
        pytest.skip("needs a GPU the kernel runs on")
    from fastencodec.kernels import sgemm_conv

    g = torch.Generator().manual_seed(0)
    batch, t_in = 3, 517
    left = dil * (taps - 1) // 2
    right = dil * (taps - 1) - left
    t_out = (t_in + left + right - dil * (taps - 1) - 1) // stride + 1
    x = torch.randn(batch, t_in, c_in, generator=g)
    w = torch.randn(taps, c_in, c_out, generator=g) / (taps * c_in) ** 0.5
    bias = torch.randn(c_out, generator=g)
    res = torch.randn(batch, t_out, c_out, generator=g) if add else None
    y = torch.empty(batch, t_out, c_out, device="cuda")
    cuda = [t.cuda() for t in (x, w, bias)]
    sgemm_conv.conv1d(*cuda, y, left, stride, dil, reflect, elu_in, None if res is None else res.cuda(), elu_out)
    ref = _reference(x, w, bias, left, right, stride, dil, reflect, elu_in, res, elu_out)
    assert (y.cpu().double() - ref).abs().max() < 2e-5 * max(1.0, float(ref.abs().max()))


def test_items_alone_in_a_batch_and_ragged():
    """Each item alone equals itself in a batch of 5 (bitwise), and in a ragged batch (padded to the longest,
    ``lens`` the true lengths) up to its own output length; run to run too."""
    if not _fits(64, 128):
        pytest.skip("needs a GPU the kernel runs on")
    from fastencodec.kernels import sgemm_conv

    g = torch.Generator().manual_seed(1)
    taps, stride, left = 8, 4, 2
    lengths = [400, 257, 400, 333, 64]
    longest = max(lengths)
    x = torch.randn(len(lengths), longest, 64, generator=g).cuda()
    w = (torch.randn(taps, 64, 128, generator=g) / 20).cuda()
    bias = torch.randn(128, generator=g).cuda()

    def run(inputs, t_in, lens=None):
        t_out = (t_in + left + 2 - taps) // stride + 1
        y = torch.empty(inputs.shape[0], t_out, 128, device="cuda")
        sgemm_conv.conv1d(inputs, w, bias, y, left, stride, 1, True, True, lens=lens)
        return y

    together = run(x, longest)
    assert torch.equal(run(x, longest), together)
    ragged = run(x, longest, torch.tensor(lengths, dtype=torch.int32, device="cuda"))
    for i, n in enumerate(lengths):
        alone = run(x[i : i + 1, :n].contiguous(), n)
        assert torch.equal(alone, ragged[i : i + 1, : alone.shape[1]]), i
        if n == longest:
            assert torch.equal(alone, together[i : i + 1]), i


def test_refuses_other_dtypes():
    if not _fits(64, 128):
        pytest.skip("needs a GPU the kernel runs on")
    from fastencodec.kernels import sgemm_conv

    x = torch.zeros(1, 8, 64, device="cuda", dtype=torch.float16)
    w, bias = torch.zeros(1, 64, 128, device="cuda"), torch.zeros(128, device="cuda")
    with pytest.raises(TypeError, match="float32"):
        sgemm_conv.conv1d(x, w, bias, torch.empty(1, 8, 128, device="cuda"), 0)
