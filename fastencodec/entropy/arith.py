"""Arithmetic coder, bit-compatible with Meta's ``encodec/quantization/ac.py`` (compiled with numba).

The coding rule (Meta's): the range ``[low, high]`` is doubled (one bit injected) until
its width ``delta`` reaches ``2 ** 24``; symbol ``s`` then narrows it to
``[low + ceil(cdf[s-1] * delta / 2**24), low + floor((cdf[s] - 1) * delta / 2**24)]``, and
the leading bits that ``low`` and ``high`` share are emitted. At the end the remaining
bits of ``low`` are emitted. Bits fill each byte from its least significant bit up and the
last byte is zero-padded. The decoder consumes exactly the bytes the encoder wrote, so
streams can be concatenated without lengths.

Both directions work on whole frames (one CDF row per symbol) and keep their state in a
small int64 array, so a stream can be produced and consumed in pieces.
"""

from __future__ import annotations

from typing import BinaryIO

import numpy as np
from numba import njit

from fastencodec.formats.ecdc import EcdcError

from .cdf import TOTAL_RANGE_BITS

# Encoder state slots.
_LOW, _HIGH, _MAX_BIT, _BITS, _NBITS = range(5)
# Decoder state slots (besides _LOW, _HIGH, _MAX_BIT, _BITS, _NBITS).
_CURRENT, _POS = 5, 6

MAX_BIT_LIMIT = 61  # Meta's coder asserts max_bit <= 61 (its range then exceeds 62 bits)

ERR_RANGE = -1  # range invariant broken (a CDF exceeding 2 ** bits, or Meta's 61-bit limit)
ERR_SEARCH = -2  # no symbol owns the decoded value: corrupt stream or mismatched model
ERR_CDF = -3  # a CDF that is not strictly increasing or starts below 1
ERR_STARVED = -4  # the stream ended before the symbols did (reported by callers of _decode)


@njit(cache=True, nogil=True, inline="always")
def _interval(low, delta, cdf, s, bits):
    """The sub-range ``(low, high)`` symbol ``s`` owns in ``[low, low + delta)``, and whether its CDF
    interval is empty (a CDF that is not strictly increasing)."""
    range_low = cdf[s - 1] if s > 0 else np.int64(0)
    range_high = cdf[s] - 1
    limit = np.int64(1) << bits
    return low + ((range_low * delta + limit - 1) >> bits), low + ((range_high * delta) >> bits), range_high < range_low


@njit(cache=True, nogil=True, inline="always")
def _shared_bits(low, high, max_bit):
    """``(count, bits)``: the leading bits (from bit ``max_bit`` down) that ``low`` and ``high`` share,
    which the coder emits and drops; ``low``, ``high`` < ``2 ** (max_bit + 1)``."""
    diff = low ^ high
    length = max_bit + 1
    while length > 0 and (diff >> (length - 1)) == 0:
        length -= 1
    return max_bit + 1 - length, low >> length


@njit(cache=True, nogil=True, inline="always")
def _put_bits(value, count, acc, nacc, out, written):
    """Append the ``count`` low bits of ``value``, most significant first, to the byte being filled
    (from its least significant bit up); returns the new ``(acc, nacc, written)``."""
    for j in range(count - 1, -1, -1):
        acc |= ((value >> j) & 1) << nacc
        nacc += 1
        if nacc == 8:
            out[written] = acc
            written += 1
            acc = 0
            nacc = 0
    return acc, nacc, written


@njit(cache=True, nogil=True)
def _encode(cdfs, symbols, state, out, bits):
    """Code ``symbols[i]`` with ``cdfs[i]``; returns bytes written to ``out`` or an error."""
    limit = np.int64(1) << bits
    low = state[_LOW]
    high = state[_HIGH]
    max_bit = state[_MAX_BIT]
    acc = state[_BITS]
    nacc = state[_NBITS]
    written = 0
    for i in range(symbols.shape[0]):
        while high - low + 1 < limit:
            if max_bit >= MAX_BIT_LIMIT + 1:
                return ERR_RANGE
            low = low * 2
            high = high * 2 + 1
            max_bit += 1
        low, high, empty = _interval(low, high - low + 1, cdfs[i], symbols[i], bits)
        if empty:
            return ERR_CDF
        if (high >> (max_bit + 1)) != 0:
            return ERR_RANGE
        count, prefix = _shared_bits(low, high, max_bit)
        if count > 0:
            low -= prefix << (max_bit + 1 - count)
            high -= prefix << (max_bit + 1 - count)
            max_bit -= count
            acc, nacc, written = _put_bits(prefix, count, acc, nacc, out, written)
        if max_bit > MAX_BIT_LIMIT:
            return ERR_RANGE
    state[_LOW] = low
    state[_HIGH] = high
    state[_MAX_BIT] = max_bit
    state[_BITS] = acc
    state[_NBITS] = nacc
    return written


