"""A window's decoding steps, each one whole on the device: tokens in, next tokens out.

One step reads the frame at the current sequence position, runs the decoder LM over it (both halves
of the guidance batch), mixes the guided logits, filters and samples them, writes the chosen tokens
(or the delay pattern's forced pad / prompt tokens) at the next position and advances the position.
Every input of a step lives in device buffers (the sequence, the per-item uniform draws drawn once
per window, the position), so nothing is copied from the host and nothing is read back per step.

:class:`Decoding` runs the steps eagerly (CPU, or ``use_cuda_graphs=False``); :class:`GraphedDecoding`
captures the same step as CUDA graphs (one per attention span bucket) and replays them, so the host
only queues replays and the GPU runs the steps back to back. Either way a step's self-attention reads
only the cache frames filled so far (rounded up to a bucket when graphed), not the whole cache.
"""

from __future__ import annotations

from collections import deque

import torch

from fastencodec.musicgen.decoder import KVCache, MusicGenLM
from fastencodec.musicgen.delay import UNKNOWN
from fastencodec.musicgen.sampling import Sampling


class Decoding:
    """The buffers of one window's decode over ``cache`` and the step that advances them.

    A step attends over the filled part of the cache only: :meth:`span` says how many leading cache
    frames a step at a given position reads (here exactly the filled ones; :class:`GraphedDecoding`
    rounds up to a bucket so that a few captured graphs cover every position).

    Args:
        kernels: run the LM's linear layers as the few-row Triton kernel (see
            :meth:`~fastencodec.musicgen.decoder.MusicGenLM.step_static`).

    Attributes:
        sequence: tokens ``[batch, codebooks, length]`` (long): the delay pattern being filled.
        uniforms: one draw in [0, 1) per token ``[batch, length, codebooks]`` (None when greedy).
        position: the step about to be fed (0-d long tensor on the device).
        at: the same step, known on the host (which span the next step reads).
        mixed: the guided logits ``[batch, codebooks, vocab]`` (float32) of the last step.
    """

    def __init__(self, lm: MusicGenLM, cache: KVCache, sampling: Sampling, batch: int, kernels: bool = False):
        cfg = lm.cfg
        device = cache.keys.device
        self.lm, self.cache, self.sampling, self.kernels = lm, cache, sampling, kernels
        self.sequence = torch.full((batch, cfg.codebooks, cache.length), cfg.start_token_id, dtype=torch.long,
                                   device=device)
        self.uniforms = None
        if sampling.do_sample:
            self.uniforms = torch.zeros(batch, cache.length, cfg.codebooks, device=device)
        self.position = torch.zeros((), dtype=torch.long, device=device)
        self.at = 0
        self.mixed = torch.zeros(batch, cfg.codebooks, cfg.vocab_size, device=device)

    def span(self, position: int) -> int:
        """Leading cache frames a step at ``position`` attends over: the filled ones, ``position + 1``."""
        return position + 1

    def start(self, sequence: torch.Tensor, uniforms: torch.Tensor | None, first: int) -> None:
        """Load a window: its pattern ``sequence`` ``[batch, codebooks, steps]`` (``steps <= length``)
        and ``uniforms`` ``[batch, steps, codebooks]``; the known steps before ``first - 1`` go
        through the LM at once (the prefill), step ``first - 1`` is the first :meth:`advance` feeds."""
        steps = sequence.shape[-1]
        self.sequence[..., :steps].copy_(sequence)
        self.sequence[..., steps:].fill_(self.lm.cfg.start_token_id)
        if self.uniforms is not None:
            self.uniforms[:, :steps].copy_(uniforms)
        if first > 1:
            known = sequence[..., : first - 1]
            self.lm.prefill(torch.cat([known, known]) if self.sampling.guided else known, self.cache)
        self.position.fill_(first - 1)
        self.at = first - 1

    def step(self, span: int) -> None:
        """Feed the frame at ``position`` (attending over the first ``span`` cache frames), choose the
        next one, advance ``position`` by one (device only)."""
        sampling, t = self.sampling, self.position
        frame = self.sequence.index_select(2, t.view(1))
        rows = torch.cat([frame, frame]) if sampling.guided else frame
        logits = self.lm.step_static(rows, t, self.cache, span, self.kernels)
        mixed = sampling.mix(logits.float())
        following = (t + 1).view(1)
        draws = None if self.uniforms is None else self.uniforms.index_select(1, following).squeeze(1)
        chosen = sampling.choose(mixed, draws)
        forced = self.sequence.index_select(2, following).squeeze(2)
        self.sequence.index_copy_(2, following, torch.where(forced == UNKNOWN, chosen, forced).unsqueeze(2))
        self.mixed.copy_(mixed)
        self.position.add_(1)

    def advance(self) -> None:
        """One decoding step (see :meth:`step`)."""
        self.step(self.span(self.at))
        self.at += 1


