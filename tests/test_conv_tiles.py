"""Tiles of the CUDA convolution kernels (``fastencodec.kernels.conv_tiles``): every layer of the
three models gets tiles the kernels take, and the kernels give the layer's convolution with any
tiles (tensor-core or FMA products, or the summed products of layers of one or two channels), on CPU
through Triton's interpreter (a subprocess: the variable must be set before Triton is imported)."""

import copy
import dataclasses

import pytest
import torch

from fastencodec.kernels.conv_tiles import OPERANDS, TUNED, TUNED_ON, ConvShape, ConvTiles, conv_tiles, default_tiles
from fastencodec.kernels.plan import (
    ConvStep,
    ConvTransposeStep,
    LSTMStep,
    activated_outputs,
    flatten,
    fusable_shortcut,
)
from fastencodec.nn.config import META_24KHZ, META_48KHZ, EncodecConfig
from fastencodec.nn.layers import Conv1d, ConvTranspose1d, ResnetBlock
from fastencodec.nn.model import EncodecModel
from tests import support


def layer_shapes(cfg: EncodecConfig) -> set[ConvShape]:
    """The convolutions of a model's networks, the LSTMs' input projections among them."""
    model = EncodecModel(cfg)
    shapes = set()
    for part in ("encoder", "decoder"):
        shortcut = None
        for step in flatten(getattr(model, part).layers):
            if isinstance(step, LSTMStep):
                shapes.add(ConvShape.lstm_projection(step.module.lstm.hidden_size))
                continue
            if isinstance(step, ConvStep) and step.keep:
                shortcut = step.shortcut
            if isinstance(step, ConvStep) and step.add and shortcut is not None:
                if fusable_shortcut(step.module, shortcut):
                    shapes.add(ConvShape.of(step.module.conv, shortcut.conv))
                    continue
                shapes.add(ConvShape.of(shortcut.conv))
            shapes.add(ConvShape.of(step.module.conv))
    return shapes


def valid(tile: ConvTiles) -> bool:
    """Powers of two: at least 16 rows and output channels, one or at least 16 input channels; 1 to
    8 warps, 1 to 5 stages."""
    sides = (tile.rows, tile.outputs, tile.inputs)
    if any(n & (n - 1) for n in sides) or tile.warps not in (1, 2, 4, 8) or not 1 <= tile.stages <= 5:
        return False
    return tile.rows >= 16 and tile.outputs >= 16 and (tile.inputs == 1 or tile.inputs >= 16)


@pytest.mark.parametrize(
    "cfg", [META_24KHZ, META_48KHZ, EncodecConfig.from_hf(support.HF_32KHZ)], ids=["24k", "48k", "32k"]
)
def test_every_layer_of_the_models_gets_tiles_the_kernels_take(cfg):
    shapes = layer_shapes(cfg)
    assert any(s.c_in <= 2 for s in shapes) and any(s.c_out <= 2 for s in shapes)  # the narrow path is used
    for shape in shapes:
        for operands in OPERANDS:
            for capability in ((7, 5), (8, 6), TUNED_ON):
                assert valid(conv_tiles(shape, operands, capability)), (shape, operands, capability)


def test_measured_tiles_apply_on_the_gpus_they_were_measured_on():
    """``TUNED`` is valid, serves compute capability 9.x only (other GPUs get the defaults, whose shared
    memory fits them), and unknown operand kinds are refused."""
    assert TUNED
    for (operands, shape), tile in TUNED.items():
        assert operands in OPERANDS and valid(tile), (operands, shape, tile)
        assert conv_tiles(shape, operands, (9, 0)) == conv_tiles(shape, operands, (9, 1)) == tile
        assert conv_tiles(shape, operands, (8, 6)) == default_tiles(shape)
    with pytest.raises(ValueError, match="operand kind 'fp8'"):
        conv_tiles(ConvShape(False, 32, 32, 3, 1), "fp8", TUNED_ON)


SHARED_MEMORY = {(7, 5): 65536, (9, 0): 232448}
"""Shared memory a program may use (bytes): a T4 (the least of the GPUs Triton builds for), an H100/H200."""


