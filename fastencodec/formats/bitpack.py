"""Plain bit packing of codes, as Meta's ``encodec.binary``: each code ``bits`` wide, bytes
filled from the least significant bit up, a code's least significant bit first."""

from __future__ import annotations

import numpy as np

from fastencodec.engine.segments import check_bits

_PACK_BLOCK = 1 << 16


class BitPacker:
    """Packs ``bits``-wide codes into bytes, keeping the partial byte between calls.

    Args:
        bits: width of one code, 1 to 16 bits (``engine.segments.check_bits``).

    Raises:
        ValueError: an unsupported width.
    """

    def __init__(self, bits: int) -> None:
        check_bits(bits)
        self.bits = bits
        self._shifts = np.arange(bits, dtype=np.int64)
        self._pending = np.zeros(0, dtype=np.uint8)

    def pack(self, values: np.ndarray) -> bytes:
        """Pack codes.

        Args:
            values: integer codes in ``0 .. 2**bits - 1``, any shape (packed flattened, in C order).

        Returns:
            The bytes completed so far; the bits of a partial last byte wait for the next call.
        """
        flat = np.asarray(values, dtype=np.int64).ravel()
        out = []
        for start in range(0, flat.size, _PACK_BLOCK):
            block = flat[start : start + _PACK_BLOCK]
            bits = ((block[:, None] >> self._shifts) & 1).astype(np.uint8).ravel()
            bits = np.concatenate([self._pending, bits])
            whole = bits.size - bits.size % 8
            self._pending = bits[whole:]
            out.append(np.packbits(bits[:whole], bitorder="little").tobytes())
        return b"".join(out)

    def flush(self) -> bytes:
        """Return the zero-padded partial byte (if any) and reset the packer."""
        tail = np.packbits(self._pending, bitorder="little").tobytes()
        self._pending = np.zeros(0, dtype=np.uint8)
        return tail


class BitUnpacker:
    """Unpacks ``bits``-wide codes from bytes read as needed, keeping leftover bits between calls.

    Args and errors as :class:`BitPacker`.
    """

    def __init__(self, bits: int) -> None:
        check_bits(bits)
        self.bits = bits
        self._weights = np.int64(1) << np.arange(bits, dtype=np.int64)
        self._pending = np.zeros(0, dtype=np.uint8)

    def bytes_needed(self, count: int) -> int:
        """Bytes to read for the next ``count`` codes."""
        return max(0, -(-(count * self.bits - self._pending.size) // 8))

    def unpack(self, data: bytes, count: int) -> np.ndarray:
        """The next codes, from the leftover bits and ``data``.

        Args:
            data: at least :meth:`bytes_needed` ``(count)`` more bytes.
            count: codes to return.

        Returns:
            int64 codes ``[count]``; bits left over wait for the next call.

        Raises:
            ValueError: ``data`` holds too few bits.
        """
        stream = np.concatenate([self._pending, np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")])
        need = count * self.bits
        if stream.size < need:
            raise ValueError(f"codes run short: {len(data)} bytes hold fewer than {count} codes")
        self._pending = stream[need:]
        return stream[:need].reshape(count, self.bits).astype(np.int64) @ self._weights
