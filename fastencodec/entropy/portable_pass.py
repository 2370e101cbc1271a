"""The portable integer LM over blocks of frames in one causal pass (torch; CPU or CUDA).

The same arithmetic as the frame-by-frame kernel of :mod:`.portable_kernel`, bit for bit, but every
matrix product of a block of frames is one float64 matrix product. That is exact, whatever
the BLAS, its blocking or summation order, and with or without FMA: each product multiplies
an integer activation ``|x| <= CLAMP < 2**20`` by an int16 weight ``|w| < 2**15`` (or, in the
attention, a query by a key, both ``< 2**20``, over 25 dimensions; or an exp weight
``e <= 2**16`` by a value ``< 2**20`` over at most ``past_context + 1`` frames), so every
partial sum is an integer of magnitude below ``MAX_TERMS * 2**40 < 2**53`` and float64
represents it exactly (:func:`product_bound` states the bound; a test checks it). No TF32
exists for float64. Integer steps (shifts, floor divisions, tables) run as int64 tensors.

Encoding knows every frame of a segment, so it runs here over blocks of frames; a block of
one frame is a decoding step (slow on a GPU, but it makes decoding there possible and exact).
"""

from __future__ import annotations

import numpy as np
import torch

from .fixed import CLAMP, FRAC, ONE

MAX_TERMS = 1024
"""The longest sum of products the LM computes exactly (the widest layer input is 800)."""


def product_bound(clamp: int, max_terms: int = MAX_TERMS) -> int:
    """The largest magnitude any partial sum of a product can reach (must stay below ``2**53``)."""
    return max_terms * max(clamp * ((1 << 15) - 1), clamp * clamp, (1 << 16) * clamp)


class PassWeights:
    """A :class:`~fastencodec.entropy.portable.PortableLM`'s integers as tensors on ``device``."""

    def __init__(self, lm, device: torch.device | str = "cpu") -> None:
        if product_bound(CLAMP) >= 1 << 53 or lm.w1.shape[1] > MAX_TERMS or lm.w2.shape[2] > MAX_TERMS:
            raise AssertionError("the exactness bound of the float64 products does not hold")
        self.device = torch.device(device)

        def t(array: np.ndarray, dtype=torch.int64) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(array)).to(device=self.device, dtype=dtype)

        self.config = lm.config
        self.emb = t(lm.emb)
        self.norm_in = t(lm.norm_in)
        self.w_in, self.w_out = t(lm.w_in, torch.float64), t(lm.w_out, torch.float64)
        self.w1, self.w2 = t(lm.w1, torch.float64), t(lm.w2, torch.float64)
        self.w_heads = t(lm.w_heads, torch.float64)
        self.b_in, self.b_out, self.b1, self.b2, self.b_heads = (t(b) for b in (lm.b_in, lm.b_out, lm.b1, lm.b2,
                                                                                 lm.b_heads))
        self.norms = t(lm.norms)
        tables = lm.tables
        self.cos = tables["cos"]
        self.turns = tables["turns"]
        self.exp_hi, self.exp_lo, self.gelu = (t(tables[n]) for n in ("exp_hi", "exp_lo", "gelu"))


class CausalPass:
    """One segment's integer LM state (the last ``past_context`` rows of keys and values per layer).

    Args:
        weights: the LM's tensors (their device is where the pass runs).
        num_codebooks: codebooks of the segment.
    """

    def __init__(self, weights: PassWeights, num_codebooks: int) -> None:
        cfg = weights.config
        if not 0 < num_codebooks <= cfg.num_codebooks:
            raise ValueError(f"the LM codes 1 to {cfg.num_codebooks} codebooks, got {num_codebooks}")
        self.w = weights
        self.k = num_codebooks
        self.frames = 0
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self._w_heads = weights.w_heads[:num_codebooks].reshape(-1, cfg.dim)
        self._b_heads = weights.b_heads[:num_codebooks].reshape(-1)

    def weights_for(self, index: torch.Tensor) -> torch.Tensor:
        """CDF weights of the next frames of the segment.

        Args:
            index: int64 ``[K, n]`` LM inputs of those frames (the previous frame's codes + 1;
                zeros for the segment's first frame).

        Returns:
            int64 weights ``[n, K, card]`` on the pass's device.
        """
        w, cfg = self.w, self.w.config
        dim, heads, past = cfg.dim, cfg.num_heads, cfg.past_context
        n = index.shape[1]
        index = index.to(w.device)
        x = _clamp(sum(w.emb[k][index[k]] for k in range(self.k)))
        x = _layer_norm(x, w.norm_in[0], w.norm_in[1])
        x = _clamp(x + self._positions(n))
        if not self.keys:  # Meta's initial all-zero frame: its keys and values are the biases
            self.keys = [_clamp(w.b_in[i, dim : 2 * dim] >> FRAC)[None] for i in range(cfg.num_layers)]
            self.values = [_clamp(w.b_in[i, 2 * dim :] >> FRAC)[None] for i in range(cfg.num_layers)]
        # Row r of keys_all is frame r - 1 (row 0: the initial frame); frame t sees rows
        # max(0, t + 1 - past) .. t + 1.
        first_row = max(0, self.frames + 1 - past)
        rows = self.frames + 1 + torch.arange(n, device=w.device)
        for i in range(cfg.num_layers):
            q = _linear(x, w.w_in[i, :dim], w.b_in[i, :dim])
            kv = _linear(x, w.w_in[i, dim:], w.b_in[i, dim:])
            keys = torch.cat([self.keys[i], kv[:, :dim]])
            values = torch.cat([self.values[i], kv[:, dim:]])
            key_rows = first_row + torch.arange(keys.shape[0], device=w.device)
            visible = (key_rows[None] <= rows[:, None]) & (key_rows[None] >= rows[:, None] - past)
            attn = _attention(q, keys, values, visible, heads, w)
            x = _clamp(x + _linear(attn, w.w_out[i], w.b_out[i]))
            x = _layer_norm(x, w.norms[i, 0, 0], w.norms[i, 0, 1])
            hidden = _gelu(_linear(x, w.w1[i], w.b1[i]), w.gelu)
            x = _clamp(x + _linear(hidden, w.w2[i], w.b2[i]))
            x = _layer_norm(x, w.norms[i, 1, 0], w.norms[i, 1, 1])
            keep = max(0, keys.shape[0] - past)  # the next frame sees at most `past` earlier rows
            self.keys[i], self.values[i] = keys[keep:], values[keep:]
        self.frames += n
        logits = _linear(x, self._w_heads, self._b_heads).view(n, self.k, cfg.card)
        best = logits.max(dim=2, keepdim=True).values
        return _exp_neg(best - logits, w)

    def _positions(self, n: int) -> torch.Tensor:
        """Meta's sinusoidal position embedding of the next ``n`` frames, from the cosine table."""
        positions = np.arange(self.frames, self.frames + n, dtype=np.uint64)
        turn = positions[:, None] * self.w.turns[None]  # wraps modulo 2**64, as the kernel's
        j = (turn >> np.uint64(64 - 16)).astype(np.int64)
        table = np.concatenate([self.w.cos[j], self.w.cos[(j - 16384) & 65535]], axis=1)
        return torch.from_numpy(table).to(self.w.device)


