"""Reading and writing audio files as float32 arrays of shape [channels, samples].

Reading tries libsndfile (through ``soundfile``: WAV, FLAC, Ogg Vorbis/Opus, MP3, AIFF, ...)
first and falls back to FFmpeg (through PyAV: M4A/AAC and anything else FFmpeg decodes).
The path ``"-"`` reads standard input, which is first copied to an anonymous temporary file
so both libraries can seek in it.

Writing supports ``.wav`` (32-bit float by default: lossless with respect to the decoder
output, no clipping) and ``.flac`` (24-bit PCM by default); PCM subtypes clip samples to
[-1, 1]. Files (audio, and any binary output through ``AtomicOutput``) are written to a
temporary file in the destination directory and renamed into place, so an interrupted write
never leaves a partial file. The path ``"-"`` writes a WAV stream to standard output.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, TypeVar

import av
import numpy as np
import soundfile as sf
import torch

from fastencodec import arrays

STDIO = "-"
_FORMATS = {".wav": ("WAV", "FLOAT"), ".flac": ("FLAC", "PCM_24")}
_FLOAT_SUBTYPES = {"FLOAT", "DOUBLE"}
_COPY_BLOCK = 1 << 20
SEEKABLE = frozenset({"WAV", "WAVEX", "W64", "RF64", "FLAC", "AIFF", "CAF", "AU"})
"""libsndfile formats whose seeks land on the exact sample (PCM and FLAC); other formats (MP3,
Ogg, FFmpeg's) are decoded from their start when an offset is asked for."""


class AudioFileError(ValueError):
    """An audio file is missing, unreadable, corrupt, empty or cannot be written."""


class AudioReader:
    """An open audio file, read block by block.

    Attributes:
        name: the path, or ``"<stdin>"``.
        sample_rate: sample rate in Hz.
        channels: channel count.
        frames: length in samples per channel, or None when the decoder cannot tell ahead.
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
        """An audio file already open for binary reading (seekable), e.g. bytes in a temporary file."""
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
        """Yield float32 blocks [channels, block_size] (from where :meth:`seek` left the file); the
        last one may be shorter.

        Raises:
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
    """Read a whole file (``"-"``: stdin); returns float32 [channels, samples] and the rate in Hz."""
    with AudioReader(path) as reader:
        blocks = list(reader.blocks(1 << 18))
        return np.concatenate(blocks, axis=1), reader.sample_rate


_Output = TypeVar("_Output", bound="_CommitOnExit")


class _CommitOnExit:
    """A ``with`` block that calls the subclass's ``commit()`` on a normal exit and its
    ``discard()`` on an exception."""

    def __enter__(self: _Output) -> _Output:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


class AtomicOutput(_CommitOnExit):
    """A binary output file that appears at ``path`` only on :meth:`commit`.

    The bytes go to a temporary file next to ``path`` (created with the usual umask
    permissions), renamed over ``path`` on commit; for ``"-"`` they go to an anonymous
    temporary file, copied to standard output on commit. :meth:`discard` (or leaving the
    ``with`` block with an exception) removes them, so no partial output is ever left.

    Attributes:
        name: the path, or ``"<stdout>"``.
        file: the seekable binary file object to write to.

    Raises:
        AudioFileError: the temporary file cannot be created (e.g. the folder is missing).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._to_stdout = path == STDIO
        self.name = "<stdout>" if self._to_stdout else os.fspath(path)
        self._temp_path: str | None = None
        try:
            if self._to_stdout:
                self.file: BinaryIO = tempfile.TemporaryFile()
            else:
                self._temp_path = _create_sibling_temp(Path(self.name))
                self.file = open(self._temp_path, "w+b")
        except OSError as exc:
            self.discard()
            raise AudioFileError(f"{self.name}: cannot write ({exc})") from None

    def commit(self) -> None:
        """Close the file and move it into place (or copy it to stdout)."""
        try:
            if self._to_stdout:
                self.file.seek(0)
                shutil.copyfileobj(self.file, sys.stdout.buffer, _COPY_BLOCK)
                sys.stdout.buffer.flush()
                self.file.close()
            else:
                self.file.close()
                assert self._temp_path is not None
                os.replace(self._temp_path, self.name)
                self._temp_path = None
        except OSError as exc:
            self.discard()
            raise AudioFileError(f"{self.name}: cannot write ({exc})") from None

    def discard(self) -> None:
        """Close and delete what was written (idempotent)."""
        file = getattr(self, "file", None)
        if file is not None:
            file.close()
        if self._temp_path is not None:
            Path(self._temp_path).unlink(missing_ok=True)
            self._temp_path = None


class AudioWriter(_CommitOnExit):
    """Writes an audio file block by block; the file appears only on :meth:`commit`.

    Used as a context manager, it commits on normal exit and discards on an exception.
    ``clipped`` counts the samples clipped to [-1, 1] (PCM subtypes) so far; ``subtype`` is the
    subtype in use.

    Args:
        path: ``.wav`` or ``.flac`` destination, or ``"-"`` for a WAV stream on stdout.
        sample_rate: sample rate in Hz.
        channels: channel count.
        subtype: libsndfile subtype (e.g. ``"PCM_16"``); defaults to FLOAT for WAV and
            PCM_24 for FLAC.
    """

    def __init__(
        self, path: str | os.PathLike[str], sample_rate: int, channels: int, subtype: str | None = None
    ) -> None:
        if type(sample_rate) is not int or sample_rate <= 0:
            raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")
        if type(channels) is not int or channels <= 0:
            raise ValueError(f"channels must be a positive integer, got {channels!r}")
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
        self._output = AtomicOutput(path)
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
        return self._subtype

    def write(self, block: np.ndarray) -> None:
        """Append samples: float array [channels, n]."""
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
        """Finish the file and move it into place (or copy it to stdout)."""
        self._file.close()
        self._output.commit()

    def discard(self) -> None:
        """Drop what was written (idempotent)."""
        if not self._file.closed:
            self._file.close()
        self._output.discard()


def write_audio(path: str | os.PathLike[str], audio: np.ndarray, sample_rate: int, subtype: str | None = None) -> None:
    """Write float audio [channels, samples] at ``sample_rate`` Hz atomically (see AudioWriter)."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 2 or audio.shape[0] == 0:
        raise ValueError(f"audio must have shape [channels, samples], got {audio.shape}")
    with AudioWriter(path, sample_rate, audio.shape[0], subtype) as writer:
        writer.write(audio)


def to_channels(audio: np.ndarray, channels: int) -> np.ndarray:
    """Convert audio [C, N] to [channels, N] by the rule of :func:`fastencodec.arrays.to_channels`:
    equal counts return ``audio`` itself; mono is duplicated into every channel; any other
    conversion averages all channels to mono first (stereo to mono is the mean; 5.1 to
    stereo keeps the centre channel, at the cost of the stereo image).
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
    shutil.copyfileobj(sys.stdin.buffer, spool, _COPY_BLOCK)
    if spool.tell() == 0:
        spool.close()
        raise AudioFileError("<stdin>: no data")
    spool.seek(0)
    return spool


def _create_sibling_temp(path: Path) -> str:
    """Create an empty temporary file next to ``path`` with the usual (umask) permissions."""
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    return str(temp)


def rebatch(pieces: Iterable[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """Regroup [C, n] arrays of any lengths (along the last axis) into [C, size] blocks; the last may be shorter."""
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
