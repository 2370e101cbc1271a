"""Quantized CDFs for the arithmetic coder, built for all codebooks of a frame at once.

A CDF here is an int64 array ``[K, card]`` of cumulative interval ends: symbol ``s`` of
codebook ``k`` owns ``[cdf[k, s - 1], cdf[k, s])`` (``cdf[k, -1]`` read as 0) out of
``2 ** total_range_bits``.
"""

from __future__ import annotations

import numpy as np
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


@njit(cache=True, nogil=True)
def _integer_cdfs(weights: np.ndarray, total_range_bits: int, out: np.ndarray) -> None:
    rows, card = weights.shape
    free = (1 << total_range_bits) - MIN_RANGE * card
    for k in range(rows):
        total = 0
        best = 0
        for i in range(card):
            total += weights[k, i]
            if weights[k, i] > weights[k, best]:
                best = i
        given = 0
        widths = np.empty(card, dtype=np.int64)
        for i in range(card):
            if total > 0:
                w = (weights[k, i] * free) // total
            else:
                w = free // card
            widths[i] = w + MIN_RANGE
            given += w
        widths[best] += free - given
        acc = 0
        for i in range(card):
            acc += widths[i]
            out[k, i] = acc


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
