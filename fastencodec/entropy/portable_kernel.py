"""The portable integer LM stepped frame by frame on the CPU (numba), and the coding loops around it.

:func:`decode_frames` decodes whole frames in one compiled call: per frame the integer LM step
(embeddings, 5 layers with a key/value window, heads), the exp weights, the integer CDFs
(:func:`.cdf._integer_cdfs`) and the arithmetic decoder (:func:`.arith._decode`), with no Python
between symbols. :func:`frame_cdfs` steps it over known frames for the encoder (the same
arithmetic, so the same CDFs); :func:`step` is one LM step alone (teacher forcing, tests).

Arithmetic (the same integers as :mod:`.portable_pass`, bit for bit): matrices are int16 and
activations int64 below ``2**20``; every matrix-vector product is the exact integer sum (below
``800 * 2**35``), computed in int32 lanes on two int16 limbs of the activations (:mod:`.pairdot`,
exact by its bound). The attention's products run in float64 lanes over float32 copies of the keys and
values (integers below ``2**20``, exact in float32): every partial sum is an integer below
``2**53``, exact in any order. Floor divisions of integers (layer norm, attention) are float64
divisions (:func:`_floor_div`), which vectorize where integer divisions do not.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .arith import ERR_STARVED, _decode, decode_error
from .cdf import TOTAL_RANGE_BITS, _integer_cdfs
from .fixed import CLAMP, FRAC, ONE
from .pairdot import OUTPUTS, matvec, paired, split

_FM = {"reassoc", "contract"}  # exact sums of integers: any order gives the same bits

# Window slots: first visible row, next row to write, position, started (0/1).
_START, _END, _POSITION, _STARTED = range(4)


def kernel_weights(lm) -> tuple:
    """A :class:`~fastencodec.entropy.portable.PortableLM`'s arrays in the kernel's layout (one tuple)."""
    dim = lm.config.dim
    if dim != 25 * lm.config.num_heads:
        raise ValueError(f"the portable LM has Meta's heads of 25 dimensions, not {dim / lm.config.num_heads:g}")
    tables = lm.tables
    exp_hi = np.append(tables["exp_hi"], 0)  # index 256: exp(-d) for d >= 2**16 is 0
    # Matrices: int16, by input pairs (pairdot.paired).
    return (
        lm.emb.astype(np.int32), lm.norm_in,  # embeddings: 20-bit integers, read a row per codebook a frame
        paired(lm.w_in[:, :dim]), np.ascontiguousarray(lm.b_in[:, :dim]),
        paired(lm.w_in[:, dim:]), np.ascontiguousarray(lm.b_in[:, dim:]),
        paired(lm.w_out), lm.b_out, paired(lm.w1), lm.b1, paired(lm.w2), lm.b2, lm.norms, paired(lm.w_heads),
        lm.b_heads, tables["cos"], exp_hi, tables["exp_lo"], tables["gelu"], tables["turns"],
    )


class KernelState:
    """One segment's state: the key/value window per layer, its position and scratch buffers.

    Args:
        config: the LM's shape.
        num_codebooks: codebooks of the segment.
        frames: the segment's frame count when known (decoding): the buffers then hold no more
            rows than it needs, so the window is never compacted and fewer pages are touched.
    """

    def __init__(self, config, num_codebooks: int, frames: int | None = None) -> None:
        cap = 2 * (config.past_context + 1)
        if frames is not None:
            cap = min(cap, frames + 3)  # the initial row, one per frame, and the next row to write
        dim = config.dim
        # Keys and values (integers below 2**20) per layer, dimension-major, as float32 (exact).
        self.keys = np.zeros((config.num_layers, dim, cap), dtype=np.float32)
        self.values = np.zeros((config.num_layers, dim, cap), dtype=np.float32)
        self.window = np.array([0, 1, 0, 0], dtype=np.int64)
        self.heads = config.num_heads
        self.past = config.past_context
        self.scratch = (
            np.empty(dim, np.int64), np.empty(dim, np.int64), np.empty(2 * dim, np.int64),
            np.empty(dim, np.int64), np.empty(dim, np.int64), np.empty(4 * dim, np.int64),
            np.empty(cap, np.float64), np.empty(config.card, np.int64),
            np.empty((num_codebooks, config.card), np.int64), np.empty((num_codebooks, config.card), np.int64),
            np.empty(4 * dim, np.int16), np.empty(4 * dim, np.int16),  # limbs of a layer's input
            np.empty(max(config.card, 4 * dim) + OUTPUTS, np.int64),  # a product's sums (outputs padded)
        )


def _check_index(state: KernelState, index: np.ndarray, ndim: int) -> None:
    """Raise ValueError unless ``index`` has ``ndim`` axes, the state's K first, values in ``0 .. card``
    (the compiled kernel checks no bounds)."""
    k_count, card = state.scratch[8].shape
    if index.ndim != ndim or index.shape[0] != k_count:
        raise ValueError(f"LM inputs must have {k_count} codebooks on axis 0 ({ndim} axes), got shape {index.shape}")
    if index.size and (index.min() < 0 or index.max() > card):
        raise ValueError(f"LM inputs must lie in [0, {card}]")


def step(weights: tuple, state: KernelState, index: np.ndarray) -> np.ndarray:
    """One LM step: int64 CDF weights ``[K, card]`` of the next frame from its LM input ``index`` ``[K]``."""
    _check_index(state, np.asarray(index), 1)
    out = state.scratch[8]
    _step(weights, state.keys, state.values, state.window, state.scratch, np.ascontiguousarray(index, np.int64),
          state.heads, state.past)
    return out.copy()


def frame_cdfs(weights: tuple, state: KernelState, index: np.ndarray) -> np.ndarray:
    """Integer CDFs of the next frames, the LM stepped on each (encoding: the decoder's arithmetic).

    Args:
        weights: :func:`kernel_weights`.
        state: the segment's LM state (advanced).
        index: int64 ``[K, n]`` LM inputs of the frames (the previous frame's codes + 1; zeros for the
            segment's first frame).

    Returns:
        int64 ``[n * K, card]`` CDFs, frame-major.

    Raises:
        ValueError: ``index`` is not ``[K, n]`` for the state's K, or holds values outside ``0 .. card``.
    """
    _check_index(state, index, 2)
    k_count, n = index.shape
    cdfs = np.empty((n * k_count, state.scratch[8].shape[1]), dtype=np.int64)
    _frame_cdfs(weights, state.keys, state.values, state.window, state.scratch, state.heads, state.past,
                np.ascontiguousarray(index, np.int64), cdfs)
    return cdfs


@njit(cache=True, nogil=True)
def _frame_cdfs(weights, keys, values, window, scratch, heads, past, index, cdfs):
    k_count, n = index.shape
    column = np.empty(k_count, np.int64)
    out = scratch[8]
    for t in range(n):
        for k in range(k_count):
            column[k] = index[k, t]
        _step(weights, keys, values, window, scratch, column, heads, past)
        _integer_cdfs(out, TOTAL_RANGE_BITS, cdfs[t * k_count : (t + 1) * k_count])


def decode_frames(weights: tuple, state: KernelState, previous: np.ndarray, ac_state: np.ndarray,
                  data: np.ndarray, codes: np.ndarray) -> None:
    """Decode ``codes.shape[1]`` frames into ``codes`` (int64 ``[K, n]``), stepping the LM on each.

    Args:
        weights: :func:`kernel_weights`.
        state: the segment's LM state (advanced).
        previous: int64 ``[K]``: the last decoded frame's codes, -1 before the first (updated).
        ac_state: the arithmetic decoder's state (:func:`.arith.decoder_state`), advanced.
        data: the whole coded payload (uint8).
        codes: int64 ``[K, n]``, written.

    Raises:
        CoderError: the payload is truncated, corrupt, or was coded with another model.
    """
    status = _decode_frames(weights, state.keys, state.values, state.window, state.scratch, state.heads,
                            state.past, previous, ac_state, data, codes)
    if status < 0:
        raise decode_error(status)


@njit(cache=True, nogil=True)
def _decode_frames(weights, keys, values, window, scratch, heads, past, previous, ac_state, data, codes):
    k_count, n = codes.shape
    index = np.empty(k_count, np.int64)
    symbols = np.empty(k_count, np.int64)
    out, cdfs = scratch[8], scratch[9]
    for t in range(n):
        for k in range(k_count):
            index[k] = previous[k] + 1
        _step(weights, keys, values, window, scratch, index, heads, past)
        _integer_cdfs(out, TOTAL_RANGE_BITS, cdfs)
        done = _decode(cdfs, symbols, 0, ac_state, data, TOTAL_RANGE_BITS)
        if done < 0:
            return done
        if done < k_count:
            return ERR_STARVED
        for k in range(k_count):
            codes[k, t] = symbols[k]
            previous[k] = symbols[k]
    return 0


@njit(cache=True, nogil=True, inline="always")
def _clamp(v):
    return min(max(v, -CLAMP), CLAMP)


@njit(cache=True, nogil=True)
def _linear(lo, hi, w, b, acc, out):
    """out = clamp(floor((W x + b) / 2**12)) for the limbs ``lo``, ``hi`` of ``x`` (:func:`.pairdot.split`)
    and the :func:`.pairdot.paired` int16 ``W``: exact integer sums (:mod:`.pairdot`), in ``acc``."""
    matvec(w, lo, hi, acc)
    for o in range(out.shape[0]):
        out[o] = _clamp((acc[o] + b[o]) >> FRAC)


@njit(cache=True, nogil=True)
def _isqrt(n):
    r = np.int64(np.sqrt(np.float64(n)))
    while r * r > n:
        r -= 1
    while (r + 1) * (r + 1) <= n:
        r += 1
    return r


@njit(cache=True, nogil=True)
def _floor_div(a, b):
    """``a // b`` for integers ``|a| < 2**53`` and ``b > 0`` (as float64 or int64), exactly, by one
    correctly rounded float64 division: its error, below ``|a / b| * 2**-53 < 1 / b``, is smaller
    than the distance ``>= 1 / b`` from a non-integer quotient to any integer, and an integer
    quotient is exact. Compiled without fast-math (a reciprocal would break this)."""
    return np.int64(np.floor(np.float64(a) / np.float64(b)))


@njit(cache=True, nogil=True)
def _layer_norm(x, gamma, beta):
    n = x.shape[0]
    total = np.int64(0)
    for i in range(n):
        total += x[i]
    mean = total // n
    var = np.int64(0)
    for i in range(n):
        d = x[i] - mean
        var += d * d
    std = _isqrt(var // n + 168)  # eps 1e-5 with 24 fractional bits
    if std == 0:
        std = 1
    for i in range(n):
        y = _floor_div((x[i] - mean) << FRAC, std)  # |numerator| < 2**34
        x[i] = _clamp(((_clamp(y) * gamma[i]) >> FRAC) + beta[i])


@njit(cache=True, nogil=True, inline="always")
def _exp_neg(d, exp_hi, exp_lo):
    """exp(-d / 2**12) with 30 fractional bits, for d >= 0 (``exp_hi[256]`` is 0: 0 from 2**16 on)."""
    return (exp_hi[min(d >> 8, 256)] * exp_lo[d & 255]) >> 30


@njit(cache=True, nogil=True)
def _scaled_scores(row, n):
    """``row[j] = floor(row[j] / (5 * 2**12))`` for ``j < n`` (integers ``|row[j]| < 2**45``), and the largest:
    the attention's scores ``q . k / sqrt(25)``, back to 12 fractional bits.

    Without a division, so that it vectorizes: ``u = floor(row[j] / 2**12)`` is exact (a power of
    two), and ``floor(u / 5)`` is ``floor(u * 0.2)`` corrected by the exact remainder ``u - 5 q``:
    the product's error, below ``|u| * 2**-52 < 2**-19``, is far smaller than the ``1 / 5`` between
    a non-integer ``u / 5`` and any integer, so the estimate is the quotient or one below it."""
    best = np.int64(-(1 << 62))
    for j in range(n):
        u = np.floor(row[j] * (1.0 / ONE))
        q = np.floor(u * 0.2)
        r = u - 5.0 * q
        q = q - np.float64(r < 0.0) + np.float64(r >= 5.0)
        row[j] = q
        best = max(best, np.int64(q))  # an integer maximum: it vectorizes, a float one does not
    return np.float64(best)


@njit(cache=True, nogil=True, fastmath=_FM)
def _attention(q, keys, values, start, end, heads, exp_hi, exp_lo, row, attn):
    """Integer softmax attention of ``q`` over rows ``start..end`` of ``keys``/``values`` ``[dim, cap]``.

    The row loops run from 0 over views of the window (the compiler then knows no index is
    negative, so no wraparound, and vectorizes them), five of a head's 25 dimensions per pass."""
    dim = q.shape[0]
    head_dim = dim // heads
    n = end + 1 - start
    for h in range(heads):
        first, stop = h * head_dim, (h + 1) * head_dim
        for j in range(n):
            row[j] = 0.0
        for d in range(first, stop, 5):
            q0, q1, q2, q3, q4 = (np.float64(q[d]), np.float64(q[d + 1]), np.float64(q[d + 2]), np.float64(q[d + 3]),
                                  np.float64(q[d + 4]))
            k0, k1, k2 = keys[d, start : end + 1], keys[d + 1, start : end + 1], keys[d + 2, start : end + 1]
            k3, k4 = keys[d + 3, start : end + 1], keys[d + 4, start : end + 1]
            for j in range(n):
                row[j] += q0 * k0[j] + q1 * k1[j] + q2 * k2[j] + q3 * k3[j] + q4 * k4[j]
        best = _scaled_scores(row, n)
        total = np.int64(0)
        for j in range(n):
            e = _exp_neg(np.int64(min(best - row[j], 1 << 20)), exp_hi, exp_lo) >> 14
            row[j] = e
            total += e
        for d in range(first, stop, 5):
            v0, v1, v2 = values[d, start : end + 1], values[d + 1, start : end + 1], values[d + 2, start : end + 1]
            v3, v4 = values[d + 3, start : end + 1], values[d + 4, start : end + 1]
            a0 = a1 = a2 = a3 = a4 = 0.0
            for j in range(n):
                r = row[j]
                a0 += r * v0[j]
                a1 += r * v1[j]
                a2 += r * v2[j]
                a3 += r * v3[j]
                a4 += r * v4[j]
            attn[d], attn[d + 1], attn[d + 2] = _floor_div(a0, total), _floor_div(a1, total), _floor_div(a2, total)
            attn[d + 3], attn[d + 4] = _floor_div(a3, total), _floor_div(a4, total)


@njit(cache=True, nogil=True)
def _embed(weights, index, position, x):
    """``x`` = the LM input of one frame: summed embeddings of ``index``, norm, position embedding."""
    emb, norm_in, cos, turns = weights[0], weights[1], weights[15], weights[19]
    dim = x.shape[0]
    x[:] = 0
    for k in range(index.shape[0]):
        for i in range(dim):
            x[i] += emb[k, index[k], i]
    for i in range(dim):
        x[i] = _clamp(x[i])
    _layer_norm(x, norm_in[0], norm_in[1])
    half = dim // 2
    for i in range(half):
        turn = np.uint64(position) * turns[i]
        j = np.int64(turn >> np.uint64(64 - 16))
        x[i] = _clamp(x[i] + cos[j])
        x[half + i] = _clamp(x[half + i] + cos[(j - 16384) & 65535])


@njit(cache=True, nogil=True)
def _first_keys(b_kv, keys, values, layer, row):
    """Meta's initial all-zero frame: its keys and values are the biases."""
    dim = keys.shape[1]
    for i in range(dim):
        keys[layer, i, row] = _clamp(b_kv[layer, i] >> FRAC)
        values[layer, i, row] = _clamp(b_kv[layer, dim + i] >> FRAC)


@njit(cache=True, nogil=True)
def _gelu(hidden, table):
    for i in range(hidden.shape[0]):
        v = hidden[i]
        if v >= 8 * ONE:
            continue
        if v < -8 * ONE:
            hidden[i] = 0
        else:
            hidden[i] = table[(v + 8 * ONE) >> 4]


@njit(cache=True, nogil=True)
def _residual_norm(x, proj, gamma, beta):
    for i in range(x.shape[0]):
        x[i] = _clamp(x[i] + proj[i])
    _layer_norm(x, gamma, beta)


@njit(cache=True, nogil=True)
def _head_weights(logits, exp_hi, exp_lo, out):
    """CDF weights of one codebook: exp of each logit's distance to the largest."""
    best = logits.max()
    for s in range(logits.shape[0]):
        out[s] = _exp_neg(best - logits[s], exp_hi, exp_lo)


@njit(cache=True, nogil=True)
def _advance(window, keys, values, past):
    """Move the window one frame on (the oldest row drops out past ``past`` rows); compact the buffers
    to their start when full (rows keep their values: only which rows are visible matters)."""
    start, end = window[_START], window[_END] + 1
    if end - start > past:
        start += 1
    window[_START], window[_END], window[_POSITION], window[_STARTED] = start, end, window[_POSITION] + 1, 1
    if end + 1 >= keys.shape[2]:
        _compact(window, keys, values)


@njit(cache=True, nogil=True)
def _compact(window, keys, values):
    """Move the window's rows (``start`` up to the next row to write) to the start of the buffers."""
    start, end = window[_START], window[_END]
    count = end - start
    for layer in range(keys.shape[0]):
        keys[layer, :, :count] = keys[layer, :, start:end].copy()
        values[layer, :, :count] = values[layer, :, start:end].copy()
    window[_START], window[_END] = 0, count


@njit(cache=True, nogil=True)
def _step(weights, keys, values, window, scratch, index, heads, past):
    (emb, norm_in, w_q, b_q, w_kv, b_kv, w_out, b_out, w1, b1, w2, b2, norms, w_heads, b_heads,
     cos, exp_hi, exp_lo, gelu, turns) = weights
    x, q, kv, attn, proj, hidden, row, logits, out = scratch[:9]
    lo, hi, acc = scratch[10], scratch[11], scratch[12]
    n_layers, dim, cap = keys.shape
    start, end = window[_START], window[_END]
    _embed(weights, index, window[_POSITION], x)
    for layer in range(n_layers):
        if not window[_STARTED]:
            _first_keys(b_kv, keys, values, layer, start)
        split(x, lo, hi)
        _linear(lo, hi, w_q[layer], b_q[layer], acc, q)
        _linear(lo, hi, w_kv[layer], b_kv[layer], acc, kv)
        for i in range(dim):
            keys[layer, i, end] = kv[i]
            values[layer, i, end] = kv[dim + i]
        _attention(q, keys[layer], values[layer], start, end, heads, exp_hi, exp_lo, row, attn)
        split(attn, lo, hi)
        _linear(lo, hi, w_out[layer], b_out[layer], acc, proj)
        _residual_norm(x, proj, norms[layer, 0, 0], norms[layer, 0, 1])
        split(x, lo, hi)
        _linear(lo, hi, w1[layer], b1[layer], acc, hidden)
        _gelu(hidden, gelu)
        split(hidden, lo, hi)
        _linear(lo, hi, w2[layer], b2[layer], acc, proj)
        _residual_norm(x, proj, norms[layer, 1, 0], norms[layer, 1, 1])
    split(x, lo, hi)
    for k in range(out.shape[0]):
        _linear(lo, hi, w_heads[k], b_heads[k], acc, logits)
        _head_weights(logits, exp_hi, exp_lo, out[k])
    _advance(window, keys, values, past)
