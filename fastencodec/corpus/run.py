"""One tokenization run: the plan, the output folder, and completed shards written as they finish.

``CorpusRun`` is shared by the local pipeline (``api.tokenize_corpus``) and the Ray adapter:
both feed it per-item results, in any order, and it writes each shard when its last item
arrives, on a thread of its own (one shard at a time), so that coding goes on meanwhile.
"""

from __future__ import annotations

import fcntl
import math
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fastencodec.codec import EnCodec
from fastencodec.corpus import manifest as manifests
from fastencodec.corpus import shards as shard_files
from fastencodec.corpus.batching import Coded
from fastencodec.corpus.manifest import ERRORS
from fastencodec.corpus.ranks import Rank
from fastencodec.corpus.sources import Item, Shard, collect_items, plan_shards
from fastencodec.corpus.workers import Failed

ERRORS_DIR = "errors"


@dataclass
class Summary:
    """What a run did (this process's shards only).

    Attributes:
        shards: shards this process owns.
        written: shards written by this run.
        skipped: shards already complete, left as they were.
        coded: items coded by this run.
        failed: items of this process's shards that could not be read (this run's and those
            recorded by earlier runs in skipped shards); listed in ``DIR/errors.jsonl``.
        samples: audio coded by this run, in samples at the model's rate.
        sample_rate: the model's rate in Hz.
        seconds: wall-clock time of the run.
        coding_seconds: of ``seconds``, the time spent coding (close to ``seconds``: the
            model is the bottleneck; far below: decoding is).
    """

    shards: int = 0
    written: int = 0
    skipped: int = 0
    coded: int = 0
    failed: int = 0
    samples: int = 0
    sample_rate: int = 1
    seconds: float = 0.0
    coding_seconds: float = 0.0
    errors: list[dict] = field(default_factory=list, repr=False)

    @property
    def hours(self) -> float:
        """Hours of audio coded by this run."""
        return self.samples / self.sample_rate / 3600

    @property
    def rate(self) -> float:
        """Hours of audio per hour of wall-clock time."""
        return self.hours * 3600 / self.seconds if self.seconds > 0 else math.inf


def bandwidth_of(codec: EnCodec, bandwidth: float | None) -> float:
    """The model's own spelling of ``bandwidth`` kbps (None: its default); ValueError if unsupported."""
    if bandwidth is None:
        return codec.default_bandwidth
    codec.codebooks_for(bandwidth)
    return next(b for b in codec.bandwidths if math.isclose(b, float(bandwidth)))