def _clamp(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(-CLAMP, CLAMP)


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """clamp(floor((W x + b) / 2**12)) per row of ``x``; the float64 product is exact (see above)."""
    acc = (x.to(torch.float64) @ weight.T).to(torch.int64)
    return _clamp((acc + bias) >> FRAC)


def _layer_norm(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    n = x.shape[-1]
    mean = torch.div(x.sum(-1, keepdim=True), n, rounding_mode="floor")
    d = x - mean
    var = torch.div((d * d).sum(-1, keepdim=True), n, rounding_mode="floor") + 168  # eps 1e-5, 24 bits
    std = _isqrt(var).clamp(min=1)
    y = torch.div(d * (1 << FRAC), std, rounding_mode="floor")
    return _clamp(((_clamp(y) * gamma) >> FRAC) + beta)


def _isqrt(v: torch.Tensor) -> torch.Tensor:
    """floor(sqrt(v)) of int64 ``v < 2**52``: the float64 root corrected to the exact integer one."""
    r = torch.sqrt(v.to(torch.float64)).to(torch.int64)
    for _ in range(2):
        r = r - (r * r > v).to(torch.int64)
        r = r + ((r + 1) * (r + 1) <= v).to(torch.int64)
    return r


def _exp_neg(d: torch.Tensor, w: PassWeights) -> torch.Tensor:
    """exp(-d / 2**12) with 30 fractional bits, for d >= 0 (0 from d = 2**16 on)."""
    hi = d >> 8
    out = (_lookup(w.exp_hi, hi.clamp(max=255)) * _lookup(w.exp_lo, d & 255)) >> 30
    return out.masked_fill_(hi >= 256, 0)


def _lookup(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[index]`` (a gather: far faster than advanced indexing on CPU)."""
    return table.gather(0, index.reshape(-1)).view(index.shape)


def _gelu(v: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    inside = (v >= -8 * ONE) & (v < 8 * ONE)
    looked_up = _lookup(table, ((v + 8 * ONE) >> 4).clamp(0, table.shape[0] - 1))
    return torch.where(inside, looked_up, torch.where(v < 0, torch.zeros_like(v), v))


def _attention(q, keys, values, visible, heads: int, w: PassWeights) -> torch.Tensor:
    """Integer softmax attention of ``q`` [n, dim] over ``keys``/``values`` [m, dim] where ``visible``."""
    n, dim = q.shape
    m = keys.shape[0]
    hd = dim // heads
    qh = q.view(n, heads, hd).transpose(0, 1).to(torch.float64)
    kh = keys.view(m, heads, hd).permute(1, 2, 0).to(torch.float64)
    vh = values.view(m, heads, hd).transpose(0, 1).to(torch.float64)
    scores = torch.div((qh @ kh).to(torch.int64), 5 * ONE, rounding_mode="floor")  # 1 / sqrt(25)
    low = torch.iinfo(torch.int64).min // 2
    scores = torch.where(visible[None], scores, torch.full_like(scores, low))
    best = scores.max(dim=2, keepdim=True).values
    e = _exp_neg((best - scores).clamp(max=1 << 20), w) >> 14
    e = torch.where(visible[None], e, torch.zeros_like(e))
    total = e.sum(dim=2, keepdim=True)
    attn = torch.div((e.to(torch.float64) @ vh).to(torch.int64), total, rounding_mode="floor")
    return attn.transpose(0, 1).reshape(n, dim)
