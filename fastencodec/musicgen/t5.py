"""The T5 encoder that turns a tokenized text prompt into the states MusicGen attends to.

Pre-norm blocks with RMS norms (no bias, no mean), unscaled dot-product attention with a learned
relative-position bias (bucketed, computed by the first block and shared by all), and a ReLU or
gated-GELU feed-forward; as ``transformers``' ``T5EncoderModel``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fastencodec.musicgen.config import T5Config
from fastencodec.musicgen.layers import activation


class RMSNorm(nn.Module):
    """T5's layer norm: scale by the root mean square (computed in float32), no shift."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        variance = x.float().pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(variance + self.eps)).to(self.weight.dtype)


def relative_buckets(length: int, buckets: int, max_distance: int, device: torch.device) -> torch.Tensor:
    """Bidirectional bucket index ``[length, length]`` of each key position relative to each query."""
    position = torch.arange(length, device=device)
    relative = position[None, :] - position[:, None]
    half = buckets // 2
    out = (relative > 0).long() * half
    distance = relative.abs()
    exact = half // 2
    large = exact + (
        torch.log(distance.float() / exact) / math.log(max_distance / exact) * (half - exact)
    ).long()
    large = large.clamp(max=half - 1)
    return out + torch.where(distance < exact, distance, large)


class T5Block(nn.Module):
    def __init__(self, cfg: T5Config):
        super().__init__()
        inner = cfg.heads * cfg.d_kv
        self.heads, self.d_kv, self.act, self.gated = cfg.heads, cfg.d_kv, cfg.activation, cfg.gated
        self.attn_norm = RMSNorm(cfg.d_model, cfg.eps)
        self.q = nn.Linear(cfg.d_model, inner, bias=False)
        self.k = nn.Linear(cfg.d_model, inner, bias=False)
        self.v = nn.Linear(cfg.d_model, inner, bias=False)
        self.o = nn.Linear(inner, cfg.d_model, bias=False)
        self.ff_norm = RMSNorm(cfg.d_model, cfg.eps)
        self.wi = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.wi_gate = nn.Linear(cfg.d_model, cfg.d_ff, bias=False) if cfg.gated else None
        self.wo = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """``x`` [batch, tokens, d_model]; ``bias`` [batch or 1, heads, tokens, tokens] (position + mask)."""
        b, n, _ = x.shape
        h = self.attn_norm(x)
        q, k, v = (proj(h).view(b, n, self.heads, self.d_kv).transpose(1, 2) for proj in (self.q, self.k, self.v))
        scores = q @ k.transpose(-1, -2) + bias
        weights = torch.softmax(scores.float(), dim=-1).type_as(scores)
        x = x + self.o((weights @ v).transpose(1, 2).reshape(b, n, -1))
        h = self.ff_norm(x)
        if self.wi_gate is None:
            h = activation(self.act, self.wi(h))
        else:
            h = activation(self.act, self.wi_gate(h)) * self.wi(h)
        return x + self.wo(h)


class T5Encoder(nn.Module):
    """Token ids ``[batch, tokens]`` and a 0/1 mask of real tokens -> states ``[batch, tokens, d_model]``."""

    def __init__(self, cfg: T5Config):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.relative_bias = nn.Embedding(cfg.buckets, cfg.heads)
        self.blocks = nn.ModuleList(T5Block(cfg) for _ in range(cfg.layers))
        self.final_norm = RMSNorm(cfg.d_model, cfg.eps)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        n = ids.shape[1]
        x = self.embed(ids)
        buckets = relative_buckets(n, self.cfg.buckets, self.cfg.max_distance, ids.device)
        position = self.relative_bias(buckets).permute(2, 0, 1)[None]  # [1, heads, n, n]
        blocked = torch.finfo(x.dtype).min
        bias = position + torch.where(mask[:, None, None, :].bool(), 0.0, blocked).to(x.dtype)
        for block in self.blocks:
            x = block(x, bias)
        return self.final_norm(x)


T5_RENAMES = (
    (r"^(?:encoder\.embed_tokens|shared)\.weight$", "embed.weight"),
    (r"^encoder\.block\.0\.layer\.0\.SelfAttention\.relative_attention_bias\.weight$", "relative_bias.weight"),
    (r"^encoder\.block\.(\d+)\.layer\.0\.SelfAttention\.([qkvo])\.weight$", r"blocks.\1.\2.weight"),
    (r"^encoder\.block\.(\d+)\.layer\.0\.layer_norm\.weight$", r"blocks.\1.attn_norm.weight"),
    (r"^encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.(?:wi|wi_1)\.weight$", r"blocks.\1.wi.weight"),
    (r"^encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.wi_0\.weight$", r"blocks.\1.wi_gate.weight"),
    (r"^encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.wo\.weight$", r"blocks.\1.wo.weight"),
    (r"^encoder\.block\.(\d+)\.layer\.1\.layer_norm\.weight$", r"blocks.\1.ff_norm.weight"),
    (r"^encoder\.final_layer_norm\.weight$", "final_norm.weight"),
)
"""transformers' ``T5EncoderModel`` tensor names (regex) -> ours. In gated T5s ``wi_0`` is the
activated branch and ``wi_1`` the linear one."""