@njit(cache=True, nogil=True)
def _flush(state, out):
    acc, nacc, written = _put_bits(state[_LOW], state[_MAX_BIT] + 1, state[_BITS], state[_NBITS], out, 0)
    if nacc:
        out[written] = acc
        written += 1
    state[:] = 0
    state[_MAX_BIT] = -1
    return written


@njit(cache=True, nogil=True)
def _decode(cdfs, out, start, state, data, bits):
    """Decode symbols ``start..`` with ``cdfs[i]`` from ``data[state[_POS]:]``.

    Returns the index of the first symbol not decoded (``len(out)`` when all are), with the
    state saved mid-symbol when the bytes run out, or a negative error code.
    """
    limit = np.int64(1) << bits
    low = state[_LOW]
    high = state[_HIGH]
    max_bit = state[_MAX_BIT]
    acc = state[_BITS]
    nacc = state[_NBITS]
    current = state[_CURRENT]
    pos = state[_POS]
    n = data.shape[0]
    card = cdfs.shape[1]
    i = start
    status = 0
    while i < out.shape[0]:
        starved = False
        while high - low + 1 < limit:
            if nacc == 0:
                if pos >= n:
                    starved = True
                    break
                acc = np.int64(data[pos])
                pos += 1
                nacc = 8
            if max_bit >= MAX_BIT_LIMIT + 1:
                status = ERR_RANGE
                break
            bit = acc & 1
            acc >>= 1
            nacc -= 1
            low = low * 2
            high = high * 2 + 1
            current = current * 2 + bit
            max_bit += 1
        if starved or status < 0:
            break
        delta = high - low + 1
        lo = 0
        hi = card - 1
        found = -1
        new_low = low
        new_high = high
        while lo <= hi:
            mid = (lo + hi) // 2
            a, b, _ = _interval(low, delta, cdfs[i], mid, bits)
            if current >= a:
                if current <= b:
                    found = mid
                    new_low = a
                    new_high = b
                    break
                lo = mid + 1
            else:
                hi = mid - 1
        if found < 0:
            status = ERR_SEARCH
            break
        low = new_low
        high = new_high
        count, prefix = _shared_bits(low, high, max_bit)
        if count > 0:
            shift = max_bit + 1 - count
            low -= prefix << shift
            high -= prefix << shift
            current -= prefix << shift
            max_bit -= count
        out[i] = found
        i += 1
    state[_LOW] = low
    state[_HIGH] = high
    state[_MAX_BIT] = max_bit
    state[_BITS] = acc
    state[_NBITS] = nacc
    state[_CURRENT] = current
    state[_POS] = pos
    if status < 0:
        return status
    return i


class CoderError(EcdcError):
    """An arithmetic-coded stream that cannot be coded or decoded (corrupt, truncated, wrong model)."""


def _check_cdfs(cdfs: np.ndarray, rows: int) -> np.ndarray:
    cdfs = np.ascontiguousarray(cdfs, dtype=np.int64)
    if cdfs.ndim != 2 or cdfs.shape[0] != rows or cdfs.shape[1] == 0:
        raise ValueError(f"cdfs must have shape [{rows}, card], got {cdfs.shape}")
    return cdfs


class ArithmeticEncoder:
    """Streams symbols to ``out``; call :meth:`finish` once after the last symbol.

    Args:
        out: binary file object receiving the bytes as they are completed.
        total_range_bits: coder precision in bits (Meta's default 24).
    """

    def __init__(self, out: BinaryIO, total_range_bits: int = TOTAL_RANGE_BITS) -> None:
        if not 1 <= total_range_bits <= 30:
            raise ValueError("total_range_bits must be in [1, 30]")
        self._out = out
        self._bits = total_range_bits
        self._state = np.zeros(5, dtype=np.int64)
        self._state[_MAX_BIT] = -1
        self._buffer = np.zeros(0, dtype=np.uint8)
        self.bytes_written = 0

    def push(self, symbols: np.ndarray, cdfs: np.ndarray) -> None:
        """Code ``symbols[i]`` (int, ``[n]``) with CDF row ``cdfs[i]`` (int64 ``[n, card]``)."""
        symbols = np.ascontiguousarray(symbols, dtype=np.int64).ravel()
        cdfs = _check_cdfs(cdfs, symbols.size)
        if symbols.size and (symbols.min() < 0 or symbols.max() >= cdfs.shape[1]):
            raise ValueError(f"symbols must lie in [0, {cdfs.shape[1]})")
        need = symbols.size * (self._bits + 2) // 8 + 16
        if self._buffer.size < need:
            self._buffer = np.zeros(need, dtype=np.uint8)
        written = _encode(cdfs, symbols, self._state, self._buffer, self._bits)
        if written < 0:
            raise CoderError(_ENCODE_ERRORS[written])
        self._emit(written)

    def finish(self) -> None:
        """Emit the remaining bits of the range and the zero-padded last byte."""
        if self._buffer.size < 16:
            self._buffer = np.zeros(16, dtype=np.uint8)
        self._emit(_flush(self._state, self._buffer))

    def _emit(self, count: int) -> None:
        if count:
            self._out.write(self._buffer[:count].tobytes())
            self.bytes_written += count


