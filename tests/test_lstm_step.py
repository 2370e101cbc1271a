"""The CUDA LSTM kernel (two layers a launch) through ``CudaNetwork``, per LSTM product precision (``ieee`` in
``exact``, ``tf32``, float16 operands in ``fp16``): accuracy against float64 and each item bitwise
the same alone and in a batch, on CPU through Triton's interpreter (a subprocess: the variable
must be set before Triton is imported; on a GPU, test_kernels_gpu.py checks whole networks); and
the widths the kernel takes."""

import pytest
import torch

from tests import support

TOLERANCE = {"exact": 1e-5, "tf32": 1e-5, "fp16": 5e-3}
"""Largest error relative to the largest output (the interpreter computes TF32 products in float32)."""


def interpreted_check() -> None:
    from unittest import mock

    from fastencodec.kernels import cuda

    # the interpreter's dots are NumPy's, whose sums depend on the reduction chunk: one chunk for every
    # batch here, the units as chosen (on a GPU no tile changes results: test_kernels_gpu.py)
    chosen = cuda.lstm_tiles

    def one_chunk(kind: str, batch: int, width: int) -> cuda.LSTMTiles:
        return chosen(kind, batch, width)._replace(chunk=cuda.LSTM_DEFAULT.chunk)

    with mock.patch.object(cuda, "lstm_tiles", one_chunk):
        check_lstm_kernel()


def check_lstm_kernel() -> None:
    from fastencodec.kernels.cuda import CudaNetwork
    from fastencodec.kernels.plan import LSTMStep
    from fastencodec.nn.layers import LSTM

    width, batch, steps = 64, 19, 5
    torch.manual_seed(0)
    x = torch.randn(batch, steps, width)
    for layers in (1, 2, 3):  # a wave runs every layer: the codec's LSTMs have 2
        module = LSTM(width, layers).eval()
        exact = LSTM(width, layers).double().eval()
        exact.load_state_dict(module.state_dict())
        with torch.inference_mode():
            expected = exact(x.double().transpose(1, 2)).transpose(1, 2)
            for precision, tolerance in TOLERANCE.items():
                net = CudaNetwork([LSTMStep(module)], precision, "decoder")
                h = x.to(net.dtype)
                out = net._lstm(net.steps[0], h)
                error = float((out.double() - expected).abs().max() / expected.abs().max())
                assert error < tolerance, (layers, precision, error)
                for i in (0, batch - 2):
                    alone = net._lstm(net.steps[0], h[i : i + 1].contiguous())
                    assert torch.equal(alone, out[i : i + 1]), (layers, precision, i)


def test_kernels_take_only_lstm_widths_their_tiles_divide():
    """Models whose LSTM width the LSTM kernel's tiles do not divide run in torch instead."""
    pytest.importorskip("triton")
    from fastencodec.kernels import Networks
    from fastencodec.kernels.cuda import supports
    from fastencodec.kernels.plan import flatten
    from fastencodec.nn.config import META_24KHZ
    from fastencodec.nn.model import EncodecModel

    tiny = support.tiny_codec().model  # an LSTM 32 wide
    full = EncodecModel(META_24KHZ)  # 512 wide
    for part in ("encoder", "decoder"):
        assert not supports(flatten(getattr(tiny, part).layers))
        assert supports(flatten(getattr(full, part).layers))
    assert not Networks(tiny)._kernels_fit and Networks(full)._kernels_fit  # what picks the kernels on CUDA


@pytest.mark.slow
def test_lstm_kernel_under_the_triton_interpreter():
    pytest.importorskip("triton")
    support.run_under_triton_interpreter("tests.test_lstm_step")


@pytest.mark.slow
def test_lstm_kernel_compiles_for_hopper_in_every_product_precision():
    """The LSTM kernel compiles to sm_90 code with float32 operands in each Triton precision the
    modes use, and with float16 operands, with each of the tiles it is launched with (no GPU needed)."""
    triton = pytest.importorskip("triton")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from fastencodec.kernels import triton_ops as ops
    from fastencodec.kernels.cuda import LSTM_ITEMS, lstm_tiles

    pointers = ["gates_in", "w_ih", "w_hh", "bias", "h", "c", "out", "res"]
    for operand, prec in (("fp32", "ieee"), ("fp32", "tf32x3"), ("fp32", "tf32"), ("fp16", "ieee")):
        signature = dict.fromkeys(pointers, "*fp32") | {"wave": "i32", "steps": "i32", "batch": "i32", "plane": "i64"}
        signature |= dict.fromkeys(["w_ih", "w_hh", "h"], f"*{operand}")
        kind = "fp16" if operand == "fp16" else prec
        for tiles in {lstm_tiles(kind, batch, 512) for batch in (1, LSTM_ITEMS + 1)}:  # each tile a mode uses
            constants = {"L": 2, "H": 512, "PREC": prec, "BM": LSTM_ITEMS, "U": tiles.units, "BK": tiles.chunk}
            source = ASTSource(ops.lstm_wave_kernel, signature | dict.fromkeys(constants, "constexpr"), constants)
            options = {"num_warps": 4, "num_stages": tiles.stages, **ops.COMPILE}
            ptx = triton.compile(source, target=GPUTarget("cuda", 90, 32), options=options).asm["ptx"]
            tensor_cores = operand == "fp16" or prec != "ieee"  # IEEE float32 products run on FMA units
            assert ("mma" in ptx) == tensor_cores, (operand, prec, tiles)
