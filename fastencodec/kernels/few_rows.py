"""A Triton linear layer for a few rows: ``y = residual + act(norm(x) @ weight.T + bias)`` on CUDA.

A decoding step of a language model multiplies one frame per row (two rows for one guided item) by
every weight matrix: the product is bound by reading the weight once. cuBLAS reads a float32
weight well below the memory's bandwidth for two rows (BENCHMARKS.md); this kernel splits the weight's
output features over many programs, each loading its ``[block_n, in_features]`` slice of the
weight in one go (every load in flight at once) and then running the rows one after the other
against it, so the weight is read once whatever the number of rows.

Batch invariance: the tile sizes and the reduction order depend on the weight's shape and dtype
only, and each row is computed by the same instructions whatever the others, so row ``r`` of a
call is bitwise the same in a call of any number of rows. Products and sums are float32 for
float32, bfloat16 and float16 operands; the output has ``x``'s dtype. The optional LayerNorm of
each row (``norm``, mean and variance in float32), activation and residual are computed in the
kernel as well.
Triton is imported only when this module is.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fastencodec.kernels.triton_ops import COMPILE

MAX_ROWS = 16
"""Most rows a call takes (more rows: a matrix product library does better)."""

ACTIVATIONS = {None: 0, "gelu": 1, "relu": 2}
"""Activations the kernel applies (transformers' names: ``gelu`` is the exact, erf form)."""

MAX_IN = 16384
"""Widest input a call takes (a program holds a whole weight row slice in registers)."""

TILE_BYTES = 16384
"""Weight bytes a program loads (at least one whole row: ``block_n = TILE_BYTES // row bytes``)."""


@triton.jit(do_not_specialize=["rows"])
def few_rows_kernel(
    x, w, bias, res, g, beta, y, rows, n_out, x_stride, r_stride, eps,
    K: tl.constexpr, KP: tl.constexpr, BN: tl.constexpr,
    BIAS: tl.constexpr, ADD: tl.constexpr, NORM: tl.constexpr, ACT: tl.constexpr,
):  # fmt: skip
    """``y[m, n] = res[m, n] + act(sum_k norm(x[m])[k] * w[n, k] + bias[n])`` for the ``BN`` outputs
    ``n`` of this program and every row ``m < rows``; ``w`` is ``[n_out, K]`` contiguous, ``KP``
    the power of two at or above ``K``; ``norm`` is LayerNorm with weight ``g``, bias ``beta``."""
    n = tl.program_id(0).to(tl.int64) * BN + tl.arange(0, BN)
    k = tl.arange(0, KP)
    n_ok = n < n_out
    k_ok = k < K
    following = tl.load(x + k[None, :], mask=k_ok[None, :], other=0.0)  # row 0, in flight with the tile
    tile = tl.load(w + n[:, None] * K + k[None, :], mask=n_ok[:, None] & k_ok[None, :], other=0.0)
    tile = tile.to(tl.float32)
    if BIAS:
        b = tl.load(bias + n, mask=n_ok, other=0.0).to(tl.float32)
    if NORM:
        scale = tl.load(g + k[None, :], mask=k_ok[None, :], other=0.0).to(tl.float32)
        shift = tl.load(beta + k[None, :], mask=k_ok[None, :], other=0.0).to(tl.float32)
    for m in range(rows):
        row = following.to(tl.float32)
        following = tl.load(x + ((m + 1) % rows) * x_stride + k[None, :], mask=k_ok[None, :], other=0.0)
        if NORM:
            mean = tl.sum(row, axis=1)[:, None] / K
            centred = tl.where(k_ok[None, :], row - mean, 0.0)
            var = tl.sum(centred * centred, axis=1)[:, None] / K
            row = centred * tl.rsqrt(var + eps) * scale + shift
        acc = tl.sum(tile * row, axis=1)
        if BIAS:
            acc = acc + b
        if ACT == 1:
            acc = 0.5 * acc * (1.0 + tl.erf(acc * 0.7071067811865476))
        elif ACT == 2:
            acc = tl.maximum(acc, 0.0)
        if ADD:
            acc = acc + tl.load(res + m * r_stride + n, mask=n_ok, other=0.0).to(tl.float32)
        tl.store(y + m * n_out + n, acc.to(y.dtype.element_ty), mask=n_ok)


def tile_config(out_features: int, in_features: int, element_size: int) -> tuple[int, int, int]:
    """``(block_n, padded in_features, num_warps)`` of a weight ``[out_features, in_features]``:
    a function of its shape only (never of the rows), so every call on it reduces alike."""
    kp = triton.next_power_of_2(in_features)
    block_n = max(1, min(TILE_BYTES // element_size // kp, triton.next_power_of_2(out_features)))
    warps = max(4, min(16, block_n * kp // 1024))
    return block_n, kp, warps


def supports(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether :func:`few_rows_linear` takes ``x`` ``[..., in_features]`` and ``weight``."""
    return (
        x.dtype == weight.dtype
        and x.dtype in (torch.float32, torch.bfloat16, torch.float16)
        and weight.dim() == 2
        and weight.is_contiguous()
        and x.shape[-1] == weight.shape[1] <= MAX_IN
        and 0 < x.numel() // max(x.shape[-1], 1) <= MAX_ROWS
    )


def few_rows_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    residual: torch.Tensor | None = None,
    norm: torch.nn.LayerNorm | None = None,
    activation: str | None = None,
) -> torch.Tensor:
    """``residual + activation(norm(x) @ weight.T + bias)`` for a few rows (see :func:`supports`).

    Args:
        x: ``[..., in_features]``, at most :data:`MAX_ROWS` rows, the weight's dtype and device.
        weight: ``[out_features, in_features]``, contiguous.
        bias: ``[out_features]`` or None.
        residual: added to the product, ``[..., out_features]`` (``x``'s leading shape), or None.
        norm: a LayerNorm over ``in_features`` applied to each row of ``x`` first, or None.
        activation: a name in :data:`ACTIVATIONS` (None: none).

    Returns:
        ``[..., out_features]`` in ``x``'s dtype.

    Raises:
        ValueError: the shapes or dtypes are not ones this kernel takes.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(map(str, ACTIVATIONS))}, got {activation!r}")
    if not supports(x, weight):
        raise ValueError(f"few_rows_linear takes up to {MAX_ROWS} rows of the weight's float dtype and "
                         f"width <= {MAX_IN}; got x {tuple(x.shape)} {x.dtype}, weight {tuple(weight.shape)} "
                         f"{weight.dtype}")
    n_out, k_in = weight.shape
    lead = x.shape[:-1]
    x2 = x.reshape(-1, k_in)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    rows = x2.shape[0]
    y = torch.empty(rows, n_out, device=x.device, dtype=x.dtype)
    r2 = y
    if residual is not None:
        r2 = residual.reshape(rows, n_out)
        if r2.stride(-1) != 1:
            r2 = r2.contiguous()
    g = beta = y
    eps = 0.0
    if norm is not None:
        g, beta, eps = norm.weight, norm.bias, float(norm.eps)
        if norm.normalized_shape != (k_in,) or g is None or beta is None:
            raise ValueError("norm must be a LayerNorm over in_features with weight and bias")
        g, beta = g.contiguous(), beta.contiguous()  # the kernel reads them densely
    if bias is not None:
        bias = bias.contiguous()
    block_n, kp, warps = tile_config(n_out, k_in, weight.element_size())
    few_rows_kernel[(triton.cdiv(n_out, block_n),)](
        x2, weight, y if bias is None else bias, r2, g, beta, y, rows, n_out, x2.stride(0), r2.stride(0), eps,
        K=k_in, KP=kp, BN=block_n, BIAS=bias is not None, ADD=residual is not None, NORM=norm is not None,
        ACT=ACTIVATIONS[activation], num_warps=warps, **COMPILE,
    )  # fmt: skip
    return y.view(*lead, n_out)
