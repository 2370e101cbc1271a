"""Meta's entropy-coding LM on a CUDA GPU, its frame step replayed from CUDA graphs.

A file of Meta's ``lm`` mode decodes only where the LM gives the float32 bits it gave where
the file was coded; on a GPU those are the bits of the kernels Meta's ``LMModel`` runs there.
:class:`GraphedMetaLM` runs, for each frame, the torch operations Meta's module runs on one
frame: the summed embeddings (on the host, float32), the input norm and the position
embedding from the frame's offset, in each layer the whole attention window projected again
(torch's ``multi_head_attention_forward``, as Meta's module calls it, on the concatenated
window), the heads and softmax, and Meta's CDF quantization, all with the shapes, strides and
fresh allocations Meta's code gives them. It keeps no key/value cache: cuBLAS picks its
kernels by shape, so a row projected alone is not guaranteed the bits it gets within the
window, and a cached row would save arithmetic, not the step's kernel launches.

A step's operations depend only on how many past frames the window holds (1, 2, ... up to
``past_context``): each window size runs eagerly the first time it is met (which also warms
the stream's cuBLAS workspaces) and is captured as a CUDA graph the second time, then
replayed; the heads likewise, per codebook count. The graphs share one memory pool and the
LM's own stream; the buffers they read and write (the frame's input, its offset, each layer's
past inputs, the outputs) are allocated outside them.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F

from .cdf import meta_cdfs_on_device
from .lm import LayerWeights, LMConfig, embedding_sum, head_probabilities, residual_block, sin_embedding


class GraphedMetaLM:
    """Meta's LM stepped one frame at a time on a CUDA device, with Meta's bits on that device.

    One instance codes one stream at a time (it holds the stream's state); build one per
    thread. The interface of :class:`~fastencodec.entropy.lm.MetaLM`: :meth:`reset`,
    :meth:`step`, :meth:`step_cdfs`, :meth:`segment_pass`. On another device than CUDA the
    same operations run eagerly (Meta's bits there; on a CPU :class:`~fastencodec.entropy.lm.MetaLM`
    is faster).

    Args:
        state: Meta's LM state dict.
        config: the model's shape (see :func:`~fastencodec.entropy.lm.lm_config`).
        device: where the LM runs (a CUDA device: captured as CUDA graphs).
    """

    def __init__(self, state: dict, config: LMConfig, device: torch.device | str = "cuda") -> None:
        device = torch.device(device)
        self._cuda = device.type == "cuda"
        if self._cuda and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        self.config = config
        self.device = device
        self._check_float32()
        dim, n_q = config.dim, config.num_codebooks
        self._emb = [state[f"emb.{k}.weight"].detach().float().cpu().numpy().copy() for k in range(n_q)]
        with torch.cuda.device(device) if self._cuda else contextlib.nullcontext():
            # one fresh allocation per tensor, as Meta's module.to(device) gives its parameters
            on = {key: value.detach().to(device) for key, value in state.items() if not key.startswith("emb.")}
            self._norm_in = (on["transformer.norm_in.weight"].float(), on["transformer.norm_in.bias"].float())
            self._layers = [LayerWeights(on, f"transformer.layers.{i}.", dim) for i in range(config.num_layers)]
            self._heads_w = [on[f"linears.{k}.weight"].float().contiguous() for k in range(n_q)]
            self._heads_b = [on[f"linears.{k}.bias"].float().contiguous() for k in range(n_q)]
            self._stream = torch.cuda.Stream(device) if self._cuda else None
            self._x = torch.zeros(1, 1, dim, device=device)  # the frame's summed embeddings
            self._offset = torch.zeros(1, 1, 1, dtype=torch.long, device=device)  # Meta's int64 position
            self._past = [torch.zeros(1, config.past_context, dim, device=device) for _ in self._layers]
            self._hidden = torch.zeros(1, 1, dim, device=device)  # the last layer's output
            self._staging = torch.zeros(dim, pin_memory=self._cuda)
            self._pool = torch.cuda.graph_pool_handle() if self._cuda else None  # replays never overlap: one pool
        self._graphs: dict[tuple[str, int], torch.cuda.CUDAGraph] = {}
        self._seen: set[tuple[str, int]] = set()
        self._masks: dict[int, torch.Tensor] = {}
        self._outputs: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # K: probabilities, CDFs [K, card]
        self._host: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # their pinned host copies
        self.reset(0)

    @property
    def graphs(self) -> int:
        """How many CUDA graphs were captured so far (window sizes and codebook counts met twice)."""
        return len(self._graphs)

    def reset(self, num_codebooks: int) -> None:
        """Start a new stream (segment) coding ``num_codebooks`` codebooks."""
        cfg = self.config
        if not 0 <= num_codebooks <= cfg.num_codebooks:
            raise ValueError(f"the LM codes at most {cfg.num_codebooks} codebooks, got {num_codebooks}")
        self._k = num_codebooks
        self._t = 0
        with self._on():
            for past in self._past:
                past.zero_()  # row 0: Meta's initial all-zero frame
            self._offset.zero_()
            if num_codebooks and num_codebooks not in self._outputs:
                shape = (num_codebooks, cfg.card)
                self._outputs[num_codebooks] = (
                    torch.zeros(shape, device=self.device),
                    torch.zeros(shape, dtype=torch.long, device=self.device),
                )
                self._host[num_codebooks] = (
                    torch.zeros(shape, pin_memory=self._cuda),
                    torch.zeros(shape, dtype=torch.long, pin_memory=self._cuda),
                )

    @torch.no_grad()
    def step(self, previous: np.ndarray | None) -> np.ndarray:
        """Probabilities of the next frame's codes given the previous frame's codes ``[K]`` (None: the
        stream's first frame), float32 ``[K, card]``, as :meth:`MetaLM.step <fastencodec.entropy.lm.MetaLM.step>`."""
        self._load(previous)
        return self._fetch(0)

    @torch.no_grad()
    def step_cdfs(self, previous: np.ndarray | None) -> np.ndarray:
        """:meth:`step`'s probabilities as Meta's quantized CDFs computed on the device, as Meta's
        coder computes them there (int64 ``[K, card]``)."""
        self._load(previous)
        return self._fetch(1)

    def segment_pass(self, num_codebooks: int) -> GraphedPass:
        """The encoder's pass over a segment (starts a new stream, as :meth:`reset`)."""
        self.reset(num_codebooks)
        return GraphedPass(self, num_codebooks)

    def _load(self, previous: np.ndarray | None) -> None:
        if self._k == 0:
            raise RuntimeError("call reset(num_codebooks) before step")
        index = np.zeros(self._k, dtype=np.int64) if previous is None else np.asarray(previous, np.int64) + 1
        self._staging.numpy()[:] = embedding_sum(self._emb, index)
        with self._on():
            self._x.view(-1).copy_(self._staging, non_blocking=True)
            self._frame()

    def _fetch(self, which: int) -> np.ndarray:
        host = self._host[self._k][which]
        with self._on():
            host.copy_(self._outputs[self._k][which], non_blocking=True)
        if self._cuda:
            self._stream.synchronize()  # also: the staging buffer may be written again
        return host.numpy().copy()

    def _on(self) -> contextlib.AbstractContextManager:
        """The LM's device and stream as the current ones (CUDA)."""
        if not self._cuda:
            return contextlib.nullcontext()
        stack = contextlib.ExitStack()
        stack.enter_context(torch.cuda.device(self.device))
        stack.enter_context(torch.cuda.stream(self._stream))
        return stack

    def _check_float32(self) -> None:
        """Raise ValueError where TF32 matmuls are on (checked when built, so before a file is
        started, and at every frame, since the flag is process-wide and may change)."""
        if self._cuda and torch.backends.cuda.matmul.allow_tf32:
            raise ValueError(
                "Meta's lm mode on CUDA needs full float32 matmuls (Meta's default), but torch.backends.cuda."
                "matmul.allow_tf32 is on; torch.set_float32_matmul_precision('highest') turns it off"
            )

    def _frame(self) -> None:
        """Enqueue one frame on the LM's stream (the current one): its input is in ``_x``."""
        self._check_float32()
        held = min(self._t + 1, self.config.past_context)
        self._run(("layers", held), self._layers_step, held)
        self._run(("heads", self._k), self._heads_step, self._k)
        self._t += 1

    def _run(self, key: tuple[str, int], forward, arg: int) -> None:
        graph = self._graphs.get(key)
        if graph is None:
            if not self._cuda or key not in self._seen:  # first use: eager (and the warm-up a capture needs)
                self._seen.add(key)
                forward(arg)
                return
            graph = torch.cuda.CUDAGraph()
            graph.capture_begin(pool=self._pool, capture_error_mode="thread_local")
            try:
                forward(arg)
            finally:
                graph.capture_end()
            self._graphs[key] = graph
        graph.replay()

    def _mask(self, size: int) -> torch.Tensor:
        """The float attention mask Meta's module makes of its boolean one (``[1, size]``, all allowed)."""
        if size not in self._masks:
            self._masks[size] = torch.zeros(1, size, device=self.device)
        return self._masks[size]

    def _layers_step(self, held: int) -> None:
        """Meta's transformer on one frame whose window holds ``held`` past frames."""
        cfg = self.config
        dim = cfg.dim
        mask = self._mask(held + 1)
        x = F.layer_norm(self._x, (dim,), *self._norm_in, 1e-5)
        x = x + sin_embedding(self._offset, dim)
        for layer, past in zip(self._layers, self._past):
            keys = torch.cat([past[:, :held], x], dim=1)
            query, key = x.transpose(1, 0), keys.transpose(1, 0)
            attn = F.multi_head_attention_forward(
                query, key, key, dim, cfg.num_heads, *layer.in_proj, None, None, False, 0.0,
                layer.w_out, layer.b_out, training=False, need_weights=False, attn_mask=mask,
            )[0]
            if held < cfg.past_context:
                past[:, held : held + 1] = x
            else:
                past.copy_(keys[:, 1:])
            x = residual_block(layer, x, attn.transpose(1, 0))
        self._hidden.copy_(x)
        self._offset += 1

    def _heads_step(self, num_codebooks: int) -> None:
        """Meta's heads, softmax and CDFs of the last layer's output."""
        probs = head_probabilities(self._hidden, self._heads_w[:num_codebooks], self._heads_b[:num_codebooks])
        out_probs, out_cdfs = self._outputs[num_codebooks]
        out_probs.copy_(probs[0, :, :, 0].T)
        out_cdfs.copy_(meta_cdfs_on_device(probs, dim=1)[0, :, :, 0].T)


class GraphedPass:
    """A segment's frames through :class:`GraphedMetaLM` when all their codes are known
    (encoding): the frames are enqueued back to back and their CDFs copied to the host once per
    block, without a round trip per frame. Build it with :meth:`GraphedMetaLM.segment_pass`."""

    def __init__(self, lm: GraphedMetaLM, num_codebooks: int) -> None:
        self.lm = lm
        self.k = num_codebooks
        self._previous = np.full(num_codebooks, -1, dtype=np.int64)

    @torch.no_grad()
    def cdfs(self, codes: np.ndarray) -> np.ndarray:
        """Meta's CDFs of the next frames of the segment, given their codes (int ``[K, n]``).

        Returns:
            int64 ``[n * K, card]``: frame t's (from the frames before it), codebook by codebook.
        """
        lm = self.lm
        k_count, n = codes.shape
        if k_count != self.k or lm._k != self.k:
            raise RuntimeError("the LM was reset since this pass began")
        index = np.concatenate([self._previous[:, None], np.asarray(codes, np.int64)[:, :-1]], axis=1) + 1
        rows = torch.from_numpy(embedding_sum(lm._emb, index))
        card = lm.config.card
        with lm._on():
            inputs = rows.to(lm.device)
            out = torch.empty(n, k_count, card, dtype=torch.long, device=lm.device)
            x, cdfs = lm._x.view(-1), lm._outputs[k_count][1]
            for t in range(n):
                x.copy_(inputs[t])
                lm._frame()
                out[t].copy_(cdfs)
            host = out.cpu()
        self._previous = np.asarray(codes[:, -1], np.int64).copy()
        return host.numpy().reshape(n * k_count, card)
