"""The batch planner: which segments run through a network together.

Jobs of equal size are batched, at most ``limit`` samples per batch; a batch is handed out as
soon as it is full and the rest at :meth:`BatchPlanner.flush`. Arrays and files use the same
planner, fed the same segments in the same order, so they form the same batches. Work is
linear in the number of jobs.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

Job = TypeVar("Job")


def bucket_edge(length: int, per_octave: int, quantum: int = 1) -> int:
    """The padded length of a ragged batch's bucket: ``length`` rounded up to a multiple of
    ``quantum * step``, where ``step = 2 ** floor(log2(units)) / per_octave`` (at least 1) and
    ``units = ceil(length / quantum)``: ``per_octave`` edges per doubling of length.

    The edge depends on ``length`` alone (never on the batch's other items), so padded shapes,
    and the CUDA graphs keyed by them, repeat. Padding added is below
    ``length / per_octave + quantum``.

    Args:
        length: an item's length, e.g. in samples.
        per_octave: buckets per doubling of length (a positive power of two).
        quantum: the unit lengths are counted in, e.g. a frame's samples.
    """
    units = -(-length // quantum)
    step = 1 << max(0, units.bit_length() - per_octave.bit_length())
    return -(-units // step) * step * quantum


class BatchPlanner(Generic[Job]):
    """Groups jobs by key into batches of at most ``max(1, limit // cost)`` jobs.

    Args:
        limit: most samples (per channel) in one batch.
    """

    def __init__(self, limit: int) -> None:
        if limit <= 0:
            raise ValueError(f"limit must be positive, got {limit}")
        self.limit = limit
        self._open: dict[Hashable, list[Job]] = {}
        self._sizes: dict[Hashable, int] = {}

    def add(self, key: Hashable, cost: int, job: Job) -> list[list[Job]]:
        """Queue ``job`` with jobs of the same ``key``, each counting ``cost`` samples.

        Returns:
            The batches this job completed (empty, or the one it filled).
        """
        group = self._open.setdefault(key, [])
        group.append(job)
        size = self._sizes.setdefault(key, max(1, self.limit // max(1, cost)))
        if len(group) < size:
            return []
        del self._open[key], self._sizes[key]
        return [group]

    def flush(self) -> list[list[Job]]:
        """The batches not full yet, in the order their first job came; the planner is empty after."""
        batches = list(self._open.values())
        self._open.clear()
        self._sizes.clear()
        return batches