_ENCODE_ERRORS = {
    ERR_RANGE: "the coder range overflowed (a CDF exceeds the total range, or Meta's 61-bit limit was hit)",
    ERR_CDF: "a CDF is not strictly increasing",
}


class ArithmeticDecoder:
    """Decodes symbols from ``src``, reading only the bytes its encoder wrote.

    When ``src`` is seekable it is read in blocks and :meth:`close` seeks back over the
    bytes read ahead; otherwise it is read byte by byte, as needed.

    Args:
        src: binary file object positioned at the first byte of the coded stream.
        total_range_bits: coder precision in bits (Meta's default 24).
        max_bytes: the most bytes the stream may span (a corrupt stream then fails at
            this limit instead of reading to the end of ``src``), or None.
    """

    _BLOCK = 4096

    def __init__(self, src: BinaryIO, total_range_bits: int = TOTAL_RANGE_BITS, max_bytes: int | None = None) -> None:
        self._src = src
        self._bits = total_range_bits
        self._state = decoder_state()
        self._data = np.zeros(0, dtype=np.uint8)
        try:
            self._seekable = bool(src.seekable())
        except (AttributeError, OSError):
            self._seekable = False
        self._max_bytes = max_bytes
        self._read_total = 0
        self._closed = False

    def pull(self, cdfs: np.ndarray) -> np.ndarray:
        """Decode one symbol per CDF row of ``cdfs`` (int64 ``[n, card]``); returns int64 ``[n]``.

        Raises:
            CoderError: the stream is truncated, corrupt, or was coded with other CDFs.
        """
        cdfs = np.ascontiguousarray(cdfs, dtype=np.int64)
        if cdfs.ndim != 2:
            raise ValueError(f"cdfs must have shape [n, card], got {cdfs.shape}")
        out = np.empty(cdfs.shape[0], dtype=np.int64)
        done = 0
        while True:
            done = _decode(cdfs, out, done, self._state, self._data, self._bits)
            if done < 0:
                raise decode_error(done)
            if done == out.size:
                return out
            self._refill()

    def close(self) -> None:
        """Give back the bytes read ahead (seekable sources); the stream must end here."""
        if self._closed:
            return
        self._closed = True
        unread = self._data.size - int(self._state[_POS])
        if unread:
            self._src.seek(-unread, 1)

    def _refill(self) -> None:
        pos = int(self._state[_POS])
        size = self._BLOCK if self._seekable else 1
        if self._max_bytes is not None:
            size = min(size, self._max_bytes - self._read_total)
        chunk = self._src.read(size) if size > 0 else b""
        if not chunk:
            raise decode_error(ERR_STARVED)
        self._read_total += len(chunk)
        self._data = np.concatenate([self._data[pos:], np.frombuffer(chunk, dtype=np.uint8)])
        self._state[_POS] = 0


_DECODE_ERRORS = {
    ERR_RANGE: "the coder range overflowed: the stream is corrupt or was coded with another model",
    ERR_SEARCH: "no symbol matches the coded value: the stream is corrupt or was coded with another model",
    ERR_STARVED: "the entropy-coded stream ended sooner than expected (truncated or corrupt)",
}


def decoder_state() -> np.ndarray:
    """A fresh decoder state for :func:`_decode` (compiled callers decoding a whole payload at once)."""
    state = np.zeros(7, dtype=np.int64)
    state[_MAX_BIT] = -1
    return state


def bytes_consumed(state: np.ndarray) -> int:
    """Bytes of the payload a whole-payload :func:`_decode` has read (its state's position)."""
    return int(state[_POS])


def decode_error(code: int) -> CoderError:
    """The :class:`CoderError` for a decoder status code."""
    return CoderError(_DECODE_ERRORS[code])


def decode_payload(cdfs: np.ndarray, state: np.ndarray, data: np.ndarray) -> np.ndarray:
    """Decode one symbol per CDF row (int64 ``[n, card]``) from a whole in-memory payload.

    Args:
        cdfs: int64 ``[n, card]``.
        state: the decoder's state (:func:`decoder_state`), advanced.
        data: the whole payload (uint8).

    Returns:
        int64 ``[n]``.

    Raises:
        CoderError: the payload is truncated, corrupt, or was coded with other CDFs.
    """
    out = np.empty(cdfs.shape[0], dtype=np.int64)
    done = _decode(_check_cdfs(cdfs, cdfs.shape[0]), out, 0, state, data, TOTAL_RANGE_BITS)
    if done < 0:
        raise decode_error(done)
    if done < out.size:
        raise decode_error(ERR_STARVED)
    return out
