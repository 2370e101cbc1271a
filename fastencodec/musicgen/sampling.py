"""Choosing the next tokens: classifier-free guidance, temperature, top-k, top-p, greedy.

Guidance runs the conditional and the unconditional rows in one doubled batch
(``[conditional; unconditional]``) and mixes their logits as
``uncond + guidance_scale * (cond - uncond)``. Filters apply in transformers' order:
temperature, top-k, top-p. Random draws come from the caller's ``torch.Generator``; the global
RNG is never used.
"""

from __future__ import annotations

import math
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

    def choose(self, logits: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Next tokens ``[...]`` (long) from guided logits ``[..., vocab]``."""
        if not self.do_sample:
            return logits.argmax(dim=-1)
        probs = self.filter(logits).softmax(dim=-1)
        flat = probs.reshape(-1, probs.shape[-1])
        return torch.multinomial(flat, 1, generator=generator).view(probs.shape[:-1])

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
