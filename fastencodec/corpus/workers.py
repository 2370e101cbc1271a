"""Audio decoding in worker processes: items in, conformed audio out through a bounded queue.

Each item becomes messages: ``Whole`` (the item's audio, for items of at most ``piece_samples``
samples at the model's rate), or a run of ``Piece``s of ``piece_samples`` samples (the last
shorter) for longer items, so a 3-hour file never sits whole in memory; ``Failed`` says why an
item could not be read. The results queue holds at most ``queue_size`` messages: memory stays
below ``queue_size * piece_samples * channels * 4`` bytes however long the files are.
"""

from __future__ import annotations

import multiprocessing
import queue
import sys
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np

from fastencodec.corpus.sources import Item
from fastencodec.io.audio import AudioFileError, AudioReader
from fastencodec.io.conform import conformed_blocks

_POLL_SECONDS = 1.0


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


Message = Whole | Piece | Failed


def item_messages(index: int, item: Item, sample_rate: int, channels: int, piece_samples: int) -> Iterator[Message]:
    """The messages of one item (see the module docstring); read errors become ``Failed``.

    The audio is that of ``fastencodec compress`` (``conformed_blocks``: decoded, cut to the
    item's segment, mixed and resampled to ``sample_rate`` Hz and ``channels``).
    """
    pending: list[np.ndarray] = []
    held, pieces = 0, 0
    try:
        with AudioReader(item.source) as reader:
            for block in conformed_blocks(reader, sample_rate, channels, offset=item.offset, duration=item.duration):
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


def decoded(
    items: Sequence[tuple[int, Item]],
    sample_rate: int,
    channels: int,
    piece_samples: int,
    workers: int,
    queue_size: int | None = None,
) -> Iterator[Message]:
    """Messages of all ``(index, item)`` pairs: in order with ``workers=0`` (this process), else
    from ``workers`` processes (forkserver context where available, else spawn) as they come;
    an item's own pieces always arrive in order.

    Raises:
        RuntimeError: a worker process died (e.g. a decoder crashed).
    """
    if workers == 0:
        for index, item in items:
            yield from item_messages(index, item, sample_rate, channels, piece_samples)
        return
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    if "forkserver" in methods:
        context.set_forkserver_preload(["fastencodec.corpus.workers"])
    tasks = context.Queue()
    results = context.Queue(maxsize=queue_size or 2 * workers + 2)
    for task in items:
        tasks.put(task)
    for _ in range(workers):
        tasks.put(None)
    processes = [
        context.Process(target=_work, args=(tasks, results, sample_rate, channels, piece_samples), daemon=True)
        for _ in range(workers)
    ]
    for process in processes:
        process.start()
    try:
        running = workers
        while running:
            try:
                message = results.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                dead = [p for p in processes if p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(f"an audio decoding worker died (exit code {dead[0].exitcode})") from None
                continue
            if message is None:
                running -= 1
            else:
                yield message
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
            process.join()
        tasks.cancel_join_thread()


def _work(tasks: multiprocessing.Queue, results: multiprocessing.Queue, sample_rate: int, channels: int,
          piece_samples: int) -> None:
    """Worker process: decode tasks until the ``None`` sentinel, then send ``None``; exits when
    the tokenizing process is gone (killed), instead of waiting on a queue nobody reads."""
    parent = multiprocessing.parent_process()

    def put(message: Message | None) -> None:
        while True:
            try:
                return results.put(message, timeout=_POLL_SECONDS)
            except queue.Full:
                if parent is not None and not parent.is_alive():
                    sys.exit(1)

    try:
        import torch

        torch.set_num_threads(1)  # channel conversion only; the cores decode in parallel processes
        while (task := tasks.get()) is not None:
            for message in item_messages(*task, sample_rate, channels, piece_samples):
                put(message)
    except KeyboardInterrupt:
        sys.exit(130)
    put(None)
