"""The portable integer LM stepped frame by frame on the CPU (numba), and the decoding loop around it.

:func:`decode_frames` decodes whole frames in one compiled call: per frame the integer LM step
(embeddings, 5 layers with a key/value window, heads), the exp weights, the integer CDFs
(:func:`.cdf._integer_cdfs`) and the arithmetic decoder (:func:`.arith._decode`), with no Python
between symbols. :func:`step` is one LM step alone (teacher forcing, tests).

Arithmetic (the same integers as :mod:`.portable_pass`, bit for bit): matrices are int16 and
activations int64 below ``2**20``, so every matrix-vector product is an exact int64 sum (below
``800 * 2**35``). The attention's products run in float64 lanes over float32 copies of the keys and
values (integers below ``2**20``, exact in float32): every partial sum is an integer below
``2**53``, exact in any order. Its scaled scores ``floor(s / (5 * 2**12))`` are float64 divisions:
a correctly rounded quotient (``|s| < 2**45``, so an error below ``2**-22``) never crosses the
integer that the exact quotient, at least ``2**-15`` away from it when it is not one, lies next to.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .arith import ERR_STARVED, _decode, decode_error
from .cdf import _integer_cdfs
from .fixed import CLAMP, FRAC, ONE

_FM = {"reassoc", "contract"}  # exact sums of integers: any order gives the same bits
SCORE_DIVISOR = 5 * ONE  # attention scores: q . k / sqrt(25), back to 12 fractional bits

# Window slots: first visible row, next row to write, position, started (0/1).
_START, _END, _POSITION, _STARTED = range(4)


def kernel_weights(lm) -> tuple:
    """A :class:`~fastencodec.entropy.portable.PortableLM`'s arrays in the kernel's layout (one tuple)."""
    dim = lm.config.dim
    tables = lm.tables
    exp_hi = np.append(tables["exp_hi"], 0)  # index 256: exp(-d) for d >= 2**16 is 0
    return (
        lm.emb, lm.norm_in,
        np.ascontiguousarray(lm.w_in[:, :dim]), np.ascontiguousarray(lm.b_in[:, :dim]),
        np.ascontiguousarray(lm.w_in[:, dim:]), np.ascontiguousarray(lm.b_in[:, dim:]),
        lm.w_out, lm.b_out, lm.w1, lm.b1, lm.w2, lm.b2, lm.norms, lm.w_heads, lm.b_heads,
        tables["cos"], exp_hi, tables["exp_lo"], tables["gelu"], tables["turns"],
    )


class KernelState:
    """One segment's state: the key/value window per layer, its position and scratch buffers.

    Args:
        config: the LM's shape.
        num_codebooks: codebooks of the segment.
    """

    def __init__(self, config, num_codebooks: int) -> None:
        cap = 2 * (config.past_context + 1)
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
        )


def step(weights: tuple, state: KernelState, index: np.ndarray) -> np.ndarray:
    """One LM step: int64 CDF weights ``[K, card]`` of the next frame from its LM input ``index`` ``[K]``."""
    out = state.scratch[8]
    _step(weights, state.keys, state.values, state.window, state.scratch, np.ascontiguousarray(index, np.int64),
          state.heads, state.past)
    return out.copy()


def decode_frames(weights: tuple, state: KernelState, previous: np.ndarray, ac_state: np.ndarray,
                  data: np.ndarray, codes: np.ndarray) -> None:
    """Decode ``codes.shape[1]`` frames into ``codes`` (int64 ``[K, n]``), stepping the LM on each.

    Args:
        weights: :func:`kernel_weights`.
        state: the segment's LM state (advanced).
        previous: int64 ``[K]``: the last decoded frame's codes, -1 before the first (updated).
        ac_state: the arithmetic decoder's state (:class:`.arith.ArithmeticDecoder` layout).
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
        _integer_cdfs(out, 24, cdfs)
        done = _decode(cdfs, symbols, 0, ac_state, data, 24)
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


@njit(cache=True, nogil=True, fastmath=_FM)
def _linear(x, w, b, out):
    """out = clamp(floor((W x + b) / 2**12)): int16 ``W``, int64 ``x``; exact int64 sums."""
    n_out, n_in = w.shape
    for o in range(n_out):
        acc = np.int64(0)
        for i in range(n_in):
            acc += np.int64(w[o, i]) * x[i]
        out[o] = _clamp((acc + b[o]) >> FRAC)


@njit(cache=True, nogil=True)
def _isqrt(n):
    r = np.int64(np.sqrt(np.float64(n)))
    while r * r > n:
        r -= 1
    while (r + 1) * (r + 1) <= n:
        r += 1
    return r


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
        y = ((x[i] - mean) << FRAC) // std
        x[i] = _clamp(((_clamp(y) * gamma[i]) >> FRAC) + beta[i])


