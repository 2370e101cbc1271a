"""Audio at a model's sample rate and channel count, from any source the package reads.

``load_audio`` reads a whole file; ``conformed_blocks`` streams any source block by block
(resampling with soxr as it goes), so long files never sit in memory. The channel rule is
``fastencodec.io.audio.to_channels``: equal counts are kept; otherwise the channels are averaged
to mono, resampled once, and copied to every channel asked for.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Protocol

import numpy as np

from fastencodec.io.audio import AudioReader, to_channels
from fastencodec.io.errors import AudioFileError
from fastencodec.io.resample import StreamResampler

BLOCK_SAMPLES = 1 << 16
"""Input samples per channel read at a time."""


class AudioSource(Protocol):
    """An audio input read block by block: ``AudioReader`` (files) or ``PcmSource`` (raw PCM).

    Attributes:
        name: how messages name it.
        sample_rate: in Hz.
        channels: channel count.
        frames: length in samples per channel, or None when unknown ahead.
    """

    name: str
    sample_rate: int
    channels: int
    frames: int | None

    def seek(self, frames: int) -> int:
        """Skip ``frames`` samples without decoding where the source can; returns how many it skipped."""
        ...

    def blocks(self, block_size: int) -> Iterator[np.ndarray]:
        """Yield float32 blocks ``[channels, n]`` of at most ``block_size`` samples per channel."""
        ...


def conformed_blocks(
    source: AudioSource,
    sample_rate: int,
    channels: int,
    *,
    offset: float | None = None,
    duration: float | None = None,
    expected: int | None = None,
    progress: Callable[[int], object] | None = None,
    block_samples: int | None = None,
) -> Iterator[np.ndarray]:
    """``source``'s audio at ``sample_rate`` Hz with ``channels`` channels, block by block.

    Args:
        source: what to read.
        sample_rate: output rate in Hz.
        channels: output channel count.
        offset: seconds of the source to skip first (``round(offset * rate)`` input samples; sources
            that seek exactly, PCM and FLAC files, seek there instead of decoding them).
        duration: seconds of the source to read at most (``round(duration * rate)`` input samples).
        expected: samples the output must have in all (checked at the end), or None.
        progress: called with the input samples of each block read.
        block_samples: input samples per channel read at a time (default ``BLOCK_SAMPLES``).

    Yields:
        float32 blocks ``[channels, n]`` (``n`` varies with the resampler's delay).

    Raises:
        AudioFileError: nothing is left at ``sample_rate`` (e.g. an offset past the end), or the
            total differs from ``expected``.
    """
    skip = 0 if offset is None else max(0, round(offset * source.sample_rate))
    skip -= source.seek(skip) if skip else 0
    left = None if duration is None else max(0, round(duration * source.sample_rate))
    mixed = source.channels if source.channels == channels else 1
    resampler = StreamResampler(source.sample_rate, sample_rate, mixed)
    total = 0
    for block in source.blocks(block_samples or BLOCK_SAMPLES):
        if progress is not None:
            progress(block.shape[-1])
        cut = min(skip, block.shape[-1])
        block, skip = block[:, cut:], skip - cut
        if left is not None:
            block, left = block[:, :left], left - min(left, block.shape[-1])
        if block.shape[-1]:
            audio = to_channels(resampler.push(to_channels(block, mixed)), channels)
            total += audio.shape[-1]
            yield audio
        if left == 0:
            break
    audio = to_channels(resampler.flush(), channels)
    total += audio.shape[-1]
    if total == 0:
        where = "" if not offset else f" from {offset} s"
        raise AudioFileError(f"{source.name}: no audio{where} (less than one sample at {sample_rate} Hz)")
    if expected is not None and total != expected:
        raise AudioFileError(f"{source.name}: announced {source.frames} samples but holds another number")
    yield audio


def load_audio(
    path: str | os.PathLike[str],
    sample_rate: int,
    channels: int,
    offset: float | None = None,
    duration: float | None = None,
) -> np.ndarray:
    """Read an audio file (any format ``AudioReader`` reads; ``"-"`` is stdin) at a given rate and channel count.

    Args:
        path: the file.
        sample_rate: output rate in Hz (soxr HQ resampling).
        channels: output channel count (the channel rule of the module docstring).
        offset: seconds of the file to skip.
        duration: seconds to read at most.

    Returns:
        float32 audio ``[channels, samples]``.

    Raises:
        AudioFileError: missing, unreadable or empty file.
    """
    with AudioReader(path) as reader:
        return np.concatenate(
            list(conformed_blocks(reader, sample_rate, channels, offset=offset, duration=duration)), axis=1
        )
