"""Decoded audio received on a thread of its own and held for the model, which runs in the caller's thread.

``Feeder`` reads the decoding workers' messages on a background thread, so that audio keeps
arriving while the model codes, and hands them out as jobs: the next message of long items'
pieces and failures (in the order they came), else every whole item waiting, sorted by length,
as one group. A model that is busy gets big groups; an idle one gets items as soon as they
come. Memory is bounded: the thread stops reading while ``window`` samples per channel are
waiting, so the process holds at most about two windows (one waiting, one being coded).

Codes do not depend on the groups (each item's codes are those it gets alone), so shards do
not depend on timing, worker count or window.
"""

from __future__ import annotations

import collections
import contextlib
import threading
from collections.abc import Generator, Iterator
from types import TracebackType
from typing import NamedTuple

import numpy as np

from fastencodec.corpus.batching import LengthPool
from fastencodec.corpus.workers import Failed, Message, Piece, Retry, Whole


class Group(NamedTuple):
    """Whole items ``(index, audio [channels, samples])``, shortest first."""

    items: list[tuple[int, np.ndarray]]


Job = Group | Piece | Failed | Retry
"""What :meth:`Feeder.jobs` hands out: a group to code, the next piece of a long item, an item
that failed, or an item whose pieces so far are void."""


class _Stopped(Exception):
    """The consumer left: the reading thread ends."""


class Feeder:
    """Reads ``messages`` on a thread; :meth:`jobs` hands them out (see the module docstring).

    Use it as a context manager: leaving the block stops the thread (and, through the
    generator's ``close``, the decoding workers).

    Args:
        messages: the decoding workers' messages (``workers.decoded``).
        window: samples per channel waiting before the thread stops reading.
    """

    def __init__(self, messages: Generator[Message | Retry, None, None], window: int) -> None:
        if window <= 0:
            raise ValueError(f"window must be positive, got {window}")
        self.window = window
        self._messages = messages
        self._pool = LengthPool()
        self._ordered: collections.deque[Piece | Failed | Retry] = collections.deque()
        self._ordered_samples = 0
        self._ended = self._stopped = False
        self._error: BaseException | None = None
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, name="fastencodec-feeder", daemon=True)
        self._thread.start()

    def __enter__(self) -> Feeder:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def jobs(self) -> Iterator[Job]:
        """The jobs, until every message has been handed out.

        Raises:
            Exception: what reading the messages raised (e.g. workers that keep dying).
        """
        while True:
            with self._changed:
                while not (self._ordered or len(self._pool) or self._ended):
                    self._changed.wait()
                if self._error is not None:
                    raise self._error
                job: Job
                if self._ordered:
                    job = self._ordered.popleft()
                    self._ordered_samples -= job.audio.shape[1] if isinstance(job, Piece) else 0
                elif len(self._pool):
                    job = Group(self._pool.take())
                else:
                    return
                self._changed.notify_all()
            yield job

    def stop(self) -> None:
        """Stop reading (the thread ends at its next message or within a second) and drop what waits."""
        with self._changed:
            self._stopped = True
            self._changed.notify_all()
        self._thread.join(timeout=5.0)  # a worker stuck in a decoder must not hang the caller

    def _read(self) -> None:
        try:
            with contextlib.closing(self._messages):  # closing the generator stops the workers
                for message in self._messages:
                    self._put(message)
        except _Stopped:
            pass
        except BaseException as exc:  # handed to the consumer
            with self._changed:
                self._error = exc
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def _put(self, message: Message | Retry) -> None:
        with self._changed:
            while self._pool.held + self._ordered_samples >= self.window and not self._stopped:
                self._changed.wait()
            if self._stopped:
                raise _Stopped
            if isinstance(message, Whole):
                self._pool.add(message.index, message.audio)
            else:
                self._ordered.append(message)
                self._ordered_samples += message.audio.shape[1] if isinstance(message, Piece) else 0
            self._changed.notify_all()
