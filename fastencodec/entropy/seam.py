"""The symbol-coder seam of the ``.ecdc`` container (INTERFACES.md; ``formats/coders.py`` on main).

A segment's codes are int64 numpy arrays ``[K, n]`` (codebooks, frames), frames in time
order. The container writes and reads each segment's optional float32 scale itself, then
hands the stream to the coder; a coder reads only the bytes of its own segment.
"""

from __future__ import annotations

from typing import BinaryIO, Protocol

import numpy as np


class SegmentEncoder(Protocol):
    """Codes one segment, frames pushed in time order."""

    def push(self, codes: np.ndarray) -> None:
        """Code the next frames ``[K, n]`` of this segment."""

    def finish(self) -> None:
        """Flush; the segment's bytes are complete."""


class SegmentDecoder(Protocol):
    """Decodes one segment, frames read in time order."""

    def read(self, frames: int) -> np.ndarray:
        """Decode the next ``frames`` frames; returns int64 ``[K, frames]``."""


class SymbolCoder(Protocol):
    """A way of coding segments: ``"bits"`` (plain packing), ``"lm"`` (Meta's LM) or ``"lmp1"`` (portable)."""

    tag: str

    def encoder(self, out: BinaryIO, num_codebooks: int) -> SegmentEncoder:
        """An encoder writing one segment of ``num_codebooks`` codebooks to ``out``."""

    def decoder(self, src: BinaryIO, num_codebooks: int, frames: int) -> SegmentDecoder:
        """A decoder reading one segment of ``frames`` frames from ``src``."""
