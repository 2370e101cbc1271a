"""Audio decoding in worker processes: items in, conformed audio out, through one pair of pipes
per worker.

Each item becomes messages: ``Whole`` (the item's audio, for items of at most ``piece_samples``
samples at the model's rate), or a run of ``Piece``s of ``piece_samples`` samples (the last
shorter) for longer items, so a 3-hour file never sits whole in memory; ``Failed`` says why an
item could not be read. A worker blocks on its pipe until its last message is read, so memory
stays below about ``workers * piece_samples * channels * 4`` bytes however long the files are.
"""

from __future__ import annotations

import collections
import contextlib
import multiprocessing
import multiprocessing.process
import signal
import sys
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from multiprocessing.connection import Connection, wait
from typing import NamedTuple

import numpy as np

from fastencodec.corpus.sources import Item
from fastencodec.io.audio import AudioFileError, AudioReader
from fastencodec.io.conform import conformed_blocks

_POLL_SECONDS = 1.0

DECODE_TIMEOUT = 120.0
"""Default seconds a decoding process may spend on an item without sending any audio or sign of
progress before it is stopped as hung (a decoder looping on a corrupt file, a stalled network mount)."""

_HEARTBEAT_SECONDS = 5.0
"""Most seconds between a worker's messages while it reads input (``Alive`` when it has no audio to
send yet, e.g. while decoding its way to a segment's offset); a quarter of a shorter timeout."""

_KILL_GRACE_SECONDS = 5.0
"""Seconds a killed worker gets to end before it is given up (a process stuck in the kernel)."""


class Whole(NamedTuple):
    index: int
    audio: np.ndarray  # float32 [channels, samples], samples <= piece_samples


class Piece(NamedTuple):
    index: int
    audio: np.ndarray  # float32 [channels, piece_samples], the last piece of an item shorter
    last: bool


class Failed(NamedTuple):
    index: int
    reason: str


class Alive(NamedTuple):
    """A worker's sign of progress on an item that has no audio to send yet (not handed on)."""


Message = Whole | Piece | Failed


def item_messages(
    index: int,
    item: Item,
    sample_rate: int,
    channels: int,
    piece_samples: int,
    progress: Callable[[int], None] | None = None,
) -> Iterator[Message]:
    """The messages of one item (see the module docstring); read errors become ``Failed``.

    The audio is that of ``fastencodec compress`` (``conformed_blocks``: decoded, cut to the
    item's segment, mixed and resampled to ``sample_rate`` Hz and ``channels``); ``progress``
    is called with the input samples of each block read.
    """
    pending: list[np.ndarray] = []
    held, pieces = 0, 0
    try:
        with AudioReader(item.source) as reader:
            blocks = conformed_blocks(
                reader, sample_rate, channels, offset=item.offset, duration=item.duration, progress=progress
            )
            for block in blocks:
                pending.append(block)
                held += block.shape[1]
                if held > piece_samples:  # an item of exactly piece_samples stays whole
                    joined = np.concatenate(pending, axis=1)
                    cut = (held - 1) // piece_samples * piece_samples  # keeps 1..piece_samples samples
                    for start in range(0, cut, piece_samples):
                        yield Piece(index, np.ascontiguousarray(joined[:, start : start + piece_samples]), False)
                        pieces += 1
                    pending, held = [joined[:, cut:]], held - cut
        audio = np.ascontiguousarray(np.concatenate(pending, axis=1))
    except (AudioFileError, ValueError, OSError, RuntimeError, MemoryError) as exc:
        yield Failed(index, str(exc) or exc.__class__.__name__)
        return
    yield Piece(index, audio, True) if pieces else Whole(index, audio)


class Retry(NamedTuple):
    """Item ``index``'s messages so far are void (its worker died): they come again from the start."""

    index: int


