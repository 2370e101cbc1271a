"""Meta's entropy-coding language model (``encodec.model.LMModel``), stepped frame by frame.

Architecture: the codes of frame t-1 (shifted by one; 0 means "no previous frame") are
looked up in one embedding table per codebook and summed, layer-normed, given a sinusoidal
position embedding and passed through 5 post-norm transformer layers (width 200, 8 heads,
feed-forward 800, GELU) whose attention sees the current frame and a window of the last
``int(3.5 * frame_rate)`` frames (initially one all-zero frame); one linear head per
codebook gives logits over the 1024 codes of frame t, softmaxed to probabilities.

:class:`MetaLM` reproduces the float32 results of Meta's module bit for bit on the same
machine (files must decode on the machine that coded them, as with Meta's tool), but
keeps the attention keys and values of past frames in a cache instead of projecting the
whole window again at every frame. That is exact only where the BLAS gives each row of a
matrix product the same bits whatever the number of rows; this is checked when the model
is built and, where it does not hold, the window is projected again at each frame as Meta
does (slower, still exact).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .cdf import meta_cdfs

ROOT_URL = "https://dl.fbaipublicfiles.com/encodec/v0/"
LM_CHECKPOINTS = {
    "encodec_24khz": "encodec_lm_24khz-1608e3c0.th",
    "encodec_48khz": "encodec_lm_48khz-7add9fc3.th",
}
FRAME_RATES = {"encodec_24khz": 75, "encodec_48khz": 150}


class MissingLMWeights(FileNotFoundError):
    """The language-model checkpoint is neither cached nor downloadable."""


@dataclass(frozen=True)
class LMConfig:
    """Shape of Meta's LM.

    Attributes:
        num_codebooks: codebooks the model has tables and heads for (n_q).
        card: codebook size (symbols per codebook).
        dim: transformer width.
        num_heads: attention heads.
        num_layers: transformer layers.
        past_context: frames of history the attention sees.
    """

    num_codebooks: int
    card: int = 1024
    dim: int = 200
    num_heads: int = 8
    num_layers: int = 5
    past_context: int = 262


def lm_checkpoint_path(model_name: str) -> Path:
    """Where Meta's package keeps the LM checkpoint of ``model_name``: torch hub's checkpoint cache."""
    if model_name not in LM_CHECKPOINTS:
        raise ValueError(f"no entropy-coding LM exists for model {model_name!r} (only {', '.join(LM_CHECKPOINTS)})")
    return Path(torch.hub.get_dir()) / "checkpoints" / LM_CHECKPOINTS[model_name]


def load_lm_state(model_name: str, path: str | os.PathLike | None = None, download: bool = True) -> dict:
    """Load the LM state dict of ``model_name`` (``weights_only=True``).

    Args:
        model_name: ``"encodec_24khz"`` or ``"encodec_48khz"``.
        path: an explicit checkpoint file; by default torch hub's checkpoint cache
            (``$TORCH_HOME/hub/checkpoints``), where Meta's ``encodec`` keeps it.
        download: fetch a missing cached file from Meta's URL (its hash prefix is checked).

    Raises:
        MissingLMWeights: the file is missing and could not be downloaded.
    """
    target = Path(path) if path is not None else lm_checkpoint_path(model_name)
    if not target.is_file():
        name = LM_CHECKPOINTS.get(model_name, target.name)
        url = ROOT_URL + name
        if path is not None or not download:
            raise MissingLMWeights(f"LM weights {target} not found; download {url} and put it there")
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        try:
            torch.hub.download_url_to_file(url, str(partial), hash_prefix=name.split("-")[-1].split(".")[0])
            os.replace(partial, target)
        except Exception as exc:  # noqa: BLE001 (any network or hash failure means the same to the user)
            partial.unlink(missing_ok=True)
            raise MissingLMWeights(
                f"LM weights {name} are not in {target.parent} and could not be downloaded from {url} ({exc}); "
                f"download it and put it at {target}, or pass its path"
            ) from exc
    return torch.load(target, map_location="cpu", weights_only=True)


def lm_config(model_name: str, state: dict) -> LMConfig:
    """The LM shape for ``model_name`` with the codebook count found in ``state``."""
    if model_name not in FRAME_RATES:
        raise ValueError(f"no entropy-coding LM exists for model {model_name!r}")
    n_q = sum(1 for key in state if key.startswith("emb.") and key.endswith(".weight"))
    card = int(state["linears.0.weight"].shape[0])
    return LMConfig(num_codebooks=n_q, card=card, past_context=int(3.5 * FRAME_RATES[model_name]))


class LayerWeights:
    """Weights of one transformer layer (on the device of ``state``'s tensors), split as torch's
    attention splits them."""

    def __init__(self, state: dict, prefix: str, dim: int) -> None:
        w = state[prefix + "self_attn.in_proj_weight"].float().contiguous()
        b = state[prefix + "self_attn.in_proj_bias"].float().contiguous()
        self.in_proj = (w, b)
        self.w_q, self.w_kv = w.split([dim, 2 * dim])
        self.b_q, self.b_kv = b.split([dim, 2 * dim])
        self.w_out = state[prefix + "self_attn.out_proj.weight"].float().contiguous()
        self.b_out = state[prefix + "self_attn.out_proj.bias"].float().contiguous()
        self.w1 = state[prefix + "linear1.weight"].float().contiguous()
        self.b1 = state[prefix + "linear1.bias"].float().contiguous()
        self.w2 = state[prefix + "linear2.weight"].float().contiguous()
        self.b2 = state[prefix + "linear2.bias"].float().contiguous()
        self.w_q_t, self.w_kv_t, self.w_out_t = self.w_q.t(), self.w_kv.t(), self.w_out.t()
        self.w1_t, self.w2_t = self.w1.t(), self.w2.t()
        self.norm1 = (state[prefix + "norm1.weight"].float(), state[prefix + "norm1.bias"].float())
        self.norm2 = (state[prefix + "norm2.weight"].float(), state[prefix + "norm2.bias"].float())


def sin_embedding(positions: torch.Tensor, dim: int, max_period: int = 10000) -> torch.Tensor:
    """Meta's sinusoidal position embedding (``create_sin_embedding``) of int ``positions``
    ``[1, T, 1]``: ``[1, T, dim]``, cosines then sines, computed by Meta's ops on ``positions``'
    device (the bits differ between devices)."""
    half = dim // 2
    adim = torch.arange(half, device=positions.device).view(1, 1, -1)
    phase = positions / (max_period ** (adim / (half - 1)))
    return torch.cat([torch.cos(phase), torch.sin(phase)], dim=-1)


def embedding_sum(tables: list[np.ndarray], index: np.ndarray) -> np.ndarray:
    """The LM's input: rows ``index[k]`` of ``tables[k]`` summed over k in order (float32, as Meta's
    ``sum`` of its embeddings), for ``index`` int ``[K]`` (one frame, ``[dim]`` out) or ``[K, n]``
    (``[n, dim]`` out)."""
    acc = tables[0][index[0]].copy()
    for k in range(1, index.shape[0]):
        acc = acc + tables[k][index[k]]
    return acc


def residual_block(layer: LayerWeights, x: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
    """A post-norm layer's rest once its attention output is known, for one frame: ``x``, ``attn``
    ``[1, 1, dim]`` to ``norm2(y + linear2(gelu(linear1(y))))`` with ``y = norm1(x + attn)``.

    ``torch.addmm(b, x, w.t())`` is what ``F.linear`` runs for these inputs on every device
    (same kernel, same bits), without its dispatch and transpose per call."""
    dim = x.shape[-1]
    x = F.layer_norm(x + attn, (dim,), *layer.norm1, 1e-5)
    hidden = F.gelu(torch.addmm(layer.b1, x.view(1, dim), layer.w1_t))
    ff = torch.addmm(layer.b2, hidden, layer.w2_t).view(1, 1, dim)
    return F.layer_norm(x + ff, (dim,), *layer.norm2, 1e-5)


def head_probabilities(x: torch.Tensor, weights: list[torch.Tensor], biases: list[torch.Tensor]) -> torch.Tensor:
    """Meta's heads and softmax on the last layer's output ``x`` ``[1, T, dim]``: probabilities
    ``[1, card, K, T]`` for the K heads given."""
    logits = torch.stack([F.linear(x, w, b) for w, b in zip(weights, biases)], dim=1)
    return torch.softmax(logits.permute(0, 3, 1, 2), dim=1)


def _row_invariant_rows(w: torch.Tensor, b: torch.Tensor, max_rows: int, seed: int = 0) -> int | None:
    """Smallest row count P such that a P-row product gives a row the bits it gets among M >= P rows.

    Checked on random rows for a spread of M up to ``max_rows`` and rows at tile edges.
    """
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(max_rows, 1, w.shape[1], generator=gen)
    sizes = [s for s in (1, 2, 3, 4, 5, 6, 8, 9, 15, 16, 17, 32, 33, 64, 65, 128, 129, 256, 257) if s < max_rows]
    full = {m: F.linear(x[:m], w, b) for m in [*sizes, max_rows]}
    picks = sorted({i for i in (0, 1, 2, 3, 4, 5, 7, 8, 15, 16, 31, 32, max_rows - 1) if i < max_rows})
    for rows in (1, 2, 4, 8, 16):
        pad = torch.zeros(rows, 1, w.shape[1])
        single = {}
        for i in picks:
            pad[0] = x[i]
            single[i] = F.linear(pad, w, b)[0]
        if all(torch.equal(out[i], single[i]) for m, out in full.items() if m >= rows for i in picks if i < m):
            return rows
    return None


def _one_row_products(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``F.linear`` of each row of ``x`` ``[n, 1, in]`` alone, as one batched call (``[n, 1, out]``)."""
    n = x.shape[0]
    return torch.baddbmm(b.expand(n, 1, b.shape[0]), x, w.T.expand(n, *w.T.shape))


