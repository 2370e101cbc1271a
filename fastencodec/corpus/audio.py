"""Reading one corpus item as audio at the model's sample rate and channel count.

The single seam between the corpus tokenizer and audio decoding: decoding, cutting and
resampling are those of ``fastencodec compress`` (``AudioReader``, soxr through
``StreamResampler``, the channel rule of ``audio_io.to_channels``), so an item's codes equal
``EnCodec.encode`` of the same conformed audio.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import soundfile as sf

from fastencodec.audio_io import AudioFileError, AudioReader, to_channels
from fastencodec.resample import StreamResampler

READ_BLOCK = 1 << 16
"""Input samples decoded per block."""

SEEKABLE = frozenset({"WAV", "WAVEX", "W64", "RF64", "FLAC", "AIFF", "CAF", "AU"})
"""libsndfile formats whose seeks land on the exact sample (PCM and FLAC): segments of these
are read from their offset; others (MP3, Ogg, FFmpeg formats) are decoded from the start."""


def read_item(
    path: str,
    sample_rate: int,
    channels: int,
    offset: float | None = None,
    duration: float | None = None,
) -> Iterator[np.ndarray]:
    """Yield the audio of ``path`` (or of its segment) as float32 blocks ``[channels, n]`` at ``sample_rate`` Hz.

    Args:
        path: audio file (anything ``AudioReader`` decodes).
        sample_rate: target rate in Hz (the model's).
        channels: target channel count (the model's); other counts are mixed to mono,
            resampled, and copied to every channel.
        offset: start of the segment in seconds (None: the file's start); cut at the file's
            own rate, ``round(offset * rate)`` samples in.
        duration: segment length in seconds (None: to the end); ``round(duration * rate)``
            input samples, fewer if the file ends first.

    Raises:
        AudioFileError: the file is missing, empty, corrupt, or the segment holds no samples.
    """
    with AudioReader(path) as reader:
        start = 0 if offset is None else round(offset * reader.sample_rate)
        left = None if duration is None else round(duration * reader.sample_rate)
        mixed = reader.channels if reader.channels == channels else 1
        resampler = StreamResampler(reader.sample_rate, sample_rate, mixed)
        total = 0
        blocks = reader.blocks(READ_BLOCK)
        if start and _seekable(path):  # a segment of a long recording: no decoding from its start
            blocks, start = _blocks_from(path, start), 0
        for block in blocks:
            if start:
                skip = min(start, block.shape[1])
                block, start = block[:, skip:], start - skip
            if left is not None:
                block = block[:, :left]
                left -= block.shape[1]
            if block.shape[1]:
                audio = to_channels(resampler.push(to_channels(block, mixed)), channels)
                total += audio.shape[1]
                yield audio
            if left == 0:
                break
        audio = to_channels(resampler.flush(), channels)
        total += audio.shape[1]
        if total == 0:
            where = "" if offset is None else f" from {offset} s"
            raise AudioFileError(f"{path}: no audio{where} (less than one sample at {sample_rate} Hz)")
        yield audio


def _seekable(path: str) -> bool:
    try:
        return sf.info(path).format in SEEKABLE
    except (sf.SoundFileError, RuntimeError, TypeError):
        return False


def _blocks_from(path: str, start: int) -> Iterator[np.ndarray]:
    """float32 blocks [channels, n] of ``path`` from sample ``start`` on, as ``AudioReader`` reads them."""
    try:
        with sf.SoundFile(path) as file:
            if start >= file.frames:
                return
            file.seek(start)
            while len(block := file.read(READ_BLOCK, dtype="float32", always_2d=True)):
                if not np.isfinite(block).all():
                    raise AudioFileError(f"{path}: contains NaN or infinite samples")
                yield block.T
    except (sf.SoundFileError, RuntimeError) as exc:
        raise AudioFileError(f"{path}: corrupt audio ({exc})") from None
