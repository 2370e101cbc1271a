"""Which shards this process codes, from the launcher's environment (no communication).

torchrun sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; Slurm's ``srun`` sets ``SLURM_PROCID``/
``SLURM_NTASKS``/``SLURM_LOCALID``. Rank ``r`` of ``w`` takes shards ``i`` with ``i % w == r``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

_LAUNCHERS = (("RANK", "WORLD_SIZE", "LOCAL_RANK"), ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"))


@dataclass(frozen=True)
class Rank:
    """This process's place among the processes sharing one output folder."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size or self.local_rank < 0:
            raise ValueError(f"invalid rank {self.rank} of world size {self.world_size} (local rank {self.local_rank})")

    def owns(self, shard_index: int) -> bool:
        return shard_index % self.world_size == self.rank


def from_environment(environ: Mapping[str, str] | None = None) -> Rank:
    """The rank torchrun or srun gave this process (torchrun's variables first), else rank 0 of 1.

    Raises:
        ValueError: the variables are not integers or are inconsistent.
    """
    env = os.environ if environ is None else environ
    for rank_var, world_var, local_var in _LAUNCHERS:
        if rank_var in env or world_var in env:
            try:
                rank, world = int(env.get(rank_var, "0")), int(env.get(world_var, "1"))
                local = int(env.get(local_var, "0"))
            except ValueError:
                raise ValueError(f"{rank_var}/{world_var}/{local_var} must be integers") from None
            return Rank(rank, world, local)
    return Rank()


def device_for(device: str, rank: Rank) -> str:
    """``cuda`` without an index means the local rank's GPU: ``cuda:(LOCAL_RANK % GPUs)`` (several
    processes may share a GPU)."""
    if device != "cuda" or rank.world_size == 1:
        return device
    import torch

    return f"cuda:{rank.local_rank % max(1, torch.cuda.device_count())}"
