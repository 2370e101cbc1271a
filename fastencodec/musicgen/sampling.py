"""Choosing the next tokens: classifier-free guidance, temperature, top-k, top-p, greedy.

Guidance runs the conditional and the unconditional rows in one doubled batch
(``[conditional; unconditional]``) and mixes their logits as
``uncond + guidance_scale * (cond - uncond)``. Filters apply in transformers' order:
temperature, top-k, top-p.

Random draws: every batch item has its own ``torch.Generator`` (:class:`ItemStreams`), so an
item's tokens do not depend on the other items of its batch. The seed rule (:func:`item_seeds`):
with ``seed=s``, item ``i`` draws from a generator seeded with ``s + i``; so item ``i`` of a batch
samples exactly as that item alone with ``seed=s + i`` (same model, device, duration and settings).
A list of seeds gives each item its own. The global RNG is never used.
"""

from __future__ import annotations

import math
import numbers
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Sampling:
    """How next tokens are chosen.

    Attributes:
        guidance_scale: classifier-free guidance weight; 1 turns guidance off (no doubled batch).
        top_k: keep the ``top_k`` most likely tokens (0: all).
        top_p: keep the smallest set of most likely tokens whose probability reaches ``top_p``
            (0 or 1: all).
        temperature: divide the logits by this before sampling.
        do_sample: sample; False picks the most likely token (greedy; the filters do not matter).
    """

    guidance_scale: float = 3.0
    top_k: int = 250
    top_p: float = 0.0
    temperature: float = 1.0
    do_sample: bool = True

    def check(self, vocab_size: int) -> None:
        """Raise ValueError naming the first bad setting."""
        if not (isinstance(self.guidance_scale, (int, float)) and math.isfinite(self.guidance_scale)):
            raise ValueError(f"guidance_scale must be a finite number, got {self.guidance_scale!r}")
        if self.guidance_scale < 1:
            raise ValueError(f"guidance_scale must be >= 1 (1 turns guidance off), got {self.guidance_scale}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be a non-negative integer (0: no top-k), got {self.top_k!r}")
        if self.do_sample and self.top_k > vocab_size:
            raise ValueError(f"top_k={self.top_k} is larger than the vocabulary ({vocab_size} tokens per codebook)")
        if not (isinstance(self.top_p, (int, float)) and 0.0 <= self.top_p <= 1.0):
            raise ValueError(f"top_p must be in [0, 1] (0: no top-p), got {self.top_p!r}")
        if not (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature)):
            raise ValueError(f"temperature must be a finite number, got {self.temperature!r}")
        if self.do_sample and self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 when sampling, got {self.temperature} (use do_sample=False)")

    @property
    def guided(self) -> bool:
        """Whether the batch is doubled for classifier-free guidance."""
        return self.guidance_scale > 1

    def mix(self, logits: torch.Tensor) -> torch.Tensor:
        """Guided logits ``[batch, ...]`` from ``[2 * batch, ...]`` (or ``logits`` unguided)."""
        if not self.guided:
            return logits
        cond, uncond = logits.chunk(2, dim=0)
        return uncond + (cond - uncond) * self.guidance_scale

    def choose(self, logits: torch.Tensor, uniforms: torch.Tensor | None) -> torch.Tensor:
        """Next tokens ``[...]`` (long) from guided logits ``[..., vocab]``.

        Args:
            logits: guided logits ``[..., vocab]``.
            uniforms: one draw in [0, 1) per token ``[...]`` (from :meth:`ItemStreams.uniforms`);
                unused when greedy. Each row is sampled by inverting its own cumulative
                distribution, so a row's token depends only on its logits and its draw.

        Returns:
            Token ids ``[...]`` (int64).
        """
        if not self.do_sample:
            return logits.argmax(dim=-1)
        if uniforms is None:
            raise ValueError("sampling needs one uniform draw per token")
        cdf = self.filter(logits).softmax(dim=-1).cumsum(dim=-1)
        target = (uniforms.to(cdf.dtype) * cdf[..., -1]).unsqueeze(-1)
        chosen = torch.searchsorted(cdf, target, right=True).squeeze(-1)
        return chosen.clamp_max(cdf.shape[-1] - 1)  # a draw at the very top of a rounded-down total

    def filter(self, logits: torch.Tensor) -> torch.Tensor:
        """Scores ``[..., vocab]`` (float32) to sample from: ``logits / temperature`` with the tokens
        top-k and top-p drop set to -inf."""
        scores = logits.float() / self.temperature
        if 0 < self.top_k < scores.shape[-1]:
            threshold = torch.topk(scores, self.top_k, dim=-1).values[..., -1:]
            scores = scores.masked_fill(scores < threshold, -math.inf)
        if 0 < self.top_p < 1:
            ordered, index = torch.sort(scores, dim=-1)
            cumulative = ordered.softmax(dim=-1).cumsum(dim=-1)
            drop = cumulative <= 1 - self.top_p
            drop[..., -1] = False  # keep at least the most likely token
            scores = scores.masked_fill(drop.scatter(-1, index, drop), -math.inf)
        return scores


MAX_SEED = 2**63
"""Seeds are integers in ``[0, MAX_SEED)`` (``seed + i`` included)."""


def item_seeds(seed: int | Sequence[int] | None, batch: int) -> list[int]:
    """The seed of each batch item's generator.

    Args:
        seed: an int ``s`` (item ``i`` gets ``s + i``), one int per item, or None (a fresh random
            ``s``, then as an int).
        batch: number of items.

    Returns:
        ``batch`` seeds in ``[0, MAX_SEED)``.

    Raises:
        ValueError: a seed that is not an integer in range, or a list of the wrong length.
    """
    if seed is None:
        seed = secrets.randbelow(MAX_SEED - batch)
    listed = isinstance(seed, Sequence) and not isinstance(seed, (str, bytes))
    if listed and len(seed) != batch:
        raise ValueError(f"seed is a list of {len(seed)} seeds for {batch} items")
    for value in seed if listed else [seed]:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ValueError(f"seed must be an integer or a list of integers, got {value!r}")
    seeds = [int(v) for v in seed] if listed else [int(seed) + i for i in range(batch)]
    for i, value in enumerate(seeds):
        if not 0 <= value < MAX_SEED:
            raise ValueError(f"seed {value} of item {i} is outside [0, 2**63)")
    return seeds


class ItemStreams:
    """One ``torch.Generator`` per batch item on ``device``, seeded by :func:`item_seeds`."""

    def __init__(self, seeds: Sequence[int], device: torch.device | str):
        self.generators = [torch.Generator(device).manual_seed(s) for s in seeds]

    def uniforms(self, steps: int, codebooks: int) -> torch.Tensor:
        """Draws in [0, 1) ``[batch, steps, codebooks]``: each item's from its own generator, the
        same whatever the other items are."""
        return torch.stack([torch.rand(steps, codebooks, generator=g, device=g.device) for g in self.generators])
