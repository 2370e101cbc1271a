"""The model's work in a tokenizing process, on one thread beside the loop that feeds it.

``Coder`` codes whole items (collected in a :class:`~fastencodec.corpus.batching.LengthPool`)
and long items' pieces (through :class:`~fastencodec.corpus.batching.LongItem`) on its own
thread, so that audio keeps arriving from the decoding workers, and shards are written, while
the device codes. The thread takes the whole pool each time it is free: a busy device gets
big length-sorted groups, an idle one gets items as soon as they come. Memory is bounded:
:meth:`Coder.put` waits while ``window`` samples per channel are waiting, so at most two
windows (one waiting, one being coded) are held.

Codes do not depend on the groups (each item's codes are those it gets alone), so shards do
not depend on timing, worker count or window.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from types import TracebackType

import numpy as np
import torch

from fastencodec.codec import EnCodec
from fastencodec.corpus.batching import Coded, LengthPool, LongItem, encode_group
from fastencodec.corpus.workers import Piece, Whole


class Coder:
    """Codes ``Whole`` and ``Piece`` messages on one thread; results come back from
    :meth:`put`, :meth:`ready` and :meth:`close`, in any order.

    Use it as a context manager: leaving the block on an error stops the thread.

    Args:
        codec: the model.
        bandwidth: kbps.
        window: samples per channel waiting before :meth:`put` blocks (the pool's look-ahead).

    Attributes:
        busy: seconds the thread has spent coding.
    """

    def __init__(self, codec: EnCodec, bandwidth: float, window: int) -> None:
        self.codec = codec
        self.bandwidth = bandwidth
        self.num_codebooks = codec.codebooks_for(bandwidth)
        if window <= 0:
            raise ValueError(f"window must be positive, got {window}")
        self.window = window
        self._pool = LengthPool()
        self._pieces: collections.deque[tuple[int, np.ndarray | None, bool]] = collections.deque()
        self._piece_samples = 0
        self._streaming: set[int] = set()  # items with pieces put and their last piece not yet
        self._streams: dict[int, LongItem] = {}  # the thread's own
        self._done: list[Coded] = []
        self._error: BaseException | None = None
        self._closed = self._stopped = False
        self.busy = 0.0  # seconds spent coding
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._work, name="fastencodec-coder", daemon=True)
        self._thread.start()

    def __enter__(self) -> Coder:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        if kind is not None:
            self.stop()

    def put(self, message: Whole | Piece) -> list[Coded]:
        """Queue a message's audio; waits while a window of audio is waiting. Returns the items
        coded since the last call.

        Raises:
            Exception: what the coding thread raised.
        """
        with self._changed:
            while self._waiting() >= self.window and self._error is None:
                self._changed.wait()
            self._check()
            if isinstance(message, Whole):
                self._pool.add(message.index, message.audio)
            else:
                self._pieces.append((message.index, message.audio, message.last))
                self._piece_samples += message.audio.shape[1]
                (self._streaming.discard if message.last else self._streaming.add)(message.index)
            self._changed.notify_all()
            return self._take_done()

    def drop(self, index: int) -> None:
        """Forget the pieces of item ``index`` put so far (it failed, or comes again from the start)."""
        with self._changed:
            if index in self._streaming:
                self._streaming.discard(index)
                self._pieces.append((index, None, True))
                self._changed.notify_all()

    def ready(self) -> list[Coded]:
        """The items coded since the last call (maybe none); does not wait.

        Raises:
            Exception: what the coding thread raised.
        """
        with self._changed:
            self._check()
            return self._take_done()

    def close(self) -> list[Coded]:
        """Code everything queued, end the thread; returns the items coded since the last call.

        Raises:
            Exception: what the coding thread raised.
        """
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._thread.join()
        with self._changed:
            self._check()
            return self._take_done()

    def stop(self) -> None:
        """End the thread after the work it is doing now, dropping what is queued."""
        with self._changed:
            self._stopped = True
            self._changed.notify_all()
        self._thread.join()

    def _waiting(self) -> int:
        return self._pool.held + self._piece_samples

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def _take_done(self) -> list[Coded]:
        done, self._done = self._done, []
        return done

    def _next_job(self) -> tuple[str, object] | None:
        """The next piece (in the order put), else the whole pool; None when closed and empty."""
        with self._changed:
            while not (self._pieces or len(self._pool) or self._closed or self._stopped):
                self._changed.wait()
            if self._stopped:
                return None
            job: tuple[str, object] | None = None
            if self._pieces:
                index, audio, last = self._pieces.popleft()
                self._piece_samples -= 0 if audio is None else audio.shape[1]
                job = ("piece", (index, audio, last))
            elif len(self._pool):
                job = ("group", self._pool.take())
            self._changed.notify_all()
            return job

    def _work(self) -> None:
        device = self.codec.engine.device
        with torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext():
            while (job := self._next_job()) is not None:
                start = time.perf_counter()
                try:
                    done = self._run(*job)
                except BaseException as exc:  # handed to the feeding thread
                    with self._changed:
                        self._error = exc
                        self._changed.notify_all()
                    return
                with self._changed:
                    self.busy += time.perf_counter() - start
                    self._done += done
                    self._changed.notify_all()

    def _run(self, kind: str, job: object) -> list[Coded]:
        if kind == "group":
            return encode_group(self.codec, self.num_codebooks, job)  # type: ignore[arg-type]
        index, audio, last = job  # type: ignore[misc]
        if audio is None:  # dropped
            self._streams.pop(index, None)
            return []
        stream = self._streams.get(index)
        if stream is None:
            stream = self._streams[index] = LongItem(self.codec, self.bandwidth, index)
        stream.push(audio)
        return [self._streams.pop(index).finish()] if last else []