@pytest.mark.slow
def test_tiles_fit_the_shared_memory_of_their_gpus():
    """Every measured tile compiles for sm_90 within its shared memory, and the defaults of every layer of
    the three models within a T4's (no GPU needed: Triton compiles for a named target)."""
    triton = pytest.importorskip("triton")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from fastencodec.kernels import triton_ops as ops

    precision = {"16-bit": "ieee", "ieee": "ieee", "tf32": "tf32", "tf32x3": "tf32x3"}

    def shared(shape: ConvShape, operands: str, tile: ConvTiles, arch: int) -> int:
        ints = ["t_in", "t_out", "c_in", "c_out", "pad_left" if not shape.transposed else "trim_left"]
        pointers = ["x", "w", "bias", "y"] if shape.transposed else ["x", "w", "bias", "res", "y"]
        dtype = "*fp16" if operands == "16-bit" else "*fp32"
        constants = {"K": shape.kernel, "STRIDE": shape.stride, "ELU": True, "PREC": precision[operands],
                     "BCO": tile.outputs, "BCI": tile.inputs, "OUTS": shape.narrow_outputs,
                     "lens": None, "RAGGED": False}  # fmt: skip
        if shape.transposed:
            kernel, constants = ops.conv_transpose1d_kernel, constants | {"BQ": tile.rows}
        else:
            kernel = ops.conv1d_kernel
            constants |= {"BT": tile.rows, "DIL": 1, "REFLECT": True, "ADD": False, "SHORTCUT": shape.shortcut > 0}
            if shape.shortcut:
                pointers, ints = pointers + ["sx", "sw", "sbias"], ints + ["s_in"]
            else:
                constants |= {"sx": None, "sw": None, "sbias": None, "s_in": 0}
        constants["ELU_OUT"] = True
        signature = dict.fromkeys(pointers, dtype) | {"bias": "*fp32", "sbias": "*fp32"} | dict.fromkeys(ints, "i32")
        signature = {name: kind for name, kind in signature.items() if name in pointers + ints}
        signature |= dict.fromkeys(constants, "constexpr")
        options = {"num_warps": tile.warps, "num_stages": tile.stages, **ops.COMPILE}
        compiled = triton.compile(ASTSource(kernel, signature, constants), target=GPUTarget("cuda", arch, 32),
                                  options=options)  # fmt: skip
        return compiled.metadata.shared

    def variant(operands: str, shape: ConvShape, tile: ConvTiles) -> tuple:
        """The constexprs that set a kernel's shared memory (channel counts are not compiled in)."""
        return operands, shape.transposed, shape.kernel, shape.stride, shape.narrow_outputs, shape.shortcut > 0, tile

    limits = {}  # (kernel variant, arch) -> the shared memory it must fit
    for (operands, shape), tile in TUNED.items():
        limits[variant(operands, shape, tile), 90] = SHARED_MEMORY[9, 0]
    cfgs = (META_24KHZ, META_48KHZ, EncodecConfig.from_hf(support.HF_32KHZ))
    for shape in set().union(*(layer_shapes(cfg) for cfg in cfgs)):
        for operands in ("16-bit", "ieee"):
            limits[variant(operands, shape, default_tiles(shape)), 75] = SHARED_MEMORY[7, 5]
    for (variant, arch), limit in limits.items():
        operands, transposed, kernel, stride, outs, shortcut, tile = variant
        shape = ConvShape(transposed, 16, outs or 16, kernel, stride, 16 * shortcut)
        assert shared(shape, operands, tile, arch) <= limit, (variant, arch)


CASES = [  # (transposed, c_in, c_out, kernel, stride, dilation), tiles; None: the chosen tiles
    ((False, 1, 32, 7, 1, 1), None),
    ((False, 2, 32, 7, 1, 1), ConvTiles(128, 32, 1, 8, 2)),
    ((False, 32, 1, 7, 1, 1), None),
    ((False, 32, 2, 7, 1, 1), ConvTiles(32, 16, 16, 2, 4)),
    ((False, 2, 2, 5, 2, 1), None),
    ((False, 48, 40, 3, 1, 3), None),
    ((False, 48, 40, 3, 1, 3), ConvTiles(128, 64, 64, 8, 4)),
    ((False, 40, 48, 4, 2, 1), ConvTiles(16, 16, 16, 1, 1)),
    ((True, 40, 24, 8, 4, 1), None),
    ((True, 40, 24, 8, 4, 1), ConvTiles(32, 32, 64, 4, 2)),
    ((True, 24, 2, 4, 2, 1), None),
    ((True, 2, 24, 4, 2, 1), None),
    ((True, 40, 24, 7, 4, 1), None),  # kernels that are no multiple of the stride: taps past the end read as zeros
    ((True, 24, 2, 5, 2, 1), None),
    ((True, 2, 24, 7, 4, 1), ConvTiles(64, 32, 1, 4, 2)),
]


def interpreted_check() -> None:
    check("cpu")
    check_blocks("cpu")


