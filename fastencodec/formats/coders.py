"""Symbol coders: how a segment's codes become bytes in an ``.ecdc`` file, and back.

The container (:mod:`fastencodec.formats.ecdc`) writes each segment's scale itself, then hands
the stream to the file's coder, chosen by the header's ``lm`` key: ``false`` is plain bit packing
(tag ``"bits"``), ``true`` Meta's language-model entropy coding (tag ``"lm"``), a string another
coder's tag. A coder reads only the bytes of its own segment; the stream it reads from returns
exactly the bytes asked for (or raises ``EcdcError``). Coders register in ``CODERS``.
"""

from __future__ import annotations

from typing import BinaryIO, Protocol

import numpy as np

from fastencodec.formats.bitpack import BitPacker, BitUnpacker


class SegmentEncoder(Protocol):
    """Codes one segment: frames pushed in time order, then ``finish``."""

    def push(self, codes: np.ndarray) -> None:
        """Code the next frames of this segment, int64 ``[K, n]``."""

    def finish(self) -> None:
        """Flush; the segment's bytes are complete."""


class SegmentDecoder(Protocol):
    """Decodes one segment's frames in time order."""

    def read(self, frames: int) -> np.ndarray:
        """The next ``frames`` frames, int64 ``[K, frames]``."""
        ...


class SymbolCoder(Protocol):
    """A way to store codes: makes one encoder or decoder per segment."""

    tag: str

    def encoder(self, out: BinaryIO, num_codebooks: int) -> SegmentEncoder: ...

    def decoder(self, src: BinaryIO, num_codebooks: int, frames: int) -> SegmentDecoder: ...


class _BitsEncoder:
    def __init__(self, out: BinaryIO, num_codebooks: int, bits: int) -> None:
        self._out = out
        self._num_codebooks = num_codebooks
        self._packer = BitPacker(bits)

    def push(self, codes: np.ndarray) -> None:
        self._out.write(self._packer.pack(np.asarray(codes).T))

    def finish(self) -> None:
        self._out.write(self._packer.flush())


class _BitsDecoder:
    def __init__(self, src: BinaryIO, num_codebooks: int, bits: int) -> None:
        self._src = src
        self._num_codebooks = num_codebooks
        self._unpacker = BitUnpacker(bits)

    def read(self, frames: int) -> np.ndarray:
        count = frames * self._num_codebooks
        data = self._src.read(self._unpacker.bytes_needed(count))
        codes = self._unpacker.unpack(data, count)
        return np.ascontiguousarray(codes.reshape(frames, self._num_codebooks).T)


class BitsCoder:
    """Plain packing, ``bits`` per code (Meta's format without ``--lm``).

    Args:
        bits: width of one code (log2 of the codebook size).
    """

    tag = "bits"

    def __init__(self, bits: int) -> None:
        self.bits = bits

    def encoder(self, out: BinaryIO, num_codebooks: int) -> SegmentEncoder:
        return _BitsEncoder(out, num_codebooks, self.bits)

    def decoder(self, src: BinaryIO, num_codebooks: int, frames: int) -> SegmentDecoder:
        return _BitsDecoder(src, num_codebooks, self.bits)


CODERS: dict[str, type] = {"bits": BitsCoder}
"""Coder classes by tag; each is built with the code width in bits."""
