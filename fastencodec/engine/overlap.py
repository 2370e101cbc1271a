"""Overlap-add of decoded segments: the reference's triangular cross-fade, as segments come."""

from __future__ import annotations

import torch


def triangle_weight(size: int) -> torch.Tensor:
    """The reference's overlap-add weight over a decoded segment of ``size`` samples: a triangle
    peaking mid-segment, the same float32 values as Meta's ``_linear_overlap_add``."""
    t = torch.linspace(0, 1, size + 2)[1:-1]
    return 0.5 - (t - 0.5).abs()


class CrossFade:
    """Joins decoded segments of one signal, in order, with the reference's cross-fade.

    Each sample is returned once no later segment overlaps it. The weighted sums and weight
    totals are the reference's float32 operations, so the samples are the reference's.

    Args:
        first_length: length in samples of the first decoded segment (whole frames).
        stride: samples between the starts of consecutive segments.
        channels: channel count.
        device: where the sums are kept.
    """

    def __init__(self, first_length: int, stride: int, channels: int, device: torch.device | str = "cpu") -> None:
        self._weight = triangle_weight(first_length).to(device)
        self._stride = stride
        self._sums = torch.zeros(channels, 0, device=device)
        self._totals = torch.zeros(0, device=device)

    def add(self, piece: torch.Tensor) -> torch.Tensor:
        """Add the next decoded segment ``[channels, n]``; returns the samples now final ``[channels, m]``."""
        n, held = piece.shape[-1], self._totals.shape[-1]
        weight = self._weight[:n]
        sums = piece.new_zeros(piece.shape[0], max(n, held))
        sums[:, :held] = self._sums
        sums[:, :n] += weight * piece
        totals = piece.new_zeros(max(n, held))
        totals[:held] = self._totals
        totals[:n] += weight
        self._sums, self._totals = sums[:, self._stride :], totals[self._stride :]
        return sums[:, : self._stride] / totals[: self._stride]

    def finish(self) -> torch.Tensor:
        """The samples after the last segment's start ``[channels, m]``."""
        return self._sums / self._totals
