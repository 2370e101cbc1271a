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

Temporary files are named ``.NAME.XXXXXXXX.tmp`` (8 hex digits) beside ``NAME``. An exception,
Ctrl-C, SIGTERM or SIGHUP removes them (the two signals, when their handlers are the default
ones, remove the pending temporary files and then end the process as the signal would). Only
``kill -9``, a crash or a power cut can leave one behind: its writer held an ``flock`` on it,
which the kernel drops when the process dies, so the next output to the same ``NAME`` removes
every such file that is unlocked and untouched for ``STALE_TEMP_SECONDS``; any other reader can
ignore them (hidden, and never at the destination's name).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import stat
import sys
import tempfile
import threading
import time
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
STALE_TEMP_SECONDS = 60.0
"""Age (seconds since last written) after which an unlocked temporary output file is stale."""
_CLEANUP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))
_PENDING_TEMPS: set[str] = set()
"""Temporary output files of this process not yet committed or discarded (removed on SIGTERM/SIGHUP)."""

try:
    import fcntl
except ImportError:  # not POSIX: no locks, so stale temporary files are left (and ignored)
    fcntl = None  # type: ignore[assignment]
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
    permissions, locked while written), which commit flushes to disk, moves to ``path`` and
    follows with a sync of the directory; for ``"-"`` they go to an anonymous temporary file,
    copied to standard output on commit. :meth:`discard` (or leaving the ``with`` block with an
    exception, Ctrl-C, SIGTERM or SIGHUP) removes them, so no partial output is ever left (see
    the module docstring for ``kill -9``).

    Args:
        path: destination file, or ``"-"`` for standard output.
        overwrite: replace an existing ``path`` on commit, keeping its permission bits;
            without it, commit refuses when ``path`` exists by then (checked by the same
            system call that creates it, so of two concurrent writers only one succeeds).

    Attributes:
        name: the path, or ``"<stdout>"``.
        file: the seekable binary file object to write to.

    Raises:
        AudioFileError: the temporary file cannot be created (e.g. the folder is missing).
    """

    def __init__(self, path: str | os.PathLike[str], overwrite: bool = True) -> None:
        self._to_stdout = path == STDIO
        self.name = "<stdout>" if self._to_stdout else os.fspath(path)
        self._overwrite = overwrite
        self._temp_path: str | None = None
        try:
            if self._to_stdout:
                self.file: BinaryIO = tempfile.TemporaryFile()
            else:
                _remove_stale_temps(Path(self.name))
                self._temp_path, self.file = _create_sibling_temp(Path(self.name))
                _track_temp(self._temp_path)
        except OSError as exc:
            self.discard()
            raise AudioFileError(f"{self.name}: cannot write ({exc})") from None

    def commit(self) -> None:
        """Close the file and move it into place (or copy it to stdout).

        Raises:
            AudioFileError: the file cannot be written or moved, or ``path`` exists by now
                (without ``overwrite``).
        """
        try:
            if self._to_stdout:
                self.file.seek(0)
                shutil.copyfileobj(self.file, sys.stdout.buffer, _COPY_BLOCK)
                sys.stdout.buffer.flush()
                self.file.close()
            else:
                assert self._temp_path is not None
                self.file.flush()
                if self._overwrite:
                    _keep_mode(self.name, self.file.fileno())
                os.fsync(self.file.fileno())
                if self._overwrite:
                    os.replace(self._temp_path, self.name)
                else:
                    _link_new(self._temp_path, self.name)
                _untrack_temp(self._temp_path)
                self._temp_path = None
                self.file.close()
                _fsync_directory(Path(self.name).parent)
        except FileExistsError:
            self.discard()
            raise AudioFileError(f"{self.name}: already exists (use -f/--force to overwrite)") from None
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
            _untrack_temp(self._temp_path)
            self._temp_path = None


def _keep_mode(path: str, fd: int) -> None:
    """Give the file ``fd`` the permission bits of an existing ``path`` (if any)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    os.fchmod(fd, stat.S_IMODE(mode))


def _link_new(temp: str, path: str) -> None:
    """Move ``temp`` to ``path`` only if ``path`` does not exist (FileExistsError otherwise).

    A hard link fails atomically on an existing name; on file systems without hard links
    the existence check and the rename are two steps (a concurrent writer may slip between).
    """
    try:
        os.link(temp, path)
    except FileExistsError:
        raise
    except OSError:  # no hard links here (FAT, some network or FUSE file systems)
        if os.path.lexists(path):
            raise FileExistsError(path) from None
        os.replace(temp, path)
        return
    os.unlink(temp)


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (where the platform lets a directory be synced)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _on_fatal_signal(signum: int, frame: object) -> None:
    """SIGTERM/SIGHUP with the default disposition: remove pending temporary files, then die of the signal."""
    for temp in list(_PENDING_TEMPS):
        try:
            os.unlink(temp)
        except OSError:
            pass
    _PENDING_TEMPS.clear()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _track_temp(temp: str) -> None:
    """Register ``temp`` for removal on SIGTERM/SIGHUP; installs the handler only over a default
    disposition, and only from the main thread (where Python runs signal handlers)."""
    _PENDING_TEMPS.add(temp)
    if threading.current_thread() is threading.main_thread():
        for signum in _CLEANUP_SIGNALS:
            if signal.getsignal(signum) is signal.SIG_DFL:
                signal.signal(signum, _on_fatal_signal)


def _untrack_temp(temp: str) -> None:
    """Forget ``temp``; the last one gone puts the default dispositions back."""
    _PENDING_TEMPS.discard(temp)
    if not _PENDING_TEMPS and threading.current_thread() is threading.main_thread():
        for signum in _CLEANUP_SIGNALS:
            if signal.getsignal(signum) is _on_fatal_signal:
                signal.signal(signum, signal.SIG_DFL)


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
        overwrite: replace an existing file (see :class:`AtomicOutput`).
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


def _create_sibling_temp(path: Path) -> tuple[str, BinaryIO]:
    """Create and open an empty temporary file next to ``path`` with the usual (umask)
    permissions, holding an exclusive ``flock`` on it while it is open (POSIX)."""
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return str(temp), os.fdopen(fd, "w+b")


def _remove_stale_temps(path: Path) -> None:
    """Remove ``path``'s temporary files left by dead writers: unlocked and not written for
    ``STALE_TEMP_SECONDS`` (a live writer holds its file's lock)."""
    if fcntl is None:
        return
    pattern = re.compile(rf"\.{re.escape(path.name)}\.[0-9a-f]{{8}}\.tmp")
    try:
        entries = [e for e in os.scandir(path.parent if str(path.parent) else ".") if pattern.fullmatch(e.name)]
    except OSError:
        return
    for entry in entries:
        try:
            fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            info = os.fstat(fd)
            if stat.S_ISREG(info.st_mode) and time.time() - info.st_mtime > STALE_TEMP_SECONDS:
                os.unlink(entry.path)
        except OSError:
            pass  # locked by a live writer, or gone
        finally:
            os.close(fd)


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
