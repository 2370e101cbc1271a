"""The block encoder and decoder: the one path from audio to codes and back.

``EnCodec.encode``/``decode`` of arrays and the file API (``compress``/``decompress``) both run
through here, so they form the same segments, the same batches and the same cross-fades:

- a streamable model (24, 32 kHz) codes a signal as one segment; long signals (more than the
  policy's ``chunk_samples``) and files go through its exact stream, ``chunk_samples`` at a time;
- other models code segments (48 kHz: 1 s, 1% overlap), batched by :class:`BatchPlanner`,
  their decoded audio joined by :class:`CrossFade`.

Memory does not grow with a file's length: the block encoder and decoder hold one batch of
segments (or one chunk of a stream) at a time.
"""

from __future__ import annotations

import numpy as np
import torch

from fastencodec.engine.network import Engine
from fastencodec.engine.overlap import CrossFade
from fastencodec.engine.planner import BatchPlanner
from fastencodec.io.audio import rebatch
from fastencodec.streaming.streams import StreamDecoder, StreamEncoder

Coded = tuple[torch.Tensor, float | None]
"""A coded segment: codes ``[K, frames]`` (or embeddings ``[dimension, frames]``) and its scale."""


# -- encoding ---------------------------------------------------------------------------------


def _encode_run(engine: Engine, batch: list[tuple[object, torch.Tensor]], num_codebooks: int | None) -> list:
    """Encode one planned batch of ``(key, segment [C, n])``; returns ``(key, (values, scale))`` pairs.
    Segments of unequal lengths (one ragged bucket) are zero-padded to the bucket's edge."""
    lengths = [x.shape[-1] for _, x in batch]
    if len(set(lengths)) == 1:
        values, scales = engine.encode_batch(torch.stack([x for _, x in batch]), num_codebooks)
    else:
        hop = engine.hop_length
        width = engine.bucket(-(-max(lengths) // hop)) * hop
        padded = torch.zeros(len(batch), engine.channels, width, device=batch[0][1].device)
        for row, (_, x) in zip(padded, batch):
            row[:, : x.shape[-1]] = x
        values, scales = engine.encode_batch(padded, num_codebooks, lengths)
        values = [value[:, : engine.layout.frames(n)] for value, n in zip(values, lengths)]
    return [
        (key, (value, None if scales is None else float(scale)))
        for (key, _), value, scale in zip(batch, values, scales if scales is not None else [None] * len(batch))
    ]


def stream_encode(engine: Engine, audio: torch.Tensor, num_codebooks: int | None) -> torch.Tensor:
    """Equal-length signals ``[batch, channels, samples]`` through the model's stream, ``chunk_samples``
    at a time: codes ``[batch, K, frames]`` (int64), or embeddings ``[batch, dimension, frames]`` when
    ``num_codebooks`` is None. Memory does not grow with the length beyond the result."""
    stream = StreamEncoder(engine, num_codebooks or 1, embeddings=num_codebooks is None)
    frames = engine.layout.total_frames(audio.shape[-1])
    width = engine.config.dimension if num_codebooks is None else num_codebooks
    out = torch.empty(audio.shape[0], width, frames, dtype=torch.float32 if num_codebooks is None else torch.long)
    done = 0
    chunk = engine.policy.chunk_samples
    for start in range(0, audio.shape[-1] + chunk, chunk):
        piece = audio[:, :, start : start + chunk]
        values = torch.as_tensor(stream.push(piece) if piece.shape[-1] else stream.flush()).cpu()
        out[:, :, done : done + values.shape[-1]] = values
        done += values.shape[-1]
    return out


def _bucket(engine: Engine, n: int, part: str) -> tuple[object, int]:
    """The planner's key and cost (samples) of a segment of ``n`` samples (``part="encoder"``) or
    frames (``"decoder"``): its ragged bucket where the engine can batch unequal lengths
    (:meth:`Engine.ragged`), else its exact length."""
    hop = engine.hop_length if part == "encoder" else 1
    frames = -(-n // hop)
    if engine.ragged(n, part):
        edge = engine.bucket(frames)
        return ("bucket", edge), edge * engine.hop_length
    return n, frames * engine.hop_length if part == "decoder" else n


def encode_items(
    engine: Engine, items: list[torch.Tensor], num_codebooks: int | None
) -> list[tuple[torch.Tensor, list[float | None]]]:
    """Signals ``[channels, samples_i]`` to their codes ``[K, frames_i]`` (embeddings when
    ``num_codebooks`` is None) and segment scales, each as it gets them alone.

    Segments of equal length share batches; on CUDA with Triton, segments of a streamable model
    also share batches with segments of other lengths in the same length bucket
    (:meth:`Engine.ragged`, :meth:`Engine.bucket`), with the same results."""
    results: list[tuple[torch.Tensor, list[float | None]] | None] = [None] * len(items)
    policy = engine.policy
    long = BatchPlanner[int](policy.batch_samples)
    groups = []
    for i, x in enumerate(items):
        if engine.streams_long(x.shape[-1]):
            groups += long.add(x.shape[-1], policy.chunk_samples, i)
    for group in groups + long.flush():
        out = stream_encode(engine, _stack([items[i] for i in group]), num_codebooks)
        for i, value in zip(group, out):
            results[i] = (value, [None])
    parts: list[list[Coded | None]] = [[] for _ in items]
    planner = BatchPlanner[tuple[tuple[int, int], torch.Tensor]](policy.batch_samples)
    done: list = []
    for i, x in enumerate(items):
        if results[i] is not None:
            continue
        spans = list(engine.layout.spans(x.shape[-1]))
        parts[i] = [None] * len(spans)
        for s, (offset, n) in enumerate(spans):
            key, cost = _bucket(engine, n, "encoder")
            for batch in planner.add(key, cost, ((i, s), x[:, offset : offset + n])):
                done += _encode_run(engine, batch, num_codebooks)
    for batch in planner.flush():
        done += _encode_run(engine, batch, num_codebooks)
    for (i, s), coded in done:
        parts[i][s] = coded
    for i, item_parts in enumerate(parts):
        if results[i] is None:
            results[i] = (torch.cat([p[0] for p in item_parts], dim=-1), [p[1] for p in item_parts])
    return results  # type: ignore[return-value]


class BlockEncoder:
    """One signal arriving in blocks to its segments' codes, in order, in bounded memory.

    ``push(block)`` takes float32 audio ``[channels, n]`` at the model's rate and returns the
    codes now final as ``(codes [K, frames], scale, ends_segment)`` triples; ``finish()``
    returns the rest. A segment starts with the first triple after one that ended a segment.
    The codes equal ``encode_items`` of the whole signal (the same segments, batches and stream
    chunks), except that a streamable model's signal longer than ``chunk_samples`` goes through
    the exact stream here in every precision, where ``encode_items`` codes it whole outside ``exact``.

    Args:
        engine: the model.
        num_codebooks: codebooks per frame.
    """

    def __init__(self, engine: Engine, num_codebooks: int) -> None:
        self.engine = engine
        self.num_codebooks = num_codebooks
        self.samples = 0
        self._stream = StreamEncoder(engine, num_codebooks) if engine.streamable else None
        self._pending = np.zeros((engine.channels, 0), dtype=np.float32)
        self._planner = BatchPlanner[tuple[int, torch.Tensor]](engine.policy.batch_samples)
        self._coded: dict[int, Coded] = {}
        self._next_cut = 0  # segments cut from the signal so far
        self._next_out = 0  # segments returned so far

    def push(self, block: np.ndarray) -> list[tuple[np.ndarray, float | None, bool]]:
        self.samples += block.shape[-1]
        self._pending = np.concatenate([self._pending, block], axis=1)
        if self._stream is not None:
            return self._stream_out(final=False)
        size, stride = self.engine.layout.segment_length, self.engine.layout.segment_stride
        while size and stride and self._pending.shape[-1] >= size:
            self._cut(self._pending[:, :size])
            self._pending = self._pending[:, stride:]
        return self._release()

    def finish(self) -> list[tuple[np.ndarray, float | None, bool]]:
        if self._stream is not None:
            return self._stream_out(final=True)
        layout = self.engine.layout
        # what is left: the last partial segments (or, unsegmented, the whole signal)
        consumed = self._next_cut * (layout.segment_stride or 0)
        for offset, n in layout.spans(self.samples):
            if offset >= consumed:
                self._cut(self._pending[:, offset - consumed : offset - consumed + n])
        for batch in self._planner.flush():
            self._run(batch)
        return self._release()

    def _stream_out(self, final: bool) -> list[tuple[np.ndarray, float | None, bool]]:
        assert self._stream is not None
        out = []
        chunk = self.engine.policy.chunk_samples
        while self._pending.shape[-1] >= chunk or (final and self._pending.shape[-1]):
            piece, self._pending = self._pending[:, :chunk], self._pending[:, chunk:]
            out.append((self._stream.push(piece[None])[0], None, False))
        if final:
            out.append((self._stream.flush()[0], None, True))
        return out

    def _cut(self, segment: np.ndarray) -> None:
        n = segment.shape[-1]
        for batch in self._planner.add(n, n, (self._next_cut, torch.from_numpy(np.ascontiguousarray(segment)))):
            self._run(batch)
        self._next_cut += 1

    def _run(self, batch: list[tuple[int, torch.Tensor]]) -> None:
        for index, coded in _encode_run(self.engine, batch, self.num_codebooks):
            self._coded[index] = coded

    def _release(self) -> list[tuple[np.ndarray, float | None, bool]]:
        out = []
        while self._next_out in self._coded:
            codes, scale = self._coded.pop(self._next_out)
            out.append((codes.numpy(), scale, True))
            self._next_out += 1
        return out


# -- decoding ---------------------------------------------------------------------------------


def stream_decode(engine: Engine, codes: torch.Tensor, length: int, device: torch.device | str) -> torch.Tensor:
    """Codes ``[batch, K, frames]`` through the model's stream to audio ``[batch, channels, length]``
    (float32, on ``device``), about ``chunk_samples`` at a time: memory does not grow with the
    length beyond the result."""
    stream = StreamDecoder(engine)
    out = torch.empty(codes.shape[0], engine.channels, length, device=device)
    step = max(1, engine.policy.chunk_samples // engine.hop_length)
    done = 0
    for start in range(0, codes.shape[-1] + step, step):
        piece = codes[:, :, start : start + step]
        audio = torch.as_tensor(stream.push(piece) if piece.shape[-1] else stream.flush())
        take = min(audio.shape[-1], length - done)
        out[:, :, done : done + take] = audio[:, :, :take]
        done += take
    return out


class _SegmentJoiner:
    """Joins one signal's decoded segments (arriving in any order) in order, into ``out`` or as blocks."""

    def __init__(self, engine: Engine, length: int, out: torch.Tensor | None) -> None:
        self.engine = engine
        self.length = length
        self.out = out
        self.done = 0
        self._next = 0
        self._held: dict[int, torch.Tensor] = {}
        self._fade: CrossFade | None = None

    def add(self, index: int, piece: torch.Tensor) -> list[torch.Tensor]:
        self._held[index] = piece
        blocks = []
        while self._next in self._held:
            piece = self._held.pop(self._next)
            self._next += 1
            stride = self.engine.layout.segment_stride
            if stride is None:
                blocks.append(self.emit(piece))
                continue
            if self._fade is None:
                self._fade = CrossFade(piece.shape[-1], stride, piece.shape[0], piece.device)
            blocks.append(self.emit(self._fade.add(piece)))
        return blocks

    def finish(self) -> list[torch.Tensor]:
        return [self.emit(self._fade.finish())] if self._fade is not None else []

    def emit(self, block: torch.Tensor) -> torch.Tensor:
        block = block[:, : max(0, self.length - self.done)]
        if self.out is not None:
            self.out[:, self.done : self.done + block.shape[-1]] = block
        self.done += block.shape[-1]
        return block


def _decode_run(engine: Engine, batch: list, device: torch.device | str) -> list:
    """Decode one planned batch of ``(key, codes [K, f], scale)``; returns ``(key, audio)`` pairs.
    Codes of unequal lengths (one ragged bucket) are padded to the bucket's edge."""
    scales = None if batch[0][2] is None else torch.tensor([scale for _, _, scale in batch])
    frames = [codes.shape[-1] for _, codes, _ in batch]
    if len(set(frames)) == 1:
        audio = engine.decode_batch(torch.stack([codes for _, codes, _ in batch]), scales, device)
    else:
        padded = torch.zeros(len(batch), batch[0][1].shape[0], engine.bucket(max(frames)), dtype=torch.long)
        for row, (_, codes, _) in zip(padded, batch):
            row[:, : codes.shape[-1]] = codes
        audio = engine.decode_batch(padded, scales, device, frames)
        audio = [piece[:, : f * engine.hop_length] for piece, f in zip(audio, frames)]
    return [(key, piece) for (key, _, _), piece in zip(batch, audio)]


def decode_items(
    engine: Engine,
    codes: list[torch.Tensor],
    lengths: list[int],
    scales: list[list[float]] | None,
    device: torch.device | str,
) -> list[torch.Tensor]:
    """Items' codes ``[K, frames_i]`` to audio ``[channels, lengths[i]]`` (float32, on ``device``)."""
    audio: list[torch.Tensor | None] = [None] * len(codes)
    policy = engine.policy
    long = BatchPlanner[int](policy.batch_samples)
    groups = []
    for i, n in enumerate(lengths):
        if engine.streams_long(n):
            groups += long.add(n, policy.chunk_samples, i)
    for group in groups + long.flush():
        out = stream_decode(engine, _stack([codes[i] for i in group]), lengths[group[0]], device)
        for i, value in zip(group, out):
            audio[i] = value
    joiners: dict[int, _SegmentJoiner] = {}
    planner = BatchPlanner[tuple](policy.batch_samples)

    def run(batch: list) -> None:
        for (i, s), piece in _decode_run(engine, batch, device):
            joiners[i].add(s, piece)

    for i, (item, n) in enumerate(zip(codes, lengths)):
        if audio[i] is not None:
            continue
        out = audio[i] = torch.empty(engine.channels, n, device=device)
        joiners[i] = _SegmentJoiner(engine, n, out)
        start = 0
        for s, f in enumerate(engine.layout.frame_counts(n)):
            job = ((i, s), item[:, start : start + f], None if scales is None else scales[i][s])
            key, cost = _bucket(engine, f, "decoder")
            for batch in planner.add(key, cost, job):
                run(batch)
            start += f
    for batch in planner.flush():
        run(batch)
    for joiner in joiners.values():
        joiner.finish()
    return audio  # type: ignore[return-value]


class BlockDecoder:
    """One signal's segments, arriving in order, to its audio blocks, in bounded memory.

    ``push(codes, scale, ends_segment)`` takes a segment's next frames ``[K, n]`` (a stream's
    frames may come in several pieces; other models' segments whole) and returns the audio now
    final, float32 blocks ``[channels, m]`` at the model's rate; ``finish()`` returns the rest.
    The samples equal ``decode_items`` of the whole signal.

    Args:
        engine: the model.
        length: the signal's length in samples.
    """

    def __init__(self, engine: Engine, length: int) -> None:
        self.engine = engine
        self._stream = StreamDecoder(engine) if engine.streamable else None
        self._frames: list[np.ndarray] = []
        self._held = 0
        self._joiner = _SegmentJoiner(engine, length, None)
        self._planner = BatchPlanner[tuple](engine.policy.batch_samples)
        self._segments = 0
        self._step = max(1, engine.policy.chunk_samples // engine.hop_length)

    def push(self, codes: np.ndarray, scale: float | None, ends_segment: bool) -> list[np.ndarray]:
        if self._stream is not None:
            self._frames.append(codes)
            self._held += codes.shape[-1]
            return self._stream_out(final=False)
        self._frames.append(codes)
        if not ends_segment:
            return []
        whole = torch.from_numpy(np.concatenate(self._frames, axis=1))
        self._frames = []
        f = whole.shape[-1]
        blocks: list[torch.Tensor] = []
        for batch in self._planner.add(f, f * self.engine.hop_length, (self._segments, whole, scale)):
            blocks += self._run(batch)
        self._segments += 1
        return [b.numpy() for b in blocks]

    def finish(self) -> list[np.ndarray]:
        if self._stream is not None:
            return self._stream_out(final=True)
        blocks: list[torch.Tensor] = []
        for batch in self._planner.flush():
            blocks += self._run(batch)
        return [b.numpy() for b in blocks + self._joiner.finish()]

    def _run(self, batch: list) -> list[torch.Tensor]:
        blocks = []
        for index, piece in _decode_run(self.engine, batch, "cpu"):
            blocks += self._joiner.add(index, piece)
        return blocks

    def _stream_out(self, final: bool) -> list[np.ndarray]:
        assert self._stream is not None
        out = []
        if self._held >= self._step or (final and self._held):
            for piece in rebatch(self._frames, self._step):
                if piece.shape[-1] < self._step and not final:
                    self._frames, self._held = [piece], piece.shape[-1]
                    break
                out.append(self._stream.push(piece[None])[0])
            else:
                self._frames, self._held = [], 0
        if final:
            out.append(self._stream.flush()[0])
        return [self._joiner.emit(torch.from_numpy(block)).numpy() for block in out]


def _stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    """``torch.stack``, but a view (no copy of a long signal) for a single tensor."""
    return tensors[0][None] if len(tensors) == 1 else torch.stack(tensors)
