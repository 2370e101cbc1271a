"""The per-step decode of :class:`~fastencodec.musicgen.decoder.MusicGenLM` as a replayed CUDA graph.

A decoding step launches a few hundred small kernels (eager generation is bound by their launch
overhead); the graph replays them as one launch. Shapes are fixed by the cache (rows, frames,
text tokens), so one graph serves every step of every window with those shapes: tokens and the
position are copied into static inputs before each replay.
"""

from __future__ import annotations

import torch

from fastencodec.musicgen.decoder import KVCache, MusicGenLM


class GraphedStep:
    """``lm.step_static`` over ``cache`` captured once; call it as ``lm.step`` (tokens, position)."""

    def __init__(self, lm: MusicGenLM, cache: KVCache, rows: int):
        device = cache.keys.device
        self.tokens = torch.full((rows, lm.cfg.codebooks, 1), lm.cfg.pad_token_id, dtype=torch.long, device=device)
        self.position = torch.zeros((), dtype=torch.long, device=device)
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(2):  # warm-up: lazy initialisation must not happen during capture
                lm.step_static(self.tokens, self.position, cache)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.logits = lm.step_static(self.tokens, self.position, cache)

    def __call__(self, tokens: torch.Tensor, position: int) -> torch.Tensor:
        """Logits ``[rows, codebooks, vocab]`` after frame ``tokens`` at ``position`` (a view that the
        next call overwrites)."""
        self.tokens.copy_(tokens)
        self.position.fill_(position)
        self.graph.replay()
        return self.logits