SPAN_BUCKET = 64
"""A captured step attends over a multiple of this many cache frames (one graph per multiple)."""


class GraphedDecoding(Decoding):
    """:class:`Decoding` whose step is captured as CUDA graphs and replayed: one graph per attention
    span (``SPAN_BUCKET``, twice that, ... up to the cache length), all sharing one memory pool; the
    host picks the graph of the current position, so a step reads at most ``SPAN_BUCKET - 1``
    unfilled (masked) cache frames and never the frames past its bucket."""

    def __init__(self, lm: MusicGenLM, cache: KVCache, sampling: Sampling, batch: int, kernels: bool = False):
        super().__init__(lm, cache, sampling, batch, kernels)
        device = cache.keys.device
        spans = sorted({min(n, cache.length) for n in range(SPAN_BUCKET, cache.length + SPAN_BUCKET, SPAN_BUCKET)})
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for span in spans:  # warm-up: lazy initialisation must not happen during capture
                self.position.zero_()
                self.step(span)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        pool = torch.cuda.graph_pool_handle()  # replays never overlap: the graphs share their scratch memory
        for span in spans:
            self.position.zero_()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                self.step(span)
            self.graphs[span] = graph
        # the warm-up wrote scratch tokens and cache slots: start() overwrites them

    def span(self, position: int) -> int:
        """``position + 1`` rounded up to a multiple of ``SPAN_BUCKET`` (at most the cache length)."""
        return min(-(-(position + 1) // SPAN_BUCKET) * SPAN_BUCKET, self.cache.length)

    def advance(self) -> None:
        """One decoding step: a replay of the captured graph (nothing synchronises with the host)."""
        self.graphs[self.span(self.at)].replay()
        self.at += 1


FRAME_BUCKET = 256
"""Graphed caches are rounded up to a multiple of this many steps (fewer CUDA graph shapes)."""


class Decoders:
    """Where a window's :class:`Decoding` comes from: eager on a CPU (or with ``graphs=False``); on a
    GPU a captured :class:`GraphedDecoding`, kept for the next window or call with the same shapes
    and sampling settings (one at a time, which bounds the memory held). Only captured steps use the
    Triton kernels (eager, each launch would cost more host time than the kernel saves)."""

    def __init__(self) -> None:
        self._kept: dict[tuple, GraphedDecoding] = {}

    def clear(self) -> None:
        """Drop the kept graph and its cache (after the model moved or changed dtype)."""
        self._kept.clear()

    def get(
        self,
        lm: MusicGenLM,
        memory: torch.Tensor,
        mask: torch.Tensor,
        sampling: Sampling,
        steps: int,
        graphs: bool,
        kernels: bool = False,
    ) -> Decoding:
        """The decode of a window of ``steps`` sequence steps over text ``memory`` ``[rows, tokens,
        hidden]`` with ``mask`` ``[rows, tokens]`` (rows: twice the batch when guided); ``kernels``:
        the captured steps run the few-row Triton kernels."""
        rows = memory.shape[0]
        batch = rows // 2 if sampling.guided else rows
        if not graphs:
            cache = lm.new_cache(rows, steps)
            lm.set_memory(cache, memory, mask)
            return Decoding(lm, cache, sampling, batch, kernels)
        length = -(-steps // FRAME_BUCKET) * FRAME_BUCKET
        key = (rows, length, memory.shape[1], sampling, kernels)
        if key not in self._kept:
            self._kept.clear()
            cache = lm.new_cache(rows, length)
            lm.set_memory(cache, memory, mask)
            self._kept[key] = GraphedDecoding(lm, cache, sampling, batch, kernels)
        decoding = self._kept[key]
        lm.set_memory(decoding.cache, memory, mask)
        return decoding


class Pace:
    """Keeps the host at most a few steps ahead of the device, and says which steps are done.

    On a GPU the host queues steps far faster than they run; it records an event every ``every``
    steps and waits for the one ``depth`` events back, so the device always has steps queued while
    progress reports follow the steps actually run. On a CPU every step is done when it returns.
    """

    def __init__(self, device: torch.device, every: int = 8, depth: int = 4):
        self.cuda = device.type == "cuda"
        self.every, self.depth = every, depth
        self.marks: deque[tuple[int, torch.cuda.Event]] = deque()
        self.done: int | None = None

    def after(self, step: int) -> int | None:
        """Call after queueing ``step``; returns the last step known finished (None: none yet)."""
        if not self.cuda:
            return step
        if step % self.every == 0:
            event = torch.cuda.Event()
            event.record()
            self.marks.append((step, event))
            if len(self.marks) > self.depth:
                self.done, event = self.marks.popleft()
                event.synchronize()
        return self.done

    def finish(self, step: int) -> int:
        """Wait for every queued step; returns ``step`` (the last one queued)."""
        if self.cuda and self.marks:
            self.marks[-1][1].synchronize()
            self.marks.clear()
        return step
