"""Atomic, no-clobber output files: bytes that appear at their destination only once complete.

An output is written to a temporary file in the destination directory and renamed into place on
commit, so an interrupted write never leaves a partial file; ``"-"`` (``STDIO``) buffers the bytes
in an anonymous temporary file and copies them to standard output on commit.

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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, TypeVar

from fastencodec.io.errors import AudioFileError

STDIO = "-"
"""The path that names standard input (readers) or standard output (writers)."""
COPY_BLOCK = 1 << 20
"""Bytes per copy between a temporary file and a standard stream."""
STALE_TEMP_SECONDS = 60.0
"""Age (seconds since last written) after which an unlocked temporary output file is stale."""
_CLEANUP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))
_PENDING_TEMPS: set[str] = set()
"""Temporary output files of this process not yet committed or discarded (removed on SIGTERM/SIGHUP)."""
_HOLDS = [0]
"""Open :func:`signal_cleanup` contexts (main thread only)."""

try:
    import fcntl
except ImportError:  # not POSIX: no locks, so stale temporary files are left (and ignored)
    fcntl = None  # type: ignore[assignment]


_Output = TypeVar("_Output", bound="CommitOnExit")


class CommitOnExit:
    """Base of the outputs used as ``with`` blocks: a normal exit calls the subclass's
    ``commit()``, an exception (Ctrl-C included) its ``discard()``."""

    def __enter__(self: _Output) -> _Output:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


class AtomicOutput(CommitOnExit):
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
                temp = _sibling_temp_name(Path(self.name))
                _track_temp(temp)  # first, so that a signal arriving once the file exists removes it
                try:
                    self.file = _create_locked(temp)
                except OSError:
                    _untrack_temp(temp)
                    raise
                self._temp_path = temp
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
                shutil.copyfileobj(self.file, sys.stdout.buffer, COPY_BLOCK)
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


@contextmanager
def signal_cleanup() -> Iterator[None]:
    """While inside, SIGTERM/SIGHUP (with their default disposition) remove the pending temporary
    files of every ``AtomicOutput``, also those opened on other threads, which cannot install the
    handler themselves. Enter it on the main thread before starting threads that write outputs."""
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("signal_cleanup() must be entered on the main thread")
    installed = []
    for signum in _CLEANUP_SIGNALS:
        if signal.getsignal(signum) is signal.SIG_DFL:
            signal.signal(signum, _on_fatal_signal)
            installed.append(signum)
    _HOLDS[0] += 1
    try:
        yield
    finally:
        _HOLDS[0] -= 1
        if not _HOLDS[0] and not _PENDING_TEMPS:
            for signum in installed:
                if signal.getsignal(signum) is _on_fatal_signal:
                    signal.signal(signum, signal.SIG_DFL)


def _untrack_temp(temp: str) -> None:
    """Forget ``temp``; the last one gone puts the default dispositions back (unless a
    :func:`signal_cleanup` holds them)."""
    _PENDING_TEMPS.discard(temp)
    if not _PENDING_TEMPS and not _HOLDS[0] and threading.current_thread() is threading.main_thread():
        for signum in _CLEANUP_SIGNALS:
            if signal.getsignal(signum) is _on_fatal_signal:
                signal.signal(signum, signal.SIG_DFL)


def _sibling_temp_name(path: Path) -> str:
    """A fresh temporary file name next to ``path``: ``.NAME.XXXXXXXX.tmp``."""
    return str(path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp"))


def _create_locked(temp: str) -> BinaryIO:
    """Create and open the empty file ``temp`` (it must not exist) with the usual (umask)
    permissions, holding an exclusive ``flock`` on it while it is open (POSIX)."""
    fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return os.fdopen(fd, "w+b")


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
