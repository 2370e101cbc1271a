"""The corpus tokenizer's Python API: ``tokenize_corpus``, ``read_shards``, ``detokenize``."""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from tqdm import tqdm

from fastencodec.codec import EnCodec
from fastencodec.corpus import ranks
from fastencodec.corpus.batching import (
    Coded,
    LongItem,
    check_piece_samples,
    encode_group,
    piece_samples_for,
    window_samples_for,
)
from fastencodec.corpus.feeder import Feeder, Group
from fastencodec.corpus.manifest import read_manifest
from fastencodec.corpus.run import CorpusRun, Summary
from fastencodec.corpus.shards import iter_shard_rows
from fastencodec.corpus.workers import DECODE_TIMEOUT, Failed, Piece, decoded
from fastencodec.io.atomic import signal_cleanup
from fastencodec.io.audio import write_audio
from fastencodec.kernels import PrecisionOverflowError
from fastencodec.tokens import PAD, Tokens

PathLike = str | os.PathLike[str]


def default_workers() -> int:
    """Decoding processes per tokenizing process: the CPU cores of this node shared among the
    processes a launcher started on it (``LOCAL_WORLD_SIZE``, ``SLURM_NTASKS_PER_NODE``), less one."""
    per_node = os.environ.get("LOCAL_WORLD_SIZE") or os.environ.get("SLURM_NTASKS_PER_NODE") or "1"
    match = re.match(r"\d+", per_node)
    processes = max(1, int(match.group()) if match else 1)
    return max(1, (os.cpu_count() or 2) // processes - 1)


def load_model(
    model: PathLike | EnCodec, device: str, rank: ranks.Rank, precision: str | None = None, local: bool = True
) -> EnCodec:
    """``model`` itself, or the model it names loaded on ``device`` (``cuda``: the local rank's GPU).

    Args:
        model: a model name, repo id, checkpoint path, or a loaded ``EnCodec``.
        device: torch device for a model loaded here.
        rank: the process's rank (picks the GPU of ``cuda``).
        precision: a name in ``fastencodec.engine.policy.PRECISIONS`` (None: the codec's own,
            ``"exact"`` for a model loaded here).
        local: accept local paths and repo ids (False, for names read from files: published
            short names only).

    Raises:
        ValueError: an unknown precision, or a loaded ``model`` whose policy has another one.
    """
    if isinstance(model, EnCodec):
        if precision is not None and precision != model.policy.precision:
            raise ValueError(f"precision {precision!r} asked, but the codec given runs {model.policy.precision!r}")
        return model
    return EnCodec.from_pretrained(
        model, device=ranks.device_for(device, rank), precision=precision or "exact", local=local
    )


def tokenize_corpus(
    inputs: PathLike | Sequence[PathLike],
    out: PathLike,
    model: PathLike | EnCodec = "encodec-24khz",
    bandwidth: float | None = None,
    *,
    device: str = "cpu",
    workers: int | None = None,
    shard_size: int = 1000,
    precision: str | None = None,
    rank: ranks.Rank | None = None,
    progress: bool = False,
    piece_samples: int | None = None,
    window_samples: int | None = None,
    decode_timeout: float | None = DECODE_TIMEOUT,
) -> Summary:
    """Tokenize audio into Parquet shards ``out/shard-NNNNN.parquet`` plus ``out/manifest.json``.

    Each row's codes equal ``model.encode`` of its item alone (audio decoded, cut, mixed and
    resampled as ``fastencodec compress`` does). Complete shards of an earlier run into ``out``
    are kept (a rerun resumes); unreadable items are listed in ``out/errors.jsonl``.

    Args:
        inputs: folders (recursive), text lists of paths, JSONL manifests (``path``, optional
            ``offset``/``duration`` in seconds) or audio files.
        out: output folder.
        model: a model name, repo id, checkpoint path, or a loaded ``EnCodec``.
        bandwidth: kbps (default: the model's default).
        device: torch device for the model (``cuda``: the local rank's GPU).
        workers: audio decoding processes (0: decode in this process; default: see
            :func:`default_workers`).
        shard_size: items per shard.
        precision: the networks' numerical mode (``RuntimePolicy.precision``; None: the
            codec's own, ``"exact"`` for a model loaded here); the manifest records it.
        rank: this process's rank (default: from torchrun's or Slurm's variables).
        progress: show a progress bar on stderr (hours of audio, hours per hour).
        piece_samples: samples (model rate) above which an item is streamed in pieces of
            this size (default: a multiple of the model's chunk, >= 2**20; at least
            ``codec.policy.chunk_samples``).
        window_samples: samples per channel of decoded audio waiting to be coded: the
            look-ahead from which whole items are handed to the model sorted by length
            (default: four of the codec's batches, ``codec.policy.batch_samples``). The
            process holds about two windows.
        decode_timeout: seconds a decoding process may hold an item without sending audio
            before it is stopped as hung (None: no limit; only with ``workers`` > 0): the item
            is tried once more in a fresh process, then listed in ``errors.jsonl``.

    Returns:
        What this process did.

    Raises:
        CorpusInputError: bad inputs. CorpusMismatchError: ``out`` holds another corpus.
        ValueError: unsupported bandwidth or precision, or ``piece_samples`` below the
            model's chunk. RuntimeError: decoding workers keep dying without finishing an
            item (a worker that dies is replaced; the item it was decoding is tried once more,
            then listed in ``errors.jsonl``).
    """
    if decode_timeout is not None and not decode_timeout > 0:
        raise ValueError(f"decode_timeout must be positive seconds or None, got {decode_timeout!r}")
    rank = rank or ranks.from_environment()
    codec = load_model(model, device, rank, precision)
    run = CorpusRun([inputs] if isinstance(inputs, (str, os.PathLike)) else inputs, out, codec, bandwidth,
                    shard_size, rank)
    pieces = piece_samples or piece_samples_for(codec)
    check_piece_samples(codec, pieces)
    todo = run.items()
    workers = default_workers() if workers is None else workers
    num_codebooks = codec.codebooks_for(run.bandwidth)
    streams: dict[int, LongItem] = {}
    void: set[int] = set()  # long items that failed while coding: their remaining pieces are dropped
    messages = decoded(todo, codec.sample_rate, codec.channels, pieces, min(workers, len(todo)), decode_timeout)
    feeder = Feeder(messages, window_samples or window_samples_for(codec))
    # shards are written on a thread: the main thread holds the SIGTERM/SIGHUP cleanup for them
    cleanup = signal_cleanup() if threading.current_thread() is threading.main_thread() else contextlib.nullcontext()
    with cleanup, feeder, tqdm(total=len(todo), unit="item", disable=not progress, dynamic_ncols=True) as bar:

        def record(results: Sequence[Coded | Failed]) -> None:
            for result in results:
                run.add(result)
            bar.update(len(results))
            run.summary.seconds = run.elapsed()
            bar.set_postfix_str(f"{run.summary.hours:.3f} h audio, {run.summary.rate:,.0f} h/h")

        for job in feeder.jobs():
            start = time.perf_counter()
            done: list[Coded | Failed] = []
            if isinstance(job, Group):
                done += encode_group(codec, num_codebooks, job.items)
            elif isinstance(job, Piece) and job.index not in void:
                stream = streams.setdefault(job.index, LongItem(codec, run.bandwidth, job.index))
                try:
                    stream.push(job.audio)
                    if job.last:
                        done.append(streams.pop(job.index).finish())
                except PrecisionOverflowError as exc:  # the item fails; its later pieces are dropped
                    streams.pop(job.index, None)
                    void.add(job.index)
                    done.append(Failed(job.index, str(exc)))
            elif isinstance(job, Piece):  # of a void item
                if job.last:
                    void.discard(job.index)
            else:  # Failed, Retry: the pieces so far are void
                streams.pop(job.index, None)
                if isinstance(job, Failed):
                    done += [] if job.index in void else [job]  # a void item has failed already
                    void.discard(job.index)
            run.summary.coding_seconds += time.perf_counter() - start
            record(done)
    return run.finish()


@dataclass(frozen=True)
class CorpusRow:
    """One row of a token corpus.

    Attributes:
        path: the item's path as stored.
        codes: int16 ``[codebooks, frames]``.
        frames: token frames.
        samples: the item's length in samples at the model's rate.
        duration: seconds.
        scales: float32 ``[segments]`` (48 kHz model), else empty.
        offset: segment start in seconds, or None for corpora without segments.
        model_id: fingerprint of the model that made the codes.
    """

    path: str
    codes: np.ndarray
    frames: int
    samples: int
    duration: float
    scales: np.ndarray
    offset: float | None
    model_id: str

    def tokens(self) -> Tokens:
        """The row as ``Tokens`` ``[1, codebooks, frames]`` (int64), ready for ``EnCodec.decode``."""
        scales = self.scales[None].copy() if len(self.scales) else None
        return Tokens(self.codes[None].astype(np.int64), (self.samples,), scales, self.model_id)


def read_shards(
    directory: PathLike,
    *,
    rank: int = 0,
    world_size: int = 1,
    skip_missing: bool = False,
) -> Iterator[CorpusRow]:
    """Rows of a token corpus in plan order (shards ``i`` with ``i % world_size == rank``, for
    data-parallel readers).

    Raises:
        FileNotFoundError: no manifest, or a shard is missing (the run is unfinished) unless
            ``skip_missing``.
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    files = [entry["file"] for i, entry in enumerate(manifest["shards"]) if i % world_size == rank]
    missing = [name for name in files if not (directory / name).exists()]
    if missing and not skip_missing:
        raise FileNotFoundError(
            f"{directory}: {len(missing)} of {len(files)} shards missing (e.g. {missing[0]}): the tokenize run is "
            "unfinished; rerun it to complete them"
        )
    for name in files:
        if name in missing:
            continue
        for row in iter_shard_rows(directory / name):
            yield CorpusRow(
                row["path"], row["codes"], row["frames"], row["samples"], row["duration"], row["scales"],
                row.get("offset"), manifest["model_id"],
            )


def detokenize(
    directory: PathLike,
    out: PathLike,
    model: PathLike | EnCodec | None = None,
    *,
    device: str = "cpu",
    batch_rows: int = 16,
    progress: bool = False,
) -> int:
    """Decode every row of a token corpus to ``out/<path>.wav`` (32-bit float, the model's rate);
    rows of segments go to ``out/<path>@<offset>s.wav``. Returns the files written.

    Args:
        directory: the corpus folder.
        out: output folder.
        model: the model (default: the one the manifest names, which must be a published
            model's short name: a manifest cannot point at local weights).
        device: torch device.
        batch_rows: rows decoded together.
        progress: progress bar on stderr.

    Raises:
        ValueError: ``model`` is not the model that made the codes, or none is given and the
            manifest names none. FileNotFoundError: no model is given and the manifest's
            name is not a published model (or it is not in the cache and the hub is out of reach).
    """
    manifest = read_manifest(directory)
    if model is None:
        if not isinstance(manifest.get("model"), str):
            raise ValueError(f"{directory}: the manifest names no model; pass one")
        codec = load_model(manifest["model"], device, ranks.Rank(), local=False)
    else:
        codec = load_model(model, device, ranks.Rank())
    if codec.model_id != manifest["model_id"]:
        raise ValueError(f"{directory}: coded by {manifest['model_id']}, but the model given is {codec.model_id}")
    written = 0
    batch: list[CorpusRow] = []
    with tqdm(total=manifest["items"], unit="item", disable=not progress) as bar:
        for row in read_shards(directory, skip_missing=True):
            batch.append(row)
            if len(batch) == batch_rows:
                written += _decode_rows(codec, batch, Path(out))
                bar.update(len(batch))
                batch = []
        written += _decode_rows(codec, batch, Path(out))
        bar.update(len(batch))
    return written


def output_name(row: CorpusRow) -> PurePosixPath:
    """Where ``detokenize`` writes a row, relative to its output folder (no ``..`` or root)."""
    parts = [p for p in PurePosixPath(row.path.replace("\\", "/")).parts if p not in ("/", "..", ".")]
    name = PurePosixPath(*parts) if parts else PurePosixPath("item")
    stem = name.with_suffix("").name + (f"@{row.offset:.3f}s" if row.offset is not None else "")
    return name.with_name(stem + ".wav")


def _decode_rows(codec: EnCodec, rows: list[CorpusRow], out: Path) -> int:
    if not rows:
        return 0
    width = max(row.frames for row in rows)
    codes = np.full((len(rows), rows[0].codes.shape[0], width), PAD, np.int64)
    for i, row in enumerate(rows):
        codes[i, :, : row.frames] = row.codes
    scales = None
    if codec.config.normalize:
        scales = np.zeros((len(rows), max(len(row.scales) for row in rows)), np.float32)
        for i, row in enumerate(rows):
            scales[i, : len(row.scales)] = row.scales
    audio = codec.decode(codes, scales=scales, lengths=[row.samples for row in rows])
    for i, row in enumerate(rows):
        path = out / output_name(row)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_audio(path, np.asarray(audio[i])[:, : row.samples], codec.sample_rate)
    return len(rows)
