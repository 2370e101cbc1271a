"""The few-row Triton linear kernel (``fastencodec.kernels.few_rows``) used by MusicGen's decoding
steps: accuracy against float64 torch, batch invariance (a row's result, bitwise, does not depend on
the other rows), and MusicGen through it still matching transformers. On CPU through Triton's
interpreter (``TRITON_INTERPRET=1``, in a subprocess: the variable must be set before Triton is
imported); on a GPU the same checks at the published shapes (skipped without CUDA)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tests import support


def reference(x, weight, bias=None, residual=None, norm=None, activation=None):
    """``residual + activation(norm(x) @ weight.T + bias)`` in float64."""
    x = x.double()
    if norm is not None:
        x = F.layer_norm(x, norm.normalized_shape, norm.weight.double(), norm.bias.double(), norm.eps)
    y = x @ weight.double().t()
    if bias is not None:
        y = y + bias.double()
    if activation is not None:
        y = F.gelu(y) if activation == "gelu" else F.relu(y)
    return y if residual is None else y + residual.double()


OPTIONS = ({}, {"bias": True}, {"residual": True}, {"norm": True, "residual": True},
           {"norm": True, "activation": "gelu"}, {"bias": True, "activation": "relu"})
"""The kernel's variants checked: what is added (True: random tensors), and the activation."""


def check_kernel(shapes, device: str, rows_list=(1, 2, 5, 8, 16), variants=OPTIONS) -> None:
    """For each ``(out_features, in_features)``, float32 and bfloat16, and each of ``variants``:
    the kernel is within its dtype's rounding of float64 torch, and row ``r`` of an ``n``-row call
    (``n`` in ``rows_list``) equals row ``r`` of the 16-row call, bitwise."""
    from fastencodec.kernels.few_rows import few_rows_linear

    gen = torch.Generator().manual_seed(0)
    for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 1.6e-2)):
        for n_out, k_in in shapes:
            def rand(*shape, dtype=dtype):
                return torch.randn(*shape, generator=gen).to(device=device, dtype=dtype)

            weight, bias = rand(n_out, k_in) / k_in**0.5, rand(n_out)
            norm = torch.nn.LayerNorm(k_in, device=device, dtype=dtype)
            with torch.no_grad():
                norm.weight.copy_(rand(k_in))
                norm.bias.copy_(rand(k_in))
            x, residual = rand(16, k_in), rand(16, n_out)
            tensors = {"bias": bias, "residual": residual, "norm": norm}
            for variant in variants:
                options = {k: tensors[k] if v is True else v for k, v in variant.items()}
                with torch.no_grad():
                    full = few_rows_linear(x, weight, **options)
                    ref = reference(x, weight, **options)
                    error = (full.double() - ref).abs().max() / ref.abs().max()
                    assert error < tol, (dtype, n_out, k_in, list(options), float(error))
                    for rows in rows_list:
                        part = {k: v[:rows] if k == "residual" else v for k, v in options.items()}
                        out = few_rows_linear(x[:rows], weight, **part)
                        assert out.dtype == dtype and out.shape == (rows, n_out)
                        assert torch.equal(out, full[:rows]), (dtype, n_out, k_in, list(options), rows)


def check_musicgen() -> None:
    """A tiny random-weight MusicGen whose steps run through the kernel (forced on for CPU tensors,
    eager steps) chooses transformers' greedy tokens, guided and not, with logits within 1e-4."""
    from fastencodec.musicgen import MusicGen
    from fastencodec.musicgen.stepping import Decoding
    from tests.test_musicgen import _build, _compare, _ours, _theirs

    used = []
    step = Decoding.step

    def spy(self, span):
        used.append(self.kernels)
        return step(self, span)

    Decoding.step = spy
    MusicGen._kernels = property(lambda self: True)  # this process only (a subprocess of the test)
    with tempfile.TemporaryDirectory() as tmp:
        model, tok = _build(Path(tmp))
        mg = MusicGen.from_pretrained(tmp, "cpu")
        prompts = ["jazz piano", "loud fast rock drums with bass and guitar"]
        for guidance in (1.0, 3.0):
            _compare(_theirs(model, tok, prompts, 8 + 3, guidance), _ours(mg, prompts, 8, guidance))
    assert used and all(used)


def interpreted_check() -> None:
    """Everything above on CPU tensors through Triton's interpreter (small shapes: odd widths,
    outputs that do not fill the last block, widths of one and several blocks of a program)."""
    check_kernel([(24, 48), (3, 17), (70, 64), (9, 130)], "cpu")
    from fastencodec.kernels.few_rows import MAX_ROWS, few_rows_linear

    with pytest.raises(ValueError, match="rows"):
        few_rows_linear(torch.zeros(MAX_ROWS + 1, 8), torch.zeros(4, 8))
    with pytest.raises(ValueError, match="activation"):
        few_rows_linear(torch.zeros(2, 8), torch.zeros(4, 8), activation="swish")
    with pytest.raises(ValueError, match="dtype"):
        few_rows_linear(torch.zeros(2, 8, dtype=torch.float64), torch.zeros(4, 8, dtype=torch.float64))
    check_musicgen()


@pytest.mark.slow
def test_few_rows_kernel_under_the_triton_interpreter():
    pytest.importorskip("triton")
    pytest.importorskip("transformers")
    support.run_under_triton_interpreter("tests.test_few_rows")


def test_few_rows_kernel_compiles_for_hopper_without_a_gpu():
    """The kernel compiles to sm_90 code at musicgen-small's and -medium's shapes (no GPU needed)."""
    triton = pytest.importorskip("triton")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from fastencodec.kernels import few_rows
    from fastencodec.kernels.triton_ops import COMPILE

    names = few_rows.few_rows_kernel.arg_names
    for (n_out, k_in), ty, norm in (((3072, 1024), "*fp32", True), ((1536, 6144), "*fp32", False),
                                    ((2048, 1536), "*bf16", True)):
        block_n, kp, warps = few_rows.tile_config(n_out, k_in, 4 if ty == "*fp32" else 2)
        constants = {"K": k_in, "KP": kp, "BN": block_n, "BIAS": False, "ADD": not norm, "NORM": norm,
                     "ACT": 1 if norm else 0}
        signature = dict.fromkeys(names[:7], ty) | dict.fromkeys(names[7:11], "i32") | {"eps": "fp32"}
        signature |= dict.fromkeys(constants, "constexpr")
        aligned = {(names.index(name),): [["tt.divisibility", 16]]  # as a launch specialises them
                   for name in [*names[:7], "n_out", "x_stride", "r_stride"]}
        source = ASTSource(few_rows.few_rows_kernel, signature, constants, aligned)
        compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps, **COMPILE})
        assert "ld.global.v4" in compiled.asm["ptx"]  # the weight is read in 16-byte loads


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_few_rows_kernel_on_cuda():
    """musicgen-small's qkv and fc2 and musicgen-medium's (widths 1536 and 6144: not powers of two)
    on the GPU, every row count up to 16; also captured in a CUDA graph (as a decoding step runs it)."""
    pytest.importorskip("triton")
    options = ({}, {"norm": True, "activation": "gelu"}, {"residual": True})
    check_kernel([(3072, 1024), (1024, 4096), (4608, 1536), (1536, 6144)], "cuda", range(1, 17), options)
    from fastencodec.kernels.few_rows import few_rows_linear

    weight = torch.randn(4096, 1024, device="cuda") / 32
    x = torch.randn(2, 1024, device="cuda")
    eager = few_rows_linear(x, weight)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = few_rows_linear(x, weight)
    graph.replay()
    assert torch.equal(captured, eager)
