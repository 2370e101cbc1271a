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