class CorpusRun:
    """The shards of ``inputs`` this process owns in ``out``, and the writing of their results.

    Raises:
        CorpusInputError: bad inputs.
        CorpusMismatchError: ``out`` holds another corpus.
        ValueError: unsupported bandwidth.
    """

    def __init__(
        self,
        inputs: Sequence[str | os.PathLike[str]],
        out: str | os.PathLike[str],
        codec: EnCodec,
        bandwidth: float | None,
        shard_size: int,
        rank: Rank,
    ) -> None:
        self.codec, self.bandwidth, self.out = codec, bandwidth_of(codec, bandwidth), Path(out)
        self.plan = plan_shards(collect_items(inputs), shard_size)
        with_offset = any(item.offset is not None or item.duration is not None for s in self.plan for item in s.items)
        self.manifest = manifests.build_manifest(codec, self.bandwidth, self.plan, with_offset)
        meta = {key: self.manifest[key] for key in ("model", "model_id", "bandwidth", "sample_rate", "frame_rate")}
        self.schema = shard_files.schema(with_offset, meta)
        manifests.prepare(self.out, self.manifest)
        mine = [shard for shard in self.plan if rank.owns(shard.index)]
        self.pending = [shard for shard in mine if not (self.out / shard.name).exists()]
        for shard in self.pending:  # temporary files of this process's interrupted writes
            for stale in self.out.glob(f".{shard.name}.*.tmp"):
                stale.unlink(missing_ok=True)
        self.summary = Summary(shards=len(mine), skipped=len(mine) - len(self.pending), sample_rate=codec.sample_rate)
        for shard in mine:
            if shard not in self.pending:
                self.summary.failed += len(_read_lines(self._errors_path(shard)))
        self._starts = [0]
        for shard in self.plan:
            self._starts.append(self._starts[-1] + len(shard.items))
        self._owner: dict[int, Shard] = {}
        self._results: dict[int, dict[int, Coded | Failed]] = {}
        self._start = time.perf_counter()
        self._writer: threading.Thread | None = None  # the shard being written (one at a time)
        self._write_error: BaseException | None = None
        for shard in self.pending:
            self._results[shard.index] = {}
            for index in self._indices(shard):
                self._owner[index] = shard

    def items(self) -> list[tuple[int, Item]]:
        """``(index in the plan, item)`` of every item still to code, in plan order."""
        return [(index, item) for shard in self.pending for index, item in zip(self._indices(shard), shard.items)]

    def add(self, result: Coded | Failed) -> None:
        """Record one item's result; writes its shard (on a thread, while coding goes on) if it
        was the shard's last item.

        Raises:
            OSError: writing the previous shard failed.
        """
        shard = self._owner.pop(result.index)
        results = self._results[shard.index]
        results[result.index] = result
        if isinstance(result, Failed):
            self.summary.failed += 1
        else:
            self.summary.coded += 1
            self.summary.samples += result.samples
        if len(results) == len(shard.items):
            self._wait_for_writer()
            ordered = [results[i] for i in self._indices(shard)]
            self._writer = threading.Thread(target=self._write_in_thread, args=(shard, ordered),
                                            name="fastencodec-shard-writer")
            self._writer.start()
            del self._results[shard.index]

    def elapsed(self) -> float:
        """Seconds since the run started."""
        return time.perf_counter() - self._start

    def finish(self) -> Summary:
        """Merge the error lists into ``DIR/errors.jsonl``; returns the summary.

        Raises:
            RuntimeError: some items never got a result.
        """
        self._wait_for_writer()
        if self._owner:
            raise RuntimeError(f"{len(self._owner)} items were never coded")
        self._merge_errors()
        self.summary.seconds = self.elapsed()
        return self.summary

    def _indices(self, shard: Shard) -> range:
        return range(self._starts[shard.index], self._starts[shard.index + 1])

    def _errors_path(self, shard: Shard) -> Path:
        return self.out / ERRORS_DIR / shard.name.replace(".parquet", ".jsonl")

    def _wait_for_writer(self) -> None:
        """Wait for the shard being written; raises what writing it raised."""
        if self._writer is not None:
            self._writer.join()
            self._writer = None
        if self._write_error is not None:
            error, self._write_error = self._write_error, None
            raise error

    def _write_in_thread(self, shard: Shard, results: list[Coded | Failed]) -> None:
        try:
            self._write(shard, results)
        except BaseException as exc:  # raised in the caller's thread by the next add or finish
            self._write_error = exc

    def _write(self, shard: Shard, results: list[Coded | Failed]) -> None:
        errors = [
            {"path": item.path, "offset": item.offset, "duration": item.duration, "shard": shard.index,
             "reason": result.reason}
            for item, result in zip(shard.items, results)
            if isinstance(result, Failed)
        ]
        if errors:
            self._errors_path(shard).parent.mkdir(exist_ok=True)
        shard_files.write_errors(self._errors_path(shard), errors)  # before the shard: its presence means done
        rows = [(item, result) for item, result in zip(shard.items, results) if isinstance(result, Coded)]
        table = shard_files.shard_table(rows, self.codec.sample_rate, self.schema)
        shard_files.write_shard(self.out / shard.name, table)
        self.summary.written += 1
        self.summary.errors += errors

    def _merge_errors(self) -> None:
        """Rewrite ``DIR/errors.jsonl`` from the error lists of all complete shards (under a lock,
        so the last process of a multi-process run to finish sees every one)."""
        with open(self.out / ".lock", "a+b") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX)
            except OSError:  # file systems without locks (some Lustre mounts): merge unlocked
                pass
            lines = []
            for shard in self.plan:
                if (self.out / shard.name).exists():
                    lines += _read_lines(self._errors_path(shard))
            path = self.out / ERRORS
            if lines or path.exists():
                with shard_files.AtomicOutput(path) as output:
                    output.file.write("".join(line + "\n" for line in lines).encode())


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
