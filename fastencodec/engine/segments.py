"""Segment and frame arithmetic: how a model splits a signal into independently coded segments.

A model without segments (24 and 32 kHz) codes a signal as one segment; the 48 kHz model codes
segments of ``segment_length`` samples starting every ``segment_stride`` samples (1 s with 1%
overlap). Counts are computed arithmetically, so a forged length costs no time or memory
before it is checked.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from fastencodec.nn.config import EncodecConfig

MAX_BITS_PER_CODEBOOK = 16


def check_bits(bits: int) -> None:
    """Raise ValueError unless ``bits`` is a code width the container can hold."""
    if type(bits) is not int or not 0 < bits <= MAX_BITS_PER_CODEBOOK:
        raise ValueError(f"bits per codebook must be in [1, {MAX_BITS_PER_CODEBOOK}], got {bits!r}")


@dataclass(frozen=True)
class SegmentLayout:
    """How a model splits audio into segments and frames (plain numbers, no model needed).

    Attributes:
        sample_rate: model sample rate in Hz.
        frame_rate: code frames per second.
        bits_per_codebook: width of one code in bits (log2 of the codebook size).
        normalize: whether each segment starts with a float32 scale.
        segment_length: segment length in samples, or None for one segment per file.
        segment_stride: distance between segment starts in samples (None iff no segments).
        hop_length: samples per frame; when given, a segment of ``n`` samples has
            ``ceil(n / hop_length)`` frames (what the network produces), else
            ``ceil(n * frame_rate / sample_rate)`` (Meta's file rule; equal when the rate is a
            multiple of the hop, as for every published model).
    """

    sample_rate: int
    frame_rate: int
    bits_per_codebook: int
    normalize: bool
    segment_length: int | None = None
    segment_stride: int | None = None
    hop_length: int | None = None

    def __post_init__(self) -> None:
        if self.sample_rate <= 0 or self.frame_rate <= 0:
            raise ValueError("sample_rate and frame_rate must be positive")
        check_bits(self.bits_per_codebook)
        if (self.segment_length is None) != (self.segment_stride is None):
            raise ValueError("segment_length and segment_stride must both be set or both be None")
        if self.segment_length is not None and (
            self.segment_length <= 0 or self.segment_stride is None or self.segment_stride <= 0
        ):
            raise ValueError("segment_length and segment_stride must be positive")

    @classmethod
    def of(cls, config: EncodecConfig) -> SegmentLayout:
        """The layout of the model ``config`` describes."""
        return cls(
            sample_rate=config.sample_rate,
            frame_rate=config.frame_rate,
            bits_per_codebook=config.bits_per_codebook,
            normalize=config.normalize,
            segment_length=config.segment_length,
            segment_stride=config.segment_stride,
            hop_length=config.hop_length,
        )

    @property
    def segmented(self) -> bool:
        """Whether signals are split into several segments."""
        return self.segment_length is not None

    def frames(self, samples: int) -> int:
        """Frames of one segment of ``samples`` samples."""
        if self.hop_length:
            return -(-samples // self.hop_length)
        return -(-samples * self.frame_rate // self.sample_rate)

    def count(self, length: int) -> int:
        """Segments of a signal of ``length`` samples."""
        if length <= 0:
            return 0
        if self.segment_stride is None:
            return 1
        return -(-length // self.segment_stride)

    def span(self, index: int, length: int) -> tuple[int, int]:
        """``(offset, samples)`` of segment ``index`` of a signal of ``length`` samples."""
        if self.segment_length is None or self.segment_stride is None:
            return 0, length
        offset = index * self.segment_stride
        return offset, min(self.segment_length, length - offset)

    def spans(self, length: int) -> Iterator[tuple[int, int]]:
        """``(offset, samples)`` of each segment, in order."""
        for index in range(self.count(length)):
            yield self.span(index, length)

    def frame_counts(self, length: int) -> Iterator[int]:
        """Frames of each segment, in order."""
        for _, samples in self.spans(length):
            yield self.frames(samples)

    def total_frames(self, length: int) -> int:
        """Frames of a whole signal of ``length`` samples, in time independent of the count."""
        count = self.count(length)
        if count <= 1 or self.segment_length is None or self.segment_stride is None:
            return self.frames(length) if count else 0
        full = min(count, max(0, (length - self.segment_length) // self.segment_stride + 1))
        partial = sum(self.frames(self.span(i, length)[1]) for i in range(full, count))
        return full * self.frames(self.segment_length) + partial
