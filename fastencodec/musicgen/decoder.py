"""The MusicGen decoder: a transformer LM over ``codebooks`` parallel token streams.

One embedding table per codebook (their sum is the input), sinusoidal positions, pre-norm blocks of
causal self-attention, cross-attention to the text states, and a GELU feed-forward; one linear head
per codebook. Keys and values live in a preallocated :class:`KVCache`, so a decoding step has fixed
shapes: :meth:`MusicGenLM.step_static` (position as a device tensor, attending over a fixed ``span``
of leading cache frames) can be captured in a CUDA graph. With ``kernels`` a step's linear layers
(with the LayerNorm before them and the GELU or residual add after them) run as the few-row Triton
kernel of :mod:`fastencodec.kernels.few_rows` (CUDA), which reads each weight once.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from fastencodec.musicgen.config import DecoderConfig
from fastencodec.musicgen.layers import activation


def sinusoids(length: int, dim: int) -> torch.Tensor:
    """Positions ``[length, dim]``: cosines then sines of geometric frequencies (tensor2tensor layout)."""
    half = dim // 2
    scale = math.log(10000) / (half - 1)
    freqs = torch.exp(torch.arange(half, dtype=torch.int64).float() * -scale)
    angles = torch.arange(length, dtype=torch.int64).float()[:, None] * freqs[None, :]
    table = torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)
    if dim % 2:
        table = torch.cat([table, torch.zeros(length, 1)], dim=1)
    return table


class KVCache:
    """Preallocated keys and values of every layer, for ``batch`` rows and up to ``length`` frames.

    ``keys``/``values``: ``[layers, batch, heads, length, head_dim]``; ``cross_*``: the text states'
    keys and values ``[layers, batch, heads, text_tokens, head_dim]`` and ``cross_mask``
    ``[batch, 1, 1, text_tokens]`` (additive: 0 where a row may attend, -inf elsewhere).
    """

    def __init__(self, cfg: DecoderConfig, batch: int, length: int, device: torch.device, dtype: torch.dtype):
        head_dim = cfg.hidden // cfg.heads
        shape = (cfg.layers, batch, cfg.heads, length, head_dim)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        self.positions = sinusoids(length, cfg.hidden).to(device=device, dtype=dtype)
        self.steps = torch.arange(length, device=device)
        self.cross_keys: torch.Tensor | None = None
        self.cross_values: torch.Tensor | None = None
        self.cross_mask: torch.Tensor | None = None
        self.length = length

    def visible(self, position: torch.Tensor, span: int) -> torch.Tensor:
        """Additive self-attention mask ``[1, 1, 1, span]`` over the first ``span`` cache frames of a
        frame at ``position`` (a 0-d long device tensor, ``position < span``): 0 for the cached frames
        up to it, -inf after. Made once per step, shared by every layer."""
        zero = torch.zeros((), dtype=self.keys.dtype, device=self.keys.device)
        return torch.where(self.steps[:span] <= position, zero, -math.inf).view(1, 1, 1, -1)

    @staticmethod
    def bytes_needed(cfg: DecoderConfig, batch: int, length: int, dtype: torch.dtype) -> int:
        """Bytes the self-attention keys and values take."""
        return 2 * cfg.layers * batch * length * cfg.hidden * torch.empty((), dtype=dtype).element_size()


def attend(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Attention of ``q`` ``[batch, heads, frames, head_dim]`` over ``keys``/``values`` ``[batch, heads,
    n, head_dim]`` with the additive ``mask`` (broadcast to ``[batch, heads, frames, n]``, or None).

    One float32 query frame (a decoding step) runs as matmul, masked softmax, matmul: on CUDA,
    PyTorch's float32 ``scaled_dot_product_attention`` picks a memory-efficient kernel that walks
    the keys with one block per head, several times slower for one query over hundreds of frames
    (``benchmarks/musicgen.py --kernels``); half precision and several frames keep it."""
    if q.dtype != torch.float32 or q.shape[-2] != 1:
        return F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
    scores = torch.matmul(q, keys.transpose(-1, -2))
    scale = q.shape[-1] ** -0.5
    scores = scores.mul_(scale) if mask is None else torch.add(mask, scores, alpha=scale)
    return torch.matmul(scores.softmax(dim=-1), values)


