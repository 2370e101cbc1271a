"""Coding decoded items: whole items pooled and encoded in length-sorted groups, long items
coded piece by piece.

Both run the engine's one encoder (``fastencodec.engine.blocks``), so each item's codes are those
of ``EnCodec.encode`` of the item alone, whatever the group: ``encode_group`` hands the items a
``LengthPool`` collected to ``encode_items`` (which ``EnCodec.encode`` runs), ``LongItem`` feeds an item's pieces to a
``BlockEncoder`` (which ``compress`` runs): the model's exact stream for 24 and 32 kHz, batched
segments for 48 kHz, so memory does not grow with the item's length beyond its codes.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from fastencodec.codec import EnCodec
from fastencodec.corpus.workers import Failed
from fastencodec.engine.blocks import BlockEncoder, encode_items
from fastencodec.kernels import PrecisionOverflowError


class Coded(NamedTuple):
    """One item's result: codes int16 ``[codebooks, frames]``, its length in samples at the
    model's rate, and its segment scales float32 ``[segments]`` (empty for models without)."""

    index: int
    codes: np.ndarray
    samples: int
    scales: np.ndarray


def piece_samples_for(codec: EnCodec) -> int:
    """Samples per ``Piece`` for ``codec``: a whole number of its stream chunks, at least 2**20."""
    chunk = codec.policy.chunk_samples
    assert chunk is not None  # resolved for the codec's device
    return max(1, -(-(1 << 20) // chunk)) * chunk


def check_piece_samples(codec: EnCodec, piece_samples: int) -> None:
    """Refuse pieces shorter than the codec's stream chunk: ``encode`` codes items up to a chunk
    long whole, so only longer items may go through ``LongItem``'s stream.

    Raises:
        ValueError: ``piece_samples`` is below ``codec.policy.chunk_samples``.
    """
    chunk = codec.policy.chunk_samples
    assert chunk is not None
    if piece_samples < chunk:
        raise ValueError(f"piece_samples must be at least the codec's chunk_samples ({chunk}), got {piece_samples}")


def window_samples_for(codec: EnCodec) -> int:
    """Default look-ahead of the feeder (``feeder.Feeder``): four of the codec's batches (samples per channel)."""
    return 4 * (codec.policy.batch_samples or 1)


class LengthPool:
    """Whole items waiting to be coded, handed out sorted by length."""

    def __init__(self) -> None:
        self.held = 0  # samples per channel
        self._items: list[tuple[int, np.ndarray]] = []

    def __len__(self) -> int:
        return len(self._items)

    def add(self, index: int, audio: np.ndarray) -> None:
        """Hold an item ``[channels, samples]``."""
        self._items.append((index, audio))
        self.held += audio.shape[1]

    def take(self) -> list[tuple[int, np.ndarray]]:
        """Every item held, shortest first (ties in arrival order); the pool is empty after."""
        items = sorted(self._items, key=lambda pair: pair[1].shape[1])
        self._items, self.held = [], 0
        return items


def encode_group(
    codec: EnCodec, num_codebooks: int, items: list[tuple[int, np.ndarray]]
) -> list[Coded | Failed]:
    """Code ``(index, audio [channels, samples])`` items in one ``encode_items`` call.

    On a CUDA device the group's audio is copied into one pinned host buffer and sent to the
    GPU in one asynchronous transfer; elsewhere the arrays go as they are. If the precision's
    range overflows (``fp16``), the items are coded one by one and those that overflow alone
    become ``Failed`` (codes do not depend on the grouping).
    """
    if not items:
        return []
    tensors = [torch.from_numpy(audio) for _, audio in items]
    device = codec.engine.device
    if device.type == "cuda":
        staging = torch.empty(sum(t.numel() for t in tensors), dtype=torch.float32, pin_memory=True)
        starts = np.cumsum([0] + [t.numel() for t in tensors])
        for tensor, start in zip(tensors, starts):
            staging[start : start + tensor.numel()].copy_(tensor.reshape(-1))
        on_device = staging.to(device, non_blocking=True)
        tensors = [on_device[start : start + t.numel()].view(t.shape) for t, start in zip(tensors, starts)]
    try:
        results = encode_items(codec.engine, tensors, num_codebooks)
    except PrecisionOverflowError as exc:
        if len(items) == 1:
            return [Failed(items[0][0], str(exc))]
        return [done for item in items for done in encode_group(codec, num_codebooks, [item])]
    return [
        Coded(index, codes.numpy().astype(np.int16), audio.shape[1], _scales(scales))
        for (index, audio), (codes, scales) in zip(items, results)
    ]


class LongItem:
    """Codes one long item from its pieces ``[channels, n]``, in order, in bounded memory."""

    def __init__(self, codec: EnCodec, bandwidth: float, index: int) -> None:
        self.index = index
        self._encoder = BlockEncoder(codec.engine, codec.codebooks_for(bandwidth))
        self._codes: list[np.ndarray] = []
        self._scales: list[float | None] = []

    def push(self, audio: np.ndarray) -> None:
        """Feed the next piece."""
        self._keep(self._encoder.push(audio))

    def finish(self) -> Coded:
        """End the item; returns its codes."""
        self._keep(self._encoder.finish())
        codes = np.concatenate(self._codes, axis=1).astype(np.int16)
        return Coded(self.index, codes, self._encoder.samples, _scales(self._scales))

    def _keep(self, coded: list[tuple[np.ndarray, float | None, bool]]) -> None:
        for codes, scale, ends_segment in coded:
            self._codes.append(codes)
            if ends_segment:
                self._scales.append(scale)


def _scales(scales: list[float | None]) -> np.ndarray:
    """Segment scales as float32 ``[segments]``; empty for a model without (its scales are None)."""
    return np.asarray([s for s in scales if s is not None], np.float32)
