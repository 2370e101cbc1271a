"""Coding decoded items: whole items pooled and encoded in length-sorted batches, long items
streamed piece by piece.

Whatever the batch, each item's codes are those of ``EnCodec.encode`` of the item alone (the
codec's guarantee; it runs items of equal length together). Long items go through the
codec's exact stream encoder in ``chunk_samples`` chunks (24 and 32 kHz models), as
``encode`` itself streams them, or segment by segment in batches (48 kHz model), as
``encode`` cuts them: memory does not grow with the item's length beyond its codes.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from fastencodec.audio_io import rebatch
from fastencodec.codec import EnCodec
from fastencodec.streaming import streamable


class Coded(NamedTuple):
    """One item's result: codes int16 ``[codebooks, frames]``, its length in samples at the
    model's rate, and its segment scales float32 ``[segments]`` (empty for models without)."""

    index: int
    codes: np.ndarray
    samples: int
    scales: np.ndarray


def piece_samples_for(codec: EnCodec) -> int:
    """Samples per ``Piece`` for ``codec``: a whole number of its stream chunks, at least 2**20."""
    chunk = codec.chunk_samples
    return max(1, -(-(1 << 20) // chunk)) * chunk


class LengthPool:
    """Collects whole items and encodes them, sorted by length, once ``budget`` samples are held.

    Args:
        codec: the model.
        bandwidth: kbps.
        budget: samples per channel to collect before encoding (default: four of the codec's batches).
    """

    def __init__(self, codec: EnCodec, bandwidth: float, budget: int | None = None) -> None:
        self.codec, self.bandwidth = codec, bandwidth
        self.budget = budget or 4 * codec.batch_samples
        self._items: list[tuple[int, np.ndarray]] = []
        self._held = 0

    def add(self, index: int, audio: np.ndarray) -> list[Coded]:
        """Add an item ``[channels, samples]``; returns the items coded by this call (maybe none)."""
        self._items.append((index, audio))
        self._held += audio.shape[1]
        return self.flush() if self._held >= self.budget else []

    def flush(self) -> list[Coded]:
        """Encode every item held; returns them coded."""
        if not self._items:
            return []
        batch = sorted(self._items, key=lambda pair: pair[1].shape[1])
        self._items, self._held = [], 0
        tokens = self.codec.encode([audio for _, audio in batch], self.bandwidth)
        codes = np.asarray(tokens.codes)
        scales = None if tokens.scales is None else np.asarray(tokens.scales)
        out = []
        for row, (index, audio) in enumerate(batch):
            samples = audio.shape[1]
            frames = self.codec.frames(samples)
            own = np.zeros(0, np.float32) if scales is None else scales[row, : len(self.codec.segments(samples))]
            out.append(Coded(index, codes[row, :, :frames].astype(np.int16), samples, own.astype(np.float32)))
        return out


class LongItem:
    """Codes one long item from its pieces ``[channels, n]``, in order, in bounded memory."""

    def __init__(self, codec: EnCodec, bandwidth: float, index: int) -> None:
        self.codec, self.bandwidth, self.index = codec, bandwidth, index
        self._codes: list[np.ndarray] = []
        self._scales: list[float] = []
        self._samples = 0
        self._stream = codec.stream_encoder(bandwidth) if streamable(codec.config) else None
        self._pending = np.zeros((codec.channels, 0), np.float32)
        self._ready: list[np.ndarray] = []

    def push(self, audio: np.ndarray) -> None:
        """Feed the next piece."""
        self._samples += audio.shape[1]
        if self._stream is not None:
            self._pending = np.concatenate([self._pending, audio], axis=1)
            whole = self._pending.shape[1] - self._pending.shape[1] % self.codec.chunk_samples
            for chunk in rebatch([self._pending[:, :whole]], self.codec.chunk_samples):
                self._codes.append(np.asarray(self._stream.push(chunk[None])[0]))
            self._pending = self._pending[:, whole:]
            return
        size, stride = self.codec.config.segment_length, self.codec.config.segment_stride
        self._pending = np.concatenate([self._pending, audio], axis=1)
        if size is None or stride is None:  # one segment: coded whole at the end
            return
        while self._pending.shape[1] >= size:
            self._ready.append(self._pending[:, :size])
            self._pending = self._pending[:, stride:]
        batch = max(1, self.codec.batch_samples // size)
        while len(self._ready) >= batch:
            self._code_segments(self._ready[:batch])
            self._ready = self._ready[batch:]

    def finish(self) -> Coded:
        """End the item; returns its codes."""
        if self._stream is not None:
            if self._pending.shape[1]:
                self._codes.append(np.asarray(self._stream.push(self._pending[None])[0]))
            self._codes.append(np.asarray(self._stream.flush()[0]))
        else:
            length = self._pending.shape[1]
            size = self.codec.config.segment_length or length
            stride = self.codec.config.segment_stride or length
            tail = [self._pending[:, i : i + size] for i in range(0, self._pending.shape[1], stride)]
            self._code_segments(self._ready + tail)
        codes = np.concatenate(self._codes, axis=1).astype(np.int16)
        return Coded(self.index, codes, self._samples, np.asarray(self._scales, np.float32))

    def _code_segments(self, segments: list[np.ndarray]) -> None:
        """Encode whole segments as one batch, keeping each one's own frames and scale (``encode``
        codes a full segment plus the sliver a next one would overlap)."""
        if not segments:
            return
        tokens = self.codec.encode(segments, self.bandwidth)
        codes = np.asarray(tokens.codes)
        for row, segment in enumerate(segments):
            self._codes.append(codes[row, :, : -(-segment.shape[1] // self.codec.hop_length)])
            if tokens.scales is not None:
                self._scales.append(float(np.asarray(tokens.scales)[row, 0]))