def decoded(
    items: Sequence[tuple[int, Item]],
    sample_rate: int,
    channels: int,
    piece_samples: int,
    workers: int,
    timeout: float | None = DECODE_TIMEOUT,
) -> Generator[Message | Retry, None, None]:
    """Messages of all ``(index, item)`` pairs: in order with ``workers=0`` (this process), else
    from ``workers`` processes (forkserver context where available, else spawn) as they come;
    an item's own messages always arrive in order.

    A worker that dies (killed, crashed in a decoder) is replaced by a fresh one; the item it
    was decoding is tried once more there (after a ``Retry`` if some of its pieces came
    already), and becomes ``Failed`` if that worker dies too. Its other items go to the next
    free workers. A worker that sends nothing for ``timeout`` seconds while it holds an item
    (None: never) is killed as hung and handled the same way; a worker that reads input without
    audio to send yet (decoding its way to a segment's offset) says so every few seconds. Only
    time spent waiting for the workers counts (including within a message), not time this
    generator is kept suspended by its consumer (while a worker is blocked sending to it).
    ``timeout`` does not apply with ``workers=0``.

    Raises:
        RuntimeError: workers keep dying without decoding anything.
    """
    if workers == 0:
        for index, item in items:
            yield from item_messages(index, item, sample_rate, channels, piece_samples)
        return
    with _Workers(sample_rate, channels, piece_samples, timeout) as pool:
        yield from pool.run(list(items), workers)


class _Worker(NamedTuple):
    process: multiprocessing.process.BaseProcess
    tasks: Connection  # this process's end: (index, item) tasks, None to stop
    results: Connection  # this process's end: messages
    assigned: collections.deque  # indices sent and not finished, in the order sent