@njit(cache=True, nogil=True, inline="always")
def _exp_neg(d, exp_hi, exp_lo):
    """exp(-d / 2**12) with 30 fractional bits, for d >= 0 (``exp_hi[256]`` is 0: 0 from 2**16 on)."""
    return (exp_hi[min(d >> 8, 256)] * exp_lo[d & 255]) >> 30


@njit(cache=True, nogil=True)
def _scaled_scores(row, n):
    """``row[j] = floor(row[j] / (5 * 2**12))`` for ``j < n``, and the largest; exact (see the module),
    and compiled without fast-math so that the division stays a correctly rounded division."""
    best = -np.inf
    for j in range(n):
        s = np.floor(row[j] / SCORE_DIVISOR)
        row[j] = s
        best = max(best, s)
    return best


@njit(cache=True, nogil=True, fastmath=_FM)
def _attention(q, keys, values, start, end, heads, exp_hi, exp_lo, row, attn):
    """Integer softmax attention of ``q`` over rows ``start..end`` of ``keys``/``values`` ``[dim, cap]``.

    The row loops run from 0 over views of the window: the compiler then knows no index is
    negative (no wraparound) and vectorizes them."""
    dim = q.shape[0]
    head_dim = dim // heads
    n = end + 1 - start
    for h in range(heads):
        for j in range(n):
            row[j] = 0.0
        for d in range(h * head_dim, (h + 1) * head_dim):
            qd = np.float64(q[d])
            key = keys[d, start : end + 1]
            for j in range(n):
                row[j] += qd * np.float64(key[j])
        best = _scaled_scores(row, n)
        total = np.int64(0)
        for j in range(n):
            e = _exp_neg(np.int64(min(best - row[j], 1 << 20)), exp_hi, exp_lo) >> 14
            row[j] = e
            total += e
        for d in range(h * head_dim, (h + 1) * head_dim):
            value = values[d, start : end + 1]
            acc = 0.0
            for j in range(n):
                acc += row[j] * np.float64(value[j])
            attn[d] = np.int64(acc) // total


@njit(cache=True, nogil=True)
def _step(weights, keys, values, window, scratch, index, heads, past):
    (emb, norm_in, w_q, b_q, w_kv, b_kv, w_out, b_out, w1, b1, w2, b2, norms, w_heads, b_heads,
     cos, exp_hi, exp_lo, gelu, turns) = weights
    x, q, kv, attn, proj, hidden, row, logits, out = scratch[:9]
    n_layers, dim, cap = keys.shape
    k_count, card = out.shape
    start, end, position, started = window[_START], window[_END], window[_POSITION], window[_STARTED]
    x[:] = 0
    for k in range(k_count):
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
    for layer in range(n_layers):
        if not started:  # Meta's initial all-zero frame: its keys and values are the biases
            for i in range(dim):
                keys[layer, i, start] = _clamp(b_kv[layer, i] >> FRAC)
                values[layer, i, start] = _clamp(b_kv[layer, dim + i] >> FRAC)
        _linear(x, w_q[layer], b_q[layer], q)
        _linear(x, w_kv[layer], b_kv[layer], kv)
        for i in range(dim):
            keys[layer, i, end] = kv[i]
            values[layer, i, end] = kv[dim + i]
        _attention(q, keys[layer], values[layer], start, end, heads, exp_hi, exp_lo, row, attn)
        _linear(attn, w_out[layer], b_out[layer], proj)
        for i in range(dim):
            x[i] = _clamp(x[i] + proj[i])
        _layer_norm(x, norms[layer, 0, 0], norms[layer, 0, 1])
        _linear(x, w1[layer], b1[layer], hidden)
        for i in range(hidden.shape[0]):
            v = hidden[i]
            if v >= 8 * ONE:
                continue
            if v < -8 * ONE:
                hidden[i] = 0
            else:
                hidden[i] = gelu[(v + 8 * ONE) >> 4]
        _linear(hidden, w2[layer], b2[layer], proj)
        for i in range(dim):
            x[i] = _clamp(x[i] + proj[i])
        _layer_norm(x, norms[layer, 1, 0], norms[layer, 1, 1])
    for k in range(k_count):
        _linear(x, w_heads[k], b_heads[k], logits)
        best = logits.max()
        for s in range(card):
            out[k, s] = _exp_neg(best - logits[s], exp_hi, exp_lo)
    end += 1
    if end - start > past:
        start += 1
    if end + 1 >= cap:
        count = end - start
        for layer in range(n_layers):
            keys[layer, :, :count] = keys[layer, :, start:end].copy()
            values[layer, :, :count] = values[layer, :, start:end].copy()
        start, end = 0, count
    window[_START], window[_END], window[_POSITION], window[_STARTED] = start, end, position + 1, 1