def _row_products(rows: torch.Tensor, w: torch.Tensor, b: torch.Tensor, chunk: int) -> torch.Tensor:
    """``F.linear`` of ``rows`` ``[m, 1, in]`` in products of ``chunk`` rows (zero-padded), ``chunk``
    a row count ``_row_invariant_rows`` checked: the bits every product of at least ``pad_rows``
    rows gives."""
    m = rows.shape[0]
    out = torch.empty(m, 1, w.shape[0])
    block = torch.zeros(chunk, 1, rows.shape[2])
    for start in range(0, m, chunk):
        part = rows[start : start + chunk]
        block[: part.shape[0]] = part
        block[part.shape[0] :] = 0
        out[start : start + part.shape[0]] = F.linear(block, w, b)[: part.shape[0]]
    return out


class MetaLM:
    """Meta's LM, stepped one frame at a time with a key/value cache (float32, CPU).

    One instance codes one stream at a time (it holds the stream's state); build one per
    thread. Results match Meta's ``LMModel`` bit for bit on this machine.

    Args:
        state: Meta's LM state dict.
        config: the model's shape (see :func:`lm_config`).
    """

    def __init__(self, state: dict, config: LMConfig) -> None:
        self.config = config
        dim = config.dim
        self._emb = [state[f"emb.{k}.weight"].float().numpy().copy() for k in range(config.num_codebooks)]
        self._heads_w = [state[f"linears.{k}.weight"].float().contiguous() for k in range(config.num_codebooks)]
        self._heads_b = [state[f"linears.{k}.bias"].float().contiguous() for k in range(config.num_codebooks)]
        self._norm_in = (state["transformer.norm_in.weight"].float(), state["transformer.norm_in.bias"].float())
        self._layers = [LayerWeights(state, f"transformer.layers.{i}.", dim) for i in range(config.num_layers)]
        self._pos = torch.zeros(0, dim)
        self._calibrate()
        self.reset(0)

    def _calibrate(self) -> None:
        self._threads = torch.get_num_threads()
        layer = self._layers[0]
        with torch.no_grad():
            self._pad_rows = _row_invariant_rows(layer.w_kv, layer.b_kv, self.config.past_context + 1)
        self._segment_ok: dict[int, bool] = {}

    @property
    def cached(self) -> bool:
        """Whether past keys and values are cached (the BLAS passed the row-invariance check)."""
        return self._pad_rows is not None

    def reset(self, num_codebooks: int) -> None:
        """Start a new stream (segment) coding ``num_codebooks`` codebooks."""
        if not 0 <= num_codebooks <= self.config.num_codebooks:
            raise ValueError(f"the LM codes at most {self.config.num_codebooks} codebooks, got {num_codebooks}")
        if torch.get_num_threads() != self._threads:
            self._calibrate()
        self._k = num_codebooks
        self._offset = 0
        cap = 2 * (self.config.past_context + 1)
        dim = self.config.dim
        self._rows = [torch.zeros(cap, 1, dim) for _ in self._layers]
        self._keys = [torch.zeros(cap, dim) for _ in self._layers]
        self._values = [torch.zeros(cap, dim) for _ in self._layers]
        self._start = 0
        self._end = 1  # the window holds Meta's initial all-zero frame
        self._pad = torch.zeros(self._pad_rows or 1, dim)
        self._mask = torch.zeros(1, 1, 1, self.config.past_context + 1)
        self._valid = False  # cached keys/values were computed by a row-invariant product
        if num_codebooks:
            self._w_heads = torch.cat(self._heads_w[:num_codebooks])
            self._b_heads = torch.cat(self._heads_b[:num_codebooks])
            self._merged_heads = self._check_merged_heads()
            self._w_heads_t = self._w_heads.t()

    def _check_merged_heads(self) -> bool:
        x = torch.randn(1, 1, self.config.dim, generator=torch.Generator().manual_seed(1))
        merged = F.linear(x, self._w_heads, self._b_heads)
        split = torch.cat([F.linear(x, w, b) for w, b in zip(self._heads_w[: self._k], self._heads_b[: self._k])], -1)
        return torch.equal(merged, split)

    def _position(self, offset: int) -> torch.Tensor:
        if offset >= self._pos.shape[0]:
            rows = [  # one row at a time, as Meta computes them (vectorized sin/cos may round otherwise)
                sin_embedding(torch.arange(1).view(1, -1, 1) + p, self.config.dim)[0]
                for p in range(self._pos.shape[0], max(offset + 1, 2 * self._pos.shape[0]))
            ]
            self._pos = torch.cat([self._pos, *rows])
        return self._pos[offset].view(1, 1, -1)

    @torch.no_grad()
    def step(self, previous: np.ndarray | None) -> np.ndarray:
        """Probabilities of the next frame's codes given the previous frame's.

        Args:
            previous: int codes ``[K]`` of the previous frame, or None for a stream's first frame.

        Returns:
            float32 probabilities ``[K, card]`` (row k: codebook k).
        """
        k_count = self._k
        if k_count == 0:
            raise RuntimeError("call reset(num_codebooks) before step")
        if previous is None:
            index = np.zeros(k_count, dtype=np.int64)
        else:
            index = np.asarray(previous, dtype=np.int64) + 1
        x = torch.from_numpy(embedding_sum(self._emb, index)).view(1, 1, -1)
        x = F.layer_norm(x, (self.config.dim,), *self._norm_in, 1e-5)
        x = x + self._position(self._offset)
        for i, layer in enumerate(self._layers):
            x = self._layer(i, layer, x)
        self._advance()
        if self._merged_heads:
            logits = torch.addmm(self._b_heads, x.view(1, -1), self._w_heads_t).view(1, k_count, 1, self.config.card)
            probs = torch.softmax(logits.permute(0, 3, 1, 2), dim=1)
        else:
            probs = head_probabilities(x, self._heads_w[:k_count], self._heads_b[:k_count])
        return probs[0, :, :, 0].T.numpy().copy()

    def step_cdfs(self, previous: np.ndarray | None) -> np.ndarray:
        """:meth:`step`'s probabilities as Meta's quantized CDFs (int64 ``[K, card]``)."""
        return meta_cdfs(self.step(previous))

    def segment_pass(self, num_codebooks: int) -> MetaPass | None:
        """A causal pass over a segment's frames, or None where it would not give :meth:`step`'s bits.

        Encoding knows every frame: the pass runs the LM layer by layer over blocks of frames
        with the bits of :meth:`step` (checked here once per codebook count and thread count
        against :meth:`step` on random codes, two blocks). Starts a new stream (as :meth:`reset`).
        """
        if torch.get_num_threads() != self._threads:
            self._calibrate()
        if self._pad_rows is None:
            return None
        if num_codebooks not in self._segment_ok:
            frames = max(self._pad_rows, 2) + 6
            codes = np.random.default_rng(num_codebooks).integers(0, self.config.card, (num_codebooks, frames))
            check = MetaPass(self, num_codebooks)
            batched = np.concatenate([check.probabilities(codes[:, :3]), check.probabilities(codes[:, 3:])])
            self.reset(num_codebooks)
            stepped = np.stack([self.step(None if t == 0 else codes[:, t - 1]) for t in range(frames)])
            self._segment_ok[num_codebooks] = np.array_equal(batched, stepped)
        self.reset(num_codebooks)
        return MetaPass(self, num_codebooks) if self._segment_ok[num_codebooks] else None

    def _layer(self, i: int, layer: LayerWeights, x: torch.Tensor) -> torch.Tensor:
        # torch.addmm(b, x, w.t()): F.linear's kernel (see residual_block)
        dim, heads = self.config.dim, self.config.num_heads
        head_dim = dim // heads
        start, end = self._start, self._end
        rows, keys, values = self._rows[i], self._keys[i], self._values[i]
        row = x.view(1, dim)
        rows[end] = x[0]
        m = end + 1 - start
        if self._pad_rows is None or m < self._pad_rows or not self._valid:
            kv = torch.addmm(layer.b_kv, rows[start : end + 1].view(m, dim), layer.w_kv_t)
            keys[start : end + 1] = kv[:, :dim]
            values[start : end + 1] = kv[:, dim:]
        else:
            self._pad[0] = row[0]
            kv = torch.addmm(layer.b_kv, self._pad, layer.w_kv_t)
            keys[end] = kv[0, :dim]
            values[end] = kv[0, dim:]
        q = torch.addmm(layer.b_q, row, layer.w_q_t)
        q = q.view(1, heads, head_dim).transpose(0, 1).view(1, heads, 1, head_dim)
        k = keys[start : end + 1].view(m, heads, head_dim).transpose(0, 1).view(1, heads, m, head_dim)
        v = values[start : end + 1].view(m, heads, head_dim).transpose(0, 1).view(1, heads, m, head_dim)
        attn = F.scaled_dot_product_attention(q, k, v, self._mask[..., :m], 0.0, False)
        attn = torch.addmm(layer.b_out, attn.permute(2, 0, 1, 3).reshape(1, dim), layer.w_out_t).view(1, 1, dim)
        return residual_block(layer, x, attn)

    def _advance(self) -> None:
        self._offset += 1
        if self._pad_rows is not None and self._end + 1 - self._start >= self._pad_rows:
            self._valid = True
        self._end += 1
        if self._end - self._start > self.config.past_context:
            self._start += 1
        if self._end + 1 >= self._rows[0].shape[0]:
            count = self._end - self._start
            for buffers in (self._rows, self._keys, self._values):
                for buf in buffers:
                    buf[:count] = buf[self._start : self._end].clone()
            self._start, self._end = 0, count