class _Workers:
    """Decoding processes, each fed through its own pipes (no lock a killed process could hold),
    at most ``PREFETCH`` items ahead; what a worker sends waits in its pipe until read, so
    memory stays below about one message per worker."""

    PREFETCH = 2

    def __init__(self, sample_rate: int, channels: int, piece_samples: int, timeout: float | None = None) -> None:
        self.timeout = timeout
        heartbeat = None if timeout is None else min(_HEARTBEAT_SECONDS, timeout / 4)
        self.args = (sample_rate, channels, piece_samples, heartbeat)
        methods = multiprocessing.get_all_start_methods()
        self.context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
        if "forkserver" in methods:
            self.context.set_forkserver_preload(["fastencodec.corpus.workers"])
        self.live: dict[int, _Worker] = {}
        self._count = 0

    def __enter__(self) -> _Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        for worker in self.live.values():
            with contextlib.suppress(OSError):
                worker.tasks.send(None)
            worker.results.close()  # a worker blocked sending a message nobody reads gets a broken pipe
        deadline = time.monotonic() + _POLL_SECONDS  # one deadline for all, not one per worker
        for worker in self.live.values():
            worker.process.join(timeout=max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()  # SIGTERM would wait for a stopped process
                worker.process.join(timeout=_KILL_GRACE_SECONDS)  # one stuck in the kernel is left behind
            worker.tasks.close()
        self.live.clear()

    def start(self) -> int:
        """Start one worker; returns its key."""
        task_reader, task_writer = self.context.Pipe(duplex=False)
        result_reader, result_writer = self.context.Pipe(duplex=False)
        process = self.context.Process(target=_work, args=(task_reader, result_writer, *self.args), daemon=True)
        process.start()
        task_reader.close()  # the worker's ends: closed here, so that its death closes the pipes
        result_writer.close()
        self._count += 1
        self.live[self._count] = _Worker(process, task_writer, result_reader, collections.deque())
        return self._count

    def run(self, items: list[tuple[int, Item]], workers: int) -> Iterator[Message | Retry]:
        """The messages of ``items`` from ``workers`` processes (see :func:`decoded`)."""
        timeout = self.timeout
        todo = collections.deque(items)
        by_index = dict(items)
        deaths: dict[int, int] = {}
        streamed: set[int] = set()  # items some of whose pieces came
        state = {"remaining": len(items), "failures": 0}  # failures: deaths since an item last finished
        silent: dict[int, float] = collections.defaultdict(float)  # seconds waited on a busy worker since it sent
        hung: dict[int, float] = {}  # workers killed for silence: when
        poll = _POLL_SECONDS if timeout is None else min(_POLL_SECONDS, timeout / 4)  # silence is counted per poll

        def stop_hung(key: int) -> None:
            worker = self.live.get(key)
            if worker is not None:
                hung.setdefault(key, time.monotonic())
                worker.process.kill()  # its end is then seen as a death

        def receive(key: int) -> Message | Alive:
            """The worker's next message; a worker that stops within a message is killed after ``timeout``."""
            if timeout is None:
                return self.live[key].results.recv()
            timer = threading.Timer(timeout, stop_hung, (key,))
            timer.daemon = True
            timer.start()
            try:
                return self.live[key].results.recv()
            finally:
                timer.cancel()

        def feed(key: int) -> None:
            worker = self.live[key]
            while todo and len(worker.assigned) < self.PREFETCH:
                index, item = todo.popleft()
                worker.assigned.append(index)
                try:
                    worker.tasks.send((index, item))
                except OSError:  # it died: its items are handed out again when its end is seen
                    worker.assigned.pop()  # never started, so not the item it died on
                    todo.appendleft((index, item))
                    return

        def received(worker: _Worker, message: Message) -> None:
            if isinstance(message, Piece) and not message.last:
                streamed.add(message.index)
                return
            worker.assigned.popleft()
            streamed.discard(message.index)
            state["remaining"] -= 1
            state["failures"] = 0

        for _ in range(min(workers, len(items))):
            feed(self.start())
        while state["remaining"]:
            readers = {worker.results: key for key, worker in self.live.items()}
            ends = {worker.process.sentinel: key for key, worker in self.live.items()}
            dead = {key for key, when in list(hung.items()) if time.monotonic() - when > _KILL_GRACE_SECONDS}
            started = time.monotonic()
            ready = wait([*readers, *ends], timeout=poll)
            waited = time.monotonic() - started
            for key in set(self.live) - {readers.get(h) for h in ready}:  # type: ignore[call-overload]
                if timeout is not None and self.live[key].assigned and key not in hung:
                    silent[key] += waited
                    if silent[key] > timeout:
                        stop_hung(key)
            for handle in ready:
                if handle in ends:
                    dead.add(ends[handle])  # type: ignore[index]
                    continue
                key = readers[handle]  # type: ignore[index]
                if key in hung or key in dead:
                    continue  # killed: what it sent is void
                silent.pop(key, None)
                try:
                    message = receive(key)
                except (EOFError, OSError):
                    dead.add(key)
                    continue
                if isinstance(message, Alive):
                    continue
                received(self.live[key], message)
                feed(key)
                yield message
            for key in dead:
                worker = self.live.pop(key)
                while key not in hung:  # the whole messages it sent before it died (a killed one's are void)
                    try:
                        message = worker.results.recv() if worker.results.poll() else None
                    except (EOFError, OSError):
                        message = None
                    if message is None:
                        break
                    if not isinstance(message, Alive):
                        received(worker, message)
                        yield message
                worker.process.join(timeout=_KILL_GRACE_SECONDS)
                worker.tasks.close()
                worker.results.close()
                silent.pop(key, None)
                if hung.pop(key, None) is not None:
                    how = f"sent no audio for {timeout:g} s, stopped as hung"
                else:
                    how = _death(worker.process.exitcode)
                state["failures"] += 1
                if state["failures"] > 2 * workers + 2:
                    raise RuntimeError(f"audio decoding workers keep dying ({how}) without finishing an item")
                if worker.assigned:
                    suspect, *rest = worker.assigned  # the item it was decoding, then those sent ahead
                    todo.extendleft((index, by_index[index]) for index in reversed(rest))
                    if suspect in streamed:
                        streamed.discard(suspect)
                        yield Retry(suspect)
                    deaths[suspect] = deaths.get(suspect, 0) + 1
                    if deaths[suspect] == 1:
                        todo.appendleft((suspect, by_index[suspect]))  # first in the fresh worker
                    else:
                        state["remaining"] -= 1
                        yield Failed(suspect, f"the audio decoding process died twice on this item ({how})")
                if todo:
                    feed(self.start())  # first: the fresh worker takes the suspect
                    for other in list(self.live):
                        feed(other)  # workers left idle when the queue had emptied


def _death(exitcode: int | None) -> str:
    """How a process ended, in words: ``killed by SIGSEGV``, ``exit code 3``."""
    if exitcode is not None and exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"


def _work(
    tasks: Connection,
    results: Connection,
    sample_rate: int,
    channels: int,
    piece_samples: int,
    heartbeat: float | None,
) -> None:
    """Worker process: decode tasks until the ``None`` sentinel, sending ``Alive`` at least every
    ``heartbeat`` seconds while reading input (None: never); exits when the tokenizing process
    is gone (its ends of the pipes close)."""
    last = [time.monotonic()]

    def progress(_samples: int) -> None:
        if heartbeat is not None and time.monotonic() - last[0] >= heartbeat:
            results.send(Alive())
            last[0] = time.monotonic()

    try:
        import torch

        torch.set_num_threads(1)  # channel conversion only; the cores decode in parallel processes
        while (task := tasks.recv()) is not None:
            for message in item_messages(*task, sample_rate, channels, piece_samples, progress):
                results.send(message)
                last[0] = time.monotonic()
    except (EOFError, BrokenPipeError):
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