def add_linear(x: torch.Tensor, h: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    """``x + layer(h)`` (no bias) as one matrix product that adds ``x`` in its epilogue."""
    return torch.addmm(x.reshape(-1, x.shape[-1]), h.reshape(-1, h.shape[-1]), layer.weight.t()).view(x.shape)


@functools.cache
def few_rows():
    """:mod:`fastencodec.kernels.few_rows`, imported on first use (None without Triton)."""
    try:
        from fastencodec.kernels import few_rows as module
    except ImportError:
        return None
    return module


def few_rows_for(h: torch.Tensor, layer: nn.Linear, kernels: bool) -> object | None:
    """:mod:`fastencodec.kernels.few_rows` when ``kernels`` is on, Triton is there and the kernel
    takes ``h`` and ``layer``'s weight (see its ``supports``); else None."""
    kernel = few_rows() if kernels else None
    return kernel if kernel is not None and kernel.supports(h, layer.weight) else None


def project(
    h: torch.Tensor,
    layer: nn.Linear,
    norm: nn.LayerNorm | None = None,
    residual: torch.Tensor | None = None,
    kernels: bool = False,
    act: str | None = None,
) -> torch.Tensor:
    """``residual + layer(norm(h))`` or ``act(layer(norm(h)))`` (``norm``, ``residual`` and ``act``,
    an activation name of transformers, optional; not both ``residual`` and ``act``; ``layer``
    without a bias when ``residual`` is given). With ``kernels``, ``h`` on CUDA (or under Triton's
    interpreter) and at most ``few_rows.MAX_ROWS`` rows, one Triton kernel computes it all (an
    activation it lacks runs after it); otherwise torch ops."""
    kernel = few_rows_for(h, layer, kernels)
    if kernel is not None:
        inside = act if act in kernel.ACTIVATIONS else None
        y = kernel.few_rows_linear(h, layer.weight, layer.bias, residual, norm, inside)
        return y if inside == act else activation(act, y)
    if norm is not None:
        h = norm(h)
    if residual is not None:
        return add_linear(residual, h, layer)
    return layer(h) if act is None else activation(act, layer(h))


class Attention(nn.Module):
    """Multi-head attention projections; ``fused`` keeps query, key and value in one ``qkv_proj``
    (self-attention: one matrix product per step instead of three)."""

    def __init__(self, dim: int, heads: int, fused: bool = False):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        if fused:
            self.qkv_proj = nn.Linear(dim, 3 * dim, bias=False)
        else:
            self.q_proj = nn.Linear(dim, dim, bias=False)
            self.k_proj = nn.Linear(dim, dim, bias=False)
            self.v_proj = nn.Linear(dim, dim, bias=False)
        self.out_proj = nn.Linear(dim, dim, bias=False)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        """``[batch, frames, dim]`` -> ``[batch, heads, frames, head_dim]``."""
        return x.view(x.shape[0], x.shape[1], self.heads, self.head_dim).transpose(1, 2)

    def add_merged(self, x: torch.Tensor, out: torch.Tensor, kernels: bool = False) -> torch.Tensor:
        """``x`` plus the output projection of the heads ``out`` ``[batch, heads, frames, head_dim]``."""
        merged = out.transpose(1, 2).reshape(out.shape[0], out.shape[2], -1)
        return project(merged, self.out_proj, residual=x, kernels=kernels)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.act = cfg.activation
        self.self_attn = Attention(cfg.hidden, cfg.heads, fused=True)
        self.self_attn_layer_norm = nn.LayerNorm(cfg.hidden)
        self.encoder_attn = Attention(cfg.hidden, cfg.heads)
        self.encoder_attn_layer_norm = nn.LayerNorm(cfg.hidden)
        self.fc1 = nn.Linear(cfg.hidden, cfg.ffn, bias=False)
        self.fc2 = nn.Linear(cfg.ffn, cfg.hidden, bias=False)
        self.final_layer_norm = nn.LayerNorm(cfg.hidden)

    def forward(
        self,
        x: torch.Tensor,
        index: int,
        cache: KVCache,
        start: int | torch.Tensor,
        visible: torch.Tensor | None,
        kernels: bool = False,
    ) -> torch.Tensor:
        """``x`` [batch, frames, hidden] at positions ``start ..``; ``start`` a device tensor means one
        frame, attended over the first ``span`` cache frames with the additive mask ``visible``
        [1, 1, 1, span] (fixed shapes for CUDA graphs; frames past ``span`` are never read);
        ``kernels``: see :func:`project`."""
        attn = self.self_attn
        qkv = project(x, attn.qkv_proj, self.self_attn_layer_norm, kernels=kernels)
        q, k, v = (attn.split(part) for part in qkv.chunk(3, dim=-1))
        keys, values = cache.keys[index], cache.values[index]
        if isinstance(start, torch.Tensor):
            keys.index_copy_(2, start.view(1), k)
            values.index_copy_(2, start.view(1), v)
            span = visible.shape[-1]
            out = attend(q, keys[:, :, :span], values[:, :, :span], visible)
        else:
            end = start + x.shape[1]
            keys[:, :, start:end] = k
            values[:, :, start:end] = v
            if x.shape[1] == 1:
                out = attend(q, keys[:, :, :end], values[:, :, :end], None)
            elif start == 0:
                out = F.scaled_dot_product_attention(q, keys[:, :, :end], values[:, :, :end], is_causal=True)
            else:
                raise ValueError("several frames at once are only supported from position 0")
        x = attn.add_merged(x, out, kernels)
        cross = self.encoder_attn
        q = cross.split(project(x, cross.q_proj, self.encoder_attn_layer_norm, kernels=kernels))
        out = attend(q, cache.cross_keys[index], cache.cross_values[index], cache.cross_mask)
        x = cross.add_merged(x, out, kernels)
        h = project(x, self.fc1, self.final_layer_norm, kernels=kernels, act=self.act)
        return project(h, self.fc2, residual=x, kernels=kernels)


class MusicGenLM(nn.Module):
    """Tokens ``[batch, codebooks, frames]`` (with the text states set in the cache) -> the next
    frame's logits ``[batch, codebooks, vocab_size]``."""

    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_scale = math.sqrt(cfg.hidden) if cfg.scale_embedding else 1.0
        self.embed_tokens = nn.ModuleList(nn.Embedding(cfg.vocab_size + 1, cfg.hidden) for _ in range(cfg.codebooks))
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.layers))
        self.layer_norm = nn.LayerNorm(cfg.hidden)
        self.lm_heads = nn.ModuleList(nn.Linear(cfg.hidden, cfg.vocab_size, bias=False) for _ in range(cfg.codebooks))

    def new_cache(self, batch: int, length: int) -> KVCache:
        """An empty cache for ``batch`` rows and ``length`` frames on this model's device and dtype."""
        weight = self.lm_heads[0].weight
        return KVCache(self.cfg, batch, length, weight.device, weight.dtype)

    def set_memory(self, cache: KVCache, memory: torch.Tensor, mask: torch.Tensor) -> None:
        """Project the text states ``memory`` [batch, tokens, hidden] (rows with ``mask`` [batch, tokens]
        all False attend to every token, which carries zeros there) into the cache."""
        rows_empty = ~mask.any(dim=1, keepdim=True)
        zero = torch.zeros((), dtype=memory.dtype, device=memory.device)
        cross_mask = torch.where(mask | rows_empty, zero, -math.inf)[:, None, None, :]  # additive: made once
        keys = torch.stack([layer.encoder_attn.split(layer.encoder_attn.k_proj(memory)) for layer in self.layers])
        values = torch.stack([layer.encoder_attn.split(layer.encoder_attn.v_proj(memory)) for layer in self.layers])
        if cache.cross_keys is not None and cache.cross_keys.shape == keys.shape:
            cache.cross_keys.copy_(keys)  # in place: a captured CUDA graph reads these buffers
            cache.cross_values.copy_(values)
            cache.cross_mask.copy_(cross_mask)
        else:
            cache.cross_keys, cache.cross_values, cache.cross_mask = keys, values, cross_mask

    def _run(
        self,
        tokens: torch.Tensor,
        cache: KVCache,
        start: int | torch.Tensor,
        span: int | None = None,
        kernels: bool = False,
    ) -> torch.Tensor:
        x = sum(table(tokens[:, k]) for k, table in enumerate(self.embed_tokens)) * self.embed_scale
        visible = None
        if isinstance(start, torch.Tensor):
            x = x + cache.positions.index_select(0, start.view(1))
            visible = cache.visible(start, cache.length if span is None else span)
        else:
            x = x + cache.positions[start : start + tokens.shape[-1]]
        for index, layer in enumerate(self.layers):
            x = layer(x, index, cache, start, visible, kernels)
        last = x[:, -1]
        if few_rows_for(last, self.lm_heads[0], kernels) is not None:  # the final LayerNorm inside each head's kernel
            return torch.stack([project(last, head, self.layer_norm, kernels=True) for head in self.lm_heads], 1)
        h = self.layer_norm(last)
        return torch.stack([head(h) for head in self.lm_heads], dim=1)

    def prefill(self, tokens: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Frames ``0 .. T-1`` of ``tokens`` [batch, codebooks, T] -> logits for frame ``T``."""
        return self._run(tokens, cache, 0)

    def step(self, tokens: torch.Tensor, position: int, cache: KVCache) -> torch.Tensor:
        """One frame ``tokens`` [batch, codebooks, 1] at ``position`` -> logits for the next frame."""
        return self._run(tokens, cache, position)

    def step_static(
        self,
        tokens: torch.Tensor,
        position: torch.Tensor,
        cache: KVCache,
        span: int | None = None,
        kernels: bool = False,
    ) -> torch.Tensor:
        """As :meth:`step` with ``position`` a 0-d long device tensor: no shape depends on it.

        Args:
            tokens: the frame ``[batch, codebooks, 1]``.
            position: its step (0-d long tensor on the cache's device), below ``span``.
            cache: the cache it is written into and attends over.
            span: attend over the first ``span`` cache frames only (frames ``position + 1 ..
                span - 1`` masked; later ones never read); None: the whole cache.
            kernels: run the linear layers (with their LayerNorms, GELU and residuals) as the
                few-row Triton kernel when the rows allow it (tensors on CUDA, or Triton's interpreter).
        """
        if span is not None and not 1 <= span <= cache.length:
            raise ValueError(f"span must be in [1, {cache.length}] cache frames, got {span}")
        return self._run(tokens, cache, position, span, kernels)


DECODER_RENAMES = (
    (r"^decoder\.model\.decoder\.(.*)$", r"\1"),
    (r"^decoder\.(lm_heads\.\d+\.weight)$", r"\1"),
)
"""transformers' ``MusicgenForConditionalGeneration`` decoder tensor names (regex) -> ours."""


def fuse_self_attention(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Renamed decoder tensors with each layer's self-attention ``q_proj``, ``k_proj`` and ``v_proj``
    weights stacked into the one ``qkv_proj`` weight ``[3 * hidden, hidden]`` our layers use."""
    out = dict(tensors)
    for key in tensors:
        if key.endswith(".self_attn.q_proj.weight"):
            base = key[: -len("q_proj.weight")]
            names = [f"{base}{p}_proj.weight" for p in "qkv"]
            if all(name in out for name in names) and len({out[n].shape for n in names}) == 1:
                out[f"{base}qkv_proj.weight"] = torch.cat([out.pop(name) for name in names])
    return out
