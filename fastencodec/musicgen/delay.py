"""MusicGen's codebook delay pattern.

Codebook stream ``k`` runs ``delay[k]`` frames behind the first (``delay[k] = k``; stereo models
interleave left/right streams, ``delay[k] = k // 2``), so frame ``f`` of codebook ``k`` sits at
sequence step ``f + delay[k] + 1`` after one start step. Steps before a stream starts or after it
ends hold the pad token. A sequence for ``F`` frames has ``F + max(delay) + 1`` steps.
"""

from __future__ import annotations

import torch

UNKNOWN = -1
"""Pattern entry of a step the model has to predict."""


class DelayPattern:
    """The steps of ``frames`` frames over codebooks with ``delays``, with a pad token ``pad``."""

    def __init__(self, delays: list[int], frames: int, pad: int):
        self.delays = list(delays)
        self.frames = frames
        self.pad = pad
        self.steps = frames + max(self.delays) + 1

    def build(self, prompt: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor:
        """The pattern ``[batch, codebooks, steps]``: pads, the prompt's codes ``[batch, codebooks,
        P]`` (``P < frames``) at their delayed steps, and :data:`UNKNOWN` where tokens are generated."""
        codebooks = len(self.delays)
        out = torch.full((batch, codebooks, self.steps), UNKNOWN, dtype=torch.long, device=device)
        for k, delay in enumerate(self.delays):
            out[:, k, : delay + 1] = self.pad
            out[:, k, self.frames + delay + 1 :] = self.pad
            if prompt is not None:
                out[:, k, delay + 1 : delay + 1 + prompt.shape[-1]] = prompt[:, k]
        return out

    def first_unknown(self, prompt_frames: int) -> int:
        """The first step the model predicts (every step before it is known)."""
        return prompt_frames + 1

    def frames_of(self, sequence: torch.Tensor) -> torch.Tensor:
        """Undo the delays: a full sequence ``[batch, codebooks, steps]`` -> codes ``[batch, codebooks, frames]``."""
        return torch.stack(
            [sequence[:, k, delay + 1 : delay + 1 + self.frames] for k, delay in enumerate(self.delays)], dim=1
        )