class MetaPass:
    """One segment of :class:`MetaLM` run layer by layer over blocks of frames (encoding).

    Every product has the shape and row count that :meth:`MetaLM.step` (and so Meta) gives
    it: one-row products run as a batch of one-row products (``baddbmm``), the keys and values
    of windows of at least ``pad_rows`` rows come from row-invariant products; only the
    attention runs frame by frame. Build it with :meth:`MetaLM.segment_pass`, which checks
    that this gives :meth:`MetaLM.step`'s bits on this machine.
    """

    def __init__(self, lm: MetaLM, num_codebooks: int) -> None:
        self.lm = lm
        self.k = num_codebooks
        self.frames = 0
        cfg = lm.config
        zero = torch.zeros(1, 1, cfg.dim)  # row 0: Meta's initial all-zero frame
        self._rows = [zero for _ in lm._layers]
        with torch.no_grad():
            self._kv = [_row_products(zero, layer.w_kv, layer.b_kv, cfg.past_context + 1) for layer in lm._layers]
        self._previous = np.full(num_codebooks, -1, dtype=np.int64)

    @torch.no_grad()
    def probabilities(self, codes: np.ndarray) -> np.ndarray:
        """Probabilities of the next frames of the segment, given their codes (int ``[K, n]``).

        Returns:
            float32 ``[n, K, card]``: frame t's from the frames before it.
        """
        lm, cfg = self.lm, self.lm.config
        k_count, n = codes.shape
        dim, heads, past, pad = cfg.dim, cfg.num_heads, cfg.past_context, lm._pad_rows
        hd = dim // heads
        codes = np.asarray(codes, dtype=np.int64)
        index = np.concatenate([self._previous[:, None], codes[:, :-1]], axis=1) + 1
        acc = embedding_sum(lm._emb, index)
        x = F.layer_norm(torch.from_numpy(acc).view(n, 1, dim), (dim,), *lm._norm_in, 1e-5)
        lm._position(self.frames + n)
        x = x + lm._pos[self.frames : self.frames + n].view(n, 1, dim)
        first = max(0, self.frames + 1 - past)  # the global row of self._rows[i][0]
        for i, layer in enumerate(lm._layers):
            rows = torch.cat([self._rows[i], x])
            kv = torch.cat([self._kv[i], _row_products(x, layer.w_kv, layer.b_kv, past + 1)])
            q = _one_row_products(x, layer.w_q, layer.b_q)
            attn = torch.empty(n, 1, dim)
            for j in range(n):
                t = self.frames + j
                start, end = max(0, t + 1 - past) - first, t + 1 - first
                m = end + 1 - start
                window = kv[start : end + 1] if m >= pad else F.linear(rows[start : end + 1], layer.w_kv, layer.b_kv)
                keys = window[:, 0, :dim].reshape(m, heads, hd).transpose(0, 1).view(1, heads, m, hd)
                values = window[:, 0, dim:].reshape(m, heads, hd).transpose(0, 1).view(1, heads, m, hd)
                query = q[j].view(1, heads, hd).transpose(0, 1).view(1, heads, 1, hd)
                out = F.scaled_dot_product_attention(query, keys, values, torch.zeros(1, 1, 1, m), 0.0, False)
                attn[j] = out.permute(2, 0, 1, 3).reshape(1, dim)
            x = F.layer_norm(x + _one_row_products(attn, layer.w_out, layer.b_out), (dim,), *layer.norm1, 1e-5)
            ff = _one_row_products(F.gelu(_one_row_products(x, layer.w1, layer.b1)), layer.w2, layer.b2)
            x = F.layer_norm(x + ff, (dim,), *layer.norm2, 1e-5)
            keep = max(0, rows.shape[0] - past)  # the next frame sees at most `past` earlier rows
            self._rows[i], self._kv[i] = rows[keep:], kv[keep:]
        self.frames += n
        self._previous = codes[:, -1].copy()
        logits = torch.stack([_one_row_products(x, w, b) for w, b in zip(lm._heads_w[:k_count], lm._heads_b)], 1)
        return torch.softmax(logits.permute(0, 3, 1, 2), dim=1)[:, :, :, 0].permute(0, 2, 1).numpy().copy()

    def cdfs(self, codes: np.ndarray) -> np.ndarray:
        """:meth:`probabilities` as Meta's quantized CDFs, int64 ``[n * K, card]`` (frame-major)."""
        return meta_cdfs(self.probabilities(codes).reshape(-1, self.lm.config.card))
