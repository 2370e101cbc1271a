"""Raw interleaved PCM read from a binary stream as it arrives (``compress --stream``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

import numpy as np

from fastencodec.arrays import bounded_int
from fastencodec.io.errors import AudioFileError

PCM_FORMATS = {"s16le": ("<i2", 2.0**15), "s32le": ("<i4", 2.0**31), "f32le": ("<f4", 1.0)}
"""Raw PCM sample formats: NumPy dtype and the value of full scale."""
MAX_CHANNELS = 256
"""Most interleaved channels a raw PCM stream may have (a block of them is allocated at once)."""


def check_channels(channels: int) -> int:
    """A channel count a raw PCM stream may have.

    Args:
        channels: the count to check.

    Returns:
        ``channels``, if it is an ``int`` from 1 to ``MAX_CHANNELS``.

    Raises:
        ValueError: it is not.
    """
    return bounded_int(channels, "channel count", MAX_CHANNELS)


class PcmSource:
    """Raw interleaved PCM from a binary stream, an audio source like ``AudioReader``.

    Args:
        stream: binary stream, e.g. ``sys.stdin.buffer``.
        name: how messages name the stream.
        sample_format: a key of ``PCM_FORMATS`` (little-endian).
        sample_rate: sample rate in Hz.
        channels: interleaved channel count (1 to ``MAX_CHANNELS``).

    Raises:
        ValueError: a channel count that is not an integer from 1 to ``MAX_CHANNELS``.
    """

    frames = None

    def __init__(self, stream: BinaryIO, name: str, sample_format: str, sample_rate: int, channels: int) -> None:
        self._stream = stream
        self.name = name
        dtype, self._full_scale = PCM_FORMATS[sample_format]
        self._dtype = np.dtype(dtype)
        self.sample_rate = sample_rate
        self.channels = check_channels(channels)

    def seek(self, frames: int) -> int:
        """A stream cannot seek: returns 0 (the samples skipped)."""
        return 0

    def blocks(self, block_size: int) -> Iterator[np.ndarray]:
        """Read the stream as it arrives.

        Args:
            block_size: most samples per channel per block.

        Yields:
            float32 blocks ``[channels, n]`` (full scale is 1.0), as soon as their bytes arrive.

        Raises:
            AudioFileError: no samples, a partial last sample frame, or NaN/infinite samples.
        """
        frame_bytes = self._dtype.itemsize * self.channels
        read = getattr(self._stream, "read1", self._stream.read)  # read1: what is there, without waiting
        pending, total = b"", 0
        while chunk := read(block_size * frame_bytes):
            data = pending + chunk
            whole = len(data) - len(data) % frame_bytes
            pending = data[whole:]
            if whole:
                samples = np.frombuffer(data[:whole], self._dtype).reshape(-1, self.channels).T
                block = samples.astype(np.float32) / np.float32(self._full_scale)
                if not np.isfinite(block).all():
                    raise AudioFileError(f"{self.name}: contains NaN or infinite samples")
                total += block.shape[1]
                yield block
        if pending:
            raise AudioFileError(f"{self.name}: raw PCM ends inside a sample frame ({len(pending)} stray bytes)")
        if total == 0:
            raise AudioFileError(f"{self.name}: contains no audio samples")
