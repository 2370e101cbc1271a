"""Quantized CDFs for the arithmetic coder, built for all codebooks of a frame at once.

A CDF here is an int64 array ``[K, card]`` of cumulative interval ends: symbol ``s`` of
codebook ``k`` owns ``[cdf[k, s - 1], cdf[k, s])`` (``cdf[k, -1]`` read as 0) out of
``2 ** total_range_bits``.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit

TOTAL_RANGE_BITS = 24
MIN_RANGE = 2


@njit(cache=True, nogil=True)
def _meta_cdfs(pdf: np.ndarray, total_range_bits: int, out: np.ndarray) -> None:
    rows, card = pdf.shape
    total = 2**total_range_bits
    alpha = MIN_RANGE * card / total
    scale = np.float32((1.0 - alpha) * total)
    roundoff = np.float32(1e-8)
    for k in range(rows):
        acc = 0
        for i in range(card):
            p = np.floor(pdf[k, i] / roundoff) * roundoff
            acc += np.int64(np.floor(scale * p)) + MIN_RANGE
            out[k, i] = acc


def meta_cdfs(pdf: np.ndarray, total_range_bits: int = TOTAL_RANGE_BITS) -> np.ndarray:
    """Meta's ``build_stable_quantized_cdf`` (roundoff 1e-8, min range 2), row by row.

    Bit-identical to Meta's float32 torch computation: the pdf is floored to multiples of
    1e-8 (float32 true division and product), scaled by ``(1 - alpha) * 2 ** bits`` (as a
    float32), floored, raised by the minimum range and summed.

    Args:
        pdf: float32 probabilities ``[K, card]`` (one distribution per row).
        total_range_bits: coder precision in bits.

    Returns:
        int64 cumulative interval ends ``[K, card]``.
    """
    pdf = np.ascontiguousarray(pdf, dtype=np.float32)
    if pdf.ndim != 2:
        raise ValueError(f"pdf must have shape [K, card], got {pdf.shape}")
    if MIN_RANGE * pdf.shape[1] > 2**total_range_bits:
        raise ValueError("the alphabet is too large for the coder's range")
    out = np.empty(pdf.shape, dtype=np.int64)
    _meta_cdfs(pdf, total_range_bits, out)
    return out


def meta_cdfs_on_device(pdf: torch.Tensor, dim: int, total_range_bits: int = TOTAL_RANGE_BITS) -> torch.Tensor:
    """Meta's ``build_stable_quantized_cdf`` as the torch ops Meta runs, on ``pdf``'s device, along ``dim``.

    The GPU's bits: on CUDA, torch divides a tensor by a Python number as a product by the
    number's reciprocal, so :func:`meta_cdfs` (true division, Meta's CPU bits) can differ there.

    Args:
        pdf: float32 probabilities, one distribution along ``dim``.
        dim: the symbol dimension.
        total_range_bits: coder precision in bits.

    Returns:
        int64 cumulative interval ends, ``pdf``'s shape, on its device.
    """
    roundoff = 1e-8
    pdf = (pdf / roundoff).floor() * roundoff
    total_range = 2**total_range_bits
    alpha = MIN_RANGE * pdf.shape[dim] / total_range
    ranges = (((1 - alpha) * total_range) * pdf).floor().long()
    ranges += MIN_RANGE
    return torch.cumsum(ranges, dim=dim)


@njit(cache=True, nogil=True)
def _integer_cdfs(weights: np.ndarray, total_range_bits: int, out: np.ndarray) -> None:
    rows, card = weights.shape
    free = (1 << total_range_bits) - MIN_RANGE * card
    for k in range(rows):
        row = weights[k]
        cdf = out[k]
        total = np.int64(0)
        best = 0
        for i in range(card):
            total += row[i]
            if row[i] > row[best]:
                best = i
        if total == 0:
            given = (free // card) * card
            for i in range(card):
                cdf[i] = free // card + MIN_RANGE
        else:
            given = _widths(row, free, total, cdf)
        cdf[best] += free - given
        acc = np.int64(0)
        for i in range(card):
            acc += cdf[i]
            cdf[i] = acc


@njit(cache=True, nogil=True)
def _widths(row, free, total, widths):
    """``widths[i] = floor(row[i] * free / total) + MIN_RANGE``; returns the sum of the floors.

    The quotient is estimated in float64 (within 1 of the exact one: quotient below ``2**24``,
    relative error below ``2**-51``) and corrected with exact int64 remainders (``row[i] * free``
    stays below ``2**61`` for weights below ``2**37``); vectorizes, unlike an integer division per symbol."""
    ratio = np.float64(free) / np.float64(total)
    given = np.int64(0)
    for i in range(row.shape[0]):
        num = row[i] * free
        q = np.int64(np.float64(row[i]) * ratio)
        r = num - q * total
        q += np.int64(r >= total) - np.int64(r < 0)
        widths[i] = q + MIN_RANGE
        given += q
    return given


def integer_cdfs(weights: np.ndarray, total_range_bits: int = TOTAL_RANGE_BITS) -> np.ndarray:
    """CDFs from non-negative integer weights, summing to exactly ``2 ** total_range_bits``.

    Every symbol gets ``MIN_RANGE + floor(w * free / sum(w))`` and the rounding remainder
    goes to the first heaviest symbol: pure integer arithmetic, the same on every platform.

    Args:
        weights: int64 weights ``[K, card]``, each below ``2 ** 37``.
        total_range_bits: coder precision in bits.

    Returns:
        int64 cumulative interval ends ``[K, card]``; the last column is ``2 ** total_range_bits``.
    """
    weights = np.ascontiguousarray(weights, dtype=np.int64)
    if weights.ndim != 2 or weights.size == 0:
        raise ValueError(f"weights must have shape [K, card], got {weights.shape}")
    if weights.min() < 0 or weights.max() >= 1 << 37:
        raise ValueError("weights must lie in [0, 2**37)")
    out = np.empty(weights.shape, dtype=np.int64)
    _integer_cdfs(weights, total_range_bits, out)
    return out