def check(device: str) -> None:
    """Each case of ``CASES``, causal (24 kHz) and centred (48 kHz) padding, ``exact`` and
    ``fp16``, against float64 torch on ``device``; the items of a batch bitwise the same alone."""
    from fastencodec.kernels.cuda import CudaNetwork

    torch.manual_seed(0)
    for cfg in (META_24KHZ, META_48KHZ):
        for (transposed, c_in, c_out, kernel, stride, dilation), tile in CASES:
            if transposed:
                module = ConvTranspose1d(cfg, c_in, c_out, kernel, stride).eval().to(device)
                step = ConvTransposeStep(module, elu=True)
            else:
                module = Conv1d(cfg, c_in, c_out, kernel, stride, dilation).eval().to(device)
                module.norm = None  # GroupNorm is another kernel's
                step = ConvStep(module, elu=True)
            x = torch.randn(3, c_in, 61).to(device)
            with torch.inference_mode():
                expected = copy.deepcopy(module).double()(torch.nn.functional.elu(x.double()))
                for precision, tolerance in (("exact", 1e-6), ("fp16", 5e-3)):
                    tiles = conv_tiles if tile is None else (lambda shape, operands, capability, tile=tile: tile)
                    net = CudaNetwork([step], precision, "decoder", tiles=tiles)
                    out = net(x)
                    error = float((out.double() - expected).abs().max() / expected.abs().max())
                    assert error < tolerance, (cfg.name, c_in, c_out, tile, precision, error)
                    assert torch.equal(net(x[1:2].contiguous()), out[1:2]), (cfg.name, c_in, c_out, tile, precision)


def check_blocks(device: str) -> None:
    """A conv, a residual block, a transposed conv and a last conv (ELUs between them) against
    float64 torch on ``device``, in ``exact`` and ``fp16``: the block's conv shortcut computed in its
    last conv's kernel (weight norm), as a conv of its own (GroupNorm), or an identity; outputs stored
    after their consumer's ELU (:func:`~fastencodec.kernels.plan.activated_outputs`), which in ``exact``
    is bitwise the ELU computed where the consumer reads."""
    from fastencodec.kernels.cuda import CudaNetwork

    torch.manual_seed(0)
    identity = dataclasses.replace(META_24KHZ, conv_shortcut=False)
    for cfg in (META_24KHZ, META_48KHZ, identity):
        layers = torch.nn.Sequential(
            Conv1d(cfg, 2, 32, 7), ResnetBlock(cfg, 32, 3), torch.nn.ELU(), ConvTranspose1d(cfg, 32, 24, 4, 2),
            torch.nn.ELU(), Conv1d(cfg, 24, 1, 7),
        ).eval().to(device)  # fmt: skip
        steps = flatten(layers)
        assert activated_outputs(steps) == [False, True, True, True, False]
        x = torch.randn(3, 2, 77).to(device)
        with torch.inference_mode():
            expected = copy.deepcopy(layers).double()(x.double())
            outputs = {}
            for precision, tolerance in (("exact", 1e-6), ("fp16", 1e-2)):
                net = CudaNetwork(steps, precision, "decoder")
                out = outputs[precision] = net(x)
                error = float((out.double() - expected).abs().max() / expected.abs().max())
                assert error < tolerance, (cfg.name, cfg.conv_shortcut, precision, error)
                assert torch.equal(net(x[1:2].contiguous()), out[1:2]), (cfg.name, precision)
            plain = CudaNetwork(steps, "exact", "decoder")
            plain.activated = [False] * len(steps)  # every ELU where its consumer reads
            assert torch.equal(plain(x), outputs["exact"]), cfg.name


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_conv_kernels_on_the_gpu():
    pytest.importorskip("triton")
    check("cuda")
    check_blocks("cuda")


@pytest.mark.slow
def test_conv_kernels_under_the_triton_interpreter():
    pytest.importorskip("triton")
    support.run_under_triton_interpreter("tests.test_conv_tiles")


def test_kernels_refuse_an_item_past_their_32_bit_indexing():
    """An item whose activations at a layer reach 2**31 values (a 67M-row, 32-channel layer: a signal of
    about 47 minutes of 24 kHz audio) is refused before any launch, naming the remedy; one value less
    passes the check (meta tensors: nothing is allocated)."""
    pytest.importorskip("triton")
    from fastencodec.kernels.cuda import INDEX_LIMIT, CudaNetwork

    model = EncodecModel(META_24KHZ)
    steps = flatten(model.encoder.layers)
    net = CudaNetwork(steps, "exact", "encoder")
    first_block = steps[1].module  # 32 -> 16 channels, kernel 3
    assert first_block.conv.in_channels == 32
    rows = INDEX_LIMIT // 32
    with pytest.raises(ValueError, match=f"{rows} rows x 32 channels.*shorter pieces"):
        net._conv(first_block, torch.empty(1, rows, 32, device="meta"), True, None)
    with pytest.raises(Exception) as raised:  # past the check: the launch itself fails on meta tensors
        net._conv(first_block, torch.empty(1, rows - 1, 32, device="meta"), True, None)
    assert "32-bit" not in str(raised.value)
