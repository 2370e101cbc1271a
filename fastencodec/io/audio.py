"""Reading and writing audio files as float32 arrays of shape [channels, samples].

Reading tries libsndfile (through ``soundfile``: WAV, FLAC, Ogg Vorbis/Opus, MP3, AIFF, ...)
first and falls back to FFmpeg (through PyAV: M4A/AAC and anything else FFmpeg decodes).
The path ``"-"`` reads standard input, which is first copied to an anonymous temporary file
so both libraries can seek in it.

Writing supports ``.wav`` (32-bit float by default: lossless with respect to the decoder
output, no clipping) and ``.flac`` (24-bit PCM by default); PCM subtypes clip samples to
[-1, 1]. Files are written atomically through :class:`fastencodec.io.atomic.AtomicOutput`
(a temporary file beside the destination, renamed into place on success), so an interrupted
write never leaves a partial file. The path ``"-"`` writes a WAV stream to standard output.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np
import soundfile as sf
import torch

from fastencodec import arrays
from fastencodec.io.atomic import COPY_BLOCK, STDIO, AtomicOutput, CommitOnExit
from fastencodec.io.errors import AudioFileError

_FORMATS = {".wav": ("WAV", "FLOAT"), ".flac": ("FLAC", "PCM_24")}
_FLOAT_SUBTYPES = {"FLOAT", "DOUBLE"}
SEEKABLE = frozenset({"WAV", "WAVEX", "W64", "RF64", "FLAC", "AIFF", "CAF", "AU"})
"""libsndfile formats whose seeks land on the exact sample (PCM and FLAC); other formats (MP3,
Ogg, FFmpeg's) are decoded from their start when an offset is asked for."""


class AudioReader:
    """An open audio file, read block by block.

    Args:
        path: the file, or ``"-"`` for standard input (copied to a temporary file first).

    Attributes:
        name: the path, or ``"<stdin>"``.
        sample_rate: sample rate in Hz.
        channels: channel count.
        frames: length in samples per channel, or None when the decoder cannot tell ahead.

    Raises:
        AudioFileError: the file is missing, empty, unreadable, not audio, or has no audio stream.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.name = "<stdin>" if path == STDIO else os.fspath(path)
        self._spool: BinaryIO | None = None
        self._skipped = 0
        self._sound_file: sf.SoundFile | None = None
        self._container: av.container.InputContainer | None = None
        source: str | BinaryIO
        if path == STDIO:
            self._spool = _spool_stdin()
            source = self._spool
        else:
            source = self.name
            _check_input_path(Path(source))
        try:
            self._open(source)
        except BaseException:
            self.close()
            raise

    @classmethod
    def from_file(cls, file: BinaryIO, name: str) -> AudioReader:
        """Read an audio file already open for binary reading, e.g. bytes in a temporary file.

        Args:
            file: a seekable binary file positioned at the audio's start (not closed by the reader).
            name: how messages name it.

        Returns:
            The reader.

        Raises:
            AudioFileError: not audio, or no audio stream.
        """
        reader = cls.__new__(cls)
        reader.name = name
        reader._spool = reader._sound_file = reader._container = None
        reader._skipped = 0
        try:
            reader._open(file)
        except BaseException:
            reader.close()
            raise
        return reader

    def _open(self, source: str | BinaryIO) -> None:
        try:
            self._sound_file = sf.SoundFile(source)
        except (sf.SoundFileError, RuntimeError, TypeError):
            if not isinstance(source, str):
                source.seek(0)
        else:
            self.sample_rate = self._sound_file.samplerate
            self.channels = self._sound_file.channels
            self.frames: int | None = self._sound_file.frames
            return
        try:
            self._container = av.open(source)
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise AudioFileError(f"{self.name}: unsupported or corrupt audio file ({exc})") from None
        if not self._container.streams.audio:
            raise AudioFileError(f"{self.name}: no audio stream")
        stream = self._container.streams.audio[0]
        self.sample_rate = stream.rate
        self.channels = stream.channels
        self.frames = None
        if not self.sample_rate or not self.channels:
            raise AudioFileError(f"{self.name}: audio stream has no sample rate or channels")

    def seek(self, frames: int) -> int:
        """Skip the first ``frames`` samples per channel without decoding them, where the format
        seeks exactly (``SEEKABLE``); call before :meth:`blocks`.

        Args:
            frames: samples per channel to skip.

        Returns:
            The samples skipped: ``frames`` (at most the file's length), or 0 for formats that
            must be decoded from their start.
        """
        if self._sound_file is None or self._sound_file.format not in SEEKABLE or frames <= 0:
            return 0
        assert self.frames is not None
        skipped = min(frames, self.frames)
        try:
            self._sound_file.seek(skipped)
        except (sf.SoundFileError, RuntimeError) as exc:
            raise AudioFileError(f"{self.name}: corrupt audio ({exc})") from None
        self._skipped += skipped
        return skipped

    def blocks(self, block_size: int) -> Iterator[np.ndarray]:
        """Decode the file block by block, from where :meth:`seek` left it.

        Args:
            block_size: samples per channel per block (positive).

        Yields:
            float32 blocks ``[channels, block_size]``; the last one may be shorter.

        Raises:
            ValueError: ``block_size`` is not positive.
            AudioFileError: the file is corrupt, holds no samples, or NaN/infinite ones.
        """
        if block_size <= 0:
            raise ValueError(f"block_size must be positive, got {block_size}")
        total = 0
        try:
            for block in rebatch(self._decode(block_size), block_size):
                if not np.isfinite(block).all():
                    raise AudioFileError(f"{self.name}: contains NaN or infinite samples")
                total += block.shape[1]
                yield block
        except (sf.SoundFileError, RuntimeError, av.FFmpegError, OSError) as exc:
            raise AudioFileError(f"{self.name}: corrupt audio ({exc})") from None
        if total == 0 and not self._skipped:  # after a seek, the caller tells an offset past the end
            raise AudioFileError(f"{self.name}: contains no audio samples")

    def _decode(self, block_size: int) -> Iterator[np.ndarray]:
        if self._sound_file is not None:
            while True:
                block = self._sound_file.read(block_size, dtype="float32", always_2d=True)
                if not len(block):
                    return
                yield block.T
        assert self._container is not None
        stream = self._container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp", layout=stream.layout, rate=self.sample_rate)
        for packet in self._container.demux(stream):
            for frame in packet.decode():
                for converted in resampler.resample(frame):
                    yield converted.to_ndarray()
        for converted in resampler.resample(None):
            yield converted.to_ndarray()

    def close(self) -> None:
        """Release the file (idempotent)."""
        for resource in (self._sound_file, self._container, self._spool):
            if resource is not None:
                resource.close()
        self._sound_file = self._container = self._spool = None

    def __enter__(self) -> AudioReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def read_audio(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """Read a whole file at its own rate and channel count.

    Args:
        path: the file, or ``"-"`` for standard input.

    Returns:
        float32 audio ``[channels, samples]`` and its sample rate in Hz.

    Raises:
        AudioFileError: missing, unreadable, corrupt or empty file.
    """
    with AudioReader(path) as reader:
        blocks = list(reader.blocks(1 << 18))
        return np.concatenate(blocks, axis=1), reader.sample_rate


class AudioWriter(CommitOnExit):
    """Writes an audio file block by block; the file appears only on :meth:`commit`.

    Used as a context manager, it commits on normal exit and discards on an exception.

    Args:
        path: ``.wav`` or ``.flac`` destination, or ``"-"`` for a WAV stream on stdout.
        sample_rate: sample rate in Hz.
        channels: channel count.
        subtype: libsndfile subtype (e.g. ``"PCM_16"``); defaults to FLOAT for WAV and
            PCM_24 for FLAC.
        overwrite: replace an existing file (see :class:`~fastencodec.io.atomic.AtomicOutput`).

    Attributes:
        name: the path, or ``"<stdout>"``.
        channels: channel count.
        clipped: samples clipped to [-1, 1] so far (PCM subtypes).

    Raises:
        ValueError: a rate or channel count that is not a positive integer, or a subtype the
            format does not have.
        AudioFileError: not ``.wav``/``.flac``, or the file cannot be created.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        sample_rate: int,
        channels: int,
        subtype: str | None = None,
        overwrite: bool = True,
    ) -> None:
        arrays.bounded_int(sample_rate, "sample_rate")
        arrays.bounded_int(channels, "channels")
        self.name = "<stdout>" if path == STDIO else os.fspath(path)
        suffix = ".wav" if path == STDIO else Path(self.name).suffix.lower()
        if suffix not in _FORMATS:
            raise AudioFileError(f"{self.name}: output must be .wav or .flac")
        file_format, default_subtype = _FORMATS[suffix]
        self._subtype = subtype or default_subtype
        if not sf.check_format(file_format, self._subtype):
            raise ValueError(f"subtype {self._subtype} is not available for {file_format}")
        self.channels = channels
        self.clipped = 0  # samples clipped to [-1, 1] so far (PCM subtypes)
        self._output = AtomicOutput(path, overwrite)
        try:
            self._file = sf.SoundFile(
                self._output.file,
                "w",
                samplerate=sample_rate,
                channels=channels,
                subtype=self._subtype,
                format=file_format,
            )
        except (OSError, sf.SoundFileError, RuntimeError) as exc:
            self._output.discard()
            raise AudioFileError(f"{self.name}: cannot write ({exc})") from None

    @property
    def subtype(self) -> str:
        """The libsndfile subtype in use, e.g. ``"FLOAT"`` or ``"PCM_24"``."""
        return self._subtype

    def write(self, block: np.ndarray) -> None:
        """Append samples.

        Args:
            block: float audio ``[channels, samples]`` at the writer's sample rate.

        Raises:
            ValueError: another shape, or NaN/infinite samples.
        """
        block = np.asarray(block, dtype=np.float32)
        if block.ndim != 2 or block.shape[0] != self.channels:
            raise ValueError(f"block must have shape [{self.channels}, samples], got {block.shape}")
        if not np.isfinite(block).all():
            raise ValueError("audio contains NaN or infinite samples")
        if self._subtype not in _FLOAT_SUBTYPES:
            self.clipped += int(np.count_nonzero(np.abs(block) > 1.0))
            block = np.clip(block, -1.0, 1.0)
        self._file.write(block.T)

    def commit(self) -> None:
        """Finish the file and move it into place (or copy it to stdout).

        Raises:
            AudioFileError: see :meth:`fastencodec.io.atomic.AtomicOutput.commit`.
        """
        self._file.close()
        self._output.commit()

    def discard(self) -> None:
        """Drop what was written (idempotent)."""
        if not self._file.closed:
            self._file.close()
        self._output.discard()


def write_audio(path: str | os.PathLike[str], audio: np.ndarray, sample_rate: int, subtype: str | None = None) -> None:
    """Write a whole audio file atomically (see :class:`AudioWriter`; an existing file is replaced).

    Args:
        path: ``.wav`` or ``.flac`` destination, or ``"-"`` for a WAV stream on stdout.
        audio: float audio ``[channels, samples]``.
        sample_rate: in Hz.
        subtype: libsndfile subtype (default: FLOAT for WAV, PCM_24 for FLAC).

    Raises:
        ValueError: another shape, NaN/infinite samples, a bad rate or subtype.
        AudioFileError: the file cannot be written.
    """
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 2 or audio.shape[0] == 0:
        raise ValueError(f"audio must have shape [channels, samples], got {audio.shape}")
    with AudioWriter(path, sample_rate, audio.shape[0], subtype) as writer:
        writer.write(audio)


def to_channels(audio: np.ndarray, channels: int) -> np.ndarray:
    """NumPy audio to ``channels`` channels by the rule of :func:`fastencodec.arrays.to_channels`.

    Equal counts return ``audio`` itself; mono is duplicated into every channel; any other
    conversion averages all channels to mono first (stereo to mono is the mean; 5.1 to stereo
    is that mono mix in both channels, at the cost of the stereo image).

    Args:
        audio: ``[C, samples]``.
        channels: the channel count wanted (positive).

    Returns:
        ``[channels, samples]``, C-contiguous unless it is ``audio`` itself.

    Raises:
        ValueError: ``channels`` is not positive, or ``audio`` is not ``[C, samples]`` with C > 0.
    """
    if channels <= 0:
        raise ValueError(f"channels must be positive, got {channels}")
    if audio.ndim != 2 or audio.shape[0] == 0:
        raise ValueError(f"audio must have shape [channels, samples], got {audio.shape}")
    if audio.shape[0] == channels:
        return audio
    return np.ascontiguousarray(arrays.to_channels(torch.from_numpy(audio), channels).numpy())


def _check_input_path(path: Path) -> None:
    if not path.exists():
        raise AudioFileError(f"{path}: no such file")
    if path.is_dir():
        raise AudioFileError(f"{path}: is a directory")
    try:
        empty = path.stat().st_size == 0
    except OSError as exc:
        raise AudioFileError(f"{path}: cannot read ({exc})") from None
    if empty:
        raise AudioFileError(f"{path}: file is empty")
    if not os.access(path, os.R_OK):
        raise AudioFileError(f"{path}: permission denied")


def _spool_stdin() -> BinaryIO:
    spool = tempfile.TemporaryFile()
    shutil.copyfileobj(sys.stdin.buffer, spool, COPY_BLOCK)
    if spool.tell() == 0:
        spool.close()
        raise AudioFileError("<stdin>: no data")
    spool.seek(0)
    return spool


def rebatch(pieces: Iterable[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """Regroup arrays of any lengths into blocks of one size.

    Args:
        pieces: arrays ``[C, n]`` (any ``n``), joined along the last axis.
        size: samples per block.

    Yields:
        Blocks ``[C, size]``; the last may be shorter.
    """
    pending: list[np.ndarray] = []
    held = 0
    for piece in pieces:
        pending.append(piece)
        held += piece.shape[1]
        if held < size:
            continue
        joined = np.concatenate(pending, axis=1)
        whole = held - held % size
        for start in range(0, whole, size):
            yield np.ascontiguousarray(joined[:, start : start + size])
        pending = [joined[:, whole:]]
        held -= whole
    if held:
        yield np.concatenate(pending, axis=1)
