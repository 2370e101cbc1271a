"""Triton kernels for the networks on CUDA: channels-last convolutions, batched LSTM time steps
(every layer's in one launch), nearest-codebook search, GroupNorm with per-item statistics.

Activations are ``[batch, time, channels]``. Every kernel computes each batch item with
the same reduction order and no atomics whatever the batch size (its caller picks tiles by layer
shape, or for the LSTM tiles that leave every sum's order unchanged), so an item's result does not
depend on its batch-mates. Products are summed in float32;
``prec`` is Triton's ``input_precision`` (``"ieee"``: true float32, ``"tf32"``), ignored
for bfloat16 and float16 operands. Triton is imported only when this module is.
"""

from __future__ import annotations

import triton
import triton.language as tl

COMPILE = {"enable_fp_fusion": True}
"""Compile options of every launch of these kernels (and :mod:`.few_rows`, :mod:`.fused_lstm`): a
multiply followed by an add is one fused multiply-add, as in every measurement in BENCHMARKS.md.
Stated, not left to Triton's default, which Triton 3.9 warns will turn to unfused in 3.10 (a change
of every result's rounding and of speed); a user's ``TRITON_FORCE_DISABLE_FP_FUSION=1`` still wins."""

LENGTHS = ["t_in", "t_out"]
"""Arguments that vary with an item's length: Triton compiles one kernel whatever their values (by
default it specialises integers on ``== 1`` and divisibility by 16, so new lengths would compile
new variants of every layer). Alignment still follows from the channel counts."""


@triton.jit
def _tanh(a):
    return 2.0 * tl.sigmoid(2.0 * a) - 1.0


@triton.jit
def _elu(a):
    af = a.to(tl.float32)
    return tl.where(af > 0, af, tl.exp(af) - 1.0).to(a.dtype)


@triton.jit(do_not_specialize=LENGTHS)
def conv1d_kernel(
    x, w, bias, res, y, t_in, t_out, c_in, c_out, pad_left,
    K: tl.constexpr, STRIDE: tl.constexpr, DIL: tl.constexpr, REFLECT: tl.constexpr, ELU: tl.constexpr,
    ADD: tl.constexpr, PREC: tl.constexpr, BT: tl.constexpr, BCO: tl.constexpr, BCI: tl.constexpr,
    OUTS: tl.constexpr = 0, lens=None, RAGGED: tl.constexpr = False,
    sx=None, sw=None, sbias=None, s_in=0, SHORTCUT: tl.constexpr = False, ELU_OUT: tl.constexpr = False,
):  # fmt: skip
    """``y[b, t, :] = elu?(bias + sum_k w[k] . elu?(x_padded[b, t * STRIDE + k * DIL, :]) (+ res))``;
    ``w`` is ``[K, c_in, c_out]``; padding is reflect or zeros by index arithmetic. ``SHORTCUT``
    (``K == STRIDE == 1``): the residual is a 1x1 conv computed here, ``sbias + sw[0] . sx[b, t, :]``
    (``sx`` ``[B, t_in, s_in]``, ``sw`` ``[1, s_in, c_out]``), in float32, in place of ``res``;
    ``ELU_OUT``: the output's ELU (its consumer's) is applied before the store. Tiles of
    ``BT`` rows, ``BCO`` output and ``BCI`` input channels; ``OUTS``: ``c_out`` if under 16, else 0
    (:func:`_add_channels` says how each is summed). With
    ``RAGGED``, item ``b`` is ``lens[b]`` long (its rows ``>= lens[b]`` are never read): it is
    padded as it would be alone, so its outputs up to its own output length are those it gets alone."""
    t = tl.program_id(0) * BT + tl.arange(0, BT)
    co = tl.program_id(1) * BCO + tl.arange(0, BCO)
    item = tl.program_id(2).to(tl.int64)
    x_item = x + item * t_in * c_in
    if RAGGED:
        n = tl.load(lens + item)
    else:
        n = t_in
    acc = tl.zeros([BT, BCO], tl.float32)
    co_ok = co < c_out
    for k in tl.static_range(K):
        src = t * STRIDE + k * DIL - pad_left
        if REFLECT:
            src = tl.where(src < 0, -src, src)
            src = tl.where(src >= n, 2 * (n - 1) - src, src)
        ok = (src >= 0) & (src < n) & (t < t_out)
        acc = _add_channels(acc, x_item + src * c_in, ok, w, k, c_in, c_out, co, co_ok, K, ELU, PREC, BCI, OUTS)
    acc += tl.load(bias + co, mask=co_ok, other=0.0)[None, :]
    at = item * t_out * c_out + t[:, None] * c_out + co[None, :]
    keep = (t < t_out)[:, None] & co_ok[None, :]
    if SHORTCUT:
        ok = (t < n) & (t < t_out)
        short = _add_channels(tl.zeros([BT, BCO], tl.float32), sx + item * t_in * s_in + t * s_in, ok, sw, 0, s_in,
                              c_out, co, co_ok, 1, False, PREC, BCI, OUTS)  # fmt: skip
        acc += short + tl.load(sbias + co, mask=co_ok, other=0.0)[None, :]
    elif ADD:
        acc += tl.load(res + at, mask=keep, other=0.0).to(tl.float32)
    if ELU_OUT:
        acc = _elu(acc)
    tl.store(y + at, acc.to(y.dtype.element_ty), mask=keep)


@triton.jit(do_not_specialize=LENGTHS)
def conv_transpose1d_kernel(
    x, w, bias, y, t_in, t_out, c_in, c_out, trim_left,
    K: tl.constexpr, STRIDE: tl.constexpr, ELU: tl.constexpr, PREC: tl.constexpr,
    BQ: tl.constexpr, BCO: tl.constexpr, BCI: tl.constexpr, OUTS: tl.constexpr = 0,
    lens=None, RAGGED: tl.constexpr = False, ELU_OUT: tl.constexpr = False,
):  # fmt: skip
    """Transposed conv as ``STRIDE`` phases: ``y[b, q * STRIDE + r - trim_left] = elu?(bias +
    sum_j w[r + j * STRIDE] . elu?(x[b, q - j]))``; ``w`` is ``[K, c_in, c_out]``; tiles, ``OUTS`` and
    ``ELU_OUT`` as in :func:`conv1d_kernel`. With ``RAGGED``,
    item ``b``'s rows ``>= lens[b]`` read as zeros (the end of the item alone)."""
    q = tl.program_id(0) * BQ + tl.arange(0, BQ)
    co = tl.program_id(1) * BCO + tl.arange(0, BCO)
    item = (tl.program_id(2) // STRIDE).to(tl.int64)
    phase = tl.program_id(2) % STRIDE
    x_item = x + item * t_in * c_in
    if RAGGED:
        n = tl.load(lens + item)
    else:
        n = t_in
    acc = tl.zeros([BQ, BCO], tl.float32)
    co_ok = co < c_out
    for j in tl.static_range((K + STRIDE - 1) // STRIDE):
        k = phase + j * STRIDE
        src = q - j
        ok = (src >= 0) & (src < n)
        acc = _add_channels(acc, x_item + src * c_in, ok, w, k, c_in, c_out, co, co_ok, K, ELU, PREC, BCI, OUTS)
    acc += tl.load(bias + co, mask=co_ok, other=0.0)[None, :]
    if ELU_OUT:
        acc = _elu(acc)
    u = q * STRIDE + phase - trim_left
    keep = ((u >= 0) & (u < t_out))[:, None] & co_ok[None, :]
    tl.store(y + item * t_out * c_out + u[:, None] * c_out + co[None, :], acc.to(y.dtype.element_ty), mask=keep)


@triton.jit
def _add_channels(
    acc, x_rows, ok, w, k, c_in, c_out, co, co_ok,
    K: tl.constexpr, ELU: tl.constexpr, PREC: tl.constexpr, BCI: tl.constexpr, OUTS: tl.constexpr,
):  # fmt: skip
    """``acc + elu?(x) @ w[k]`` over all ``c_in`` channels, ``BCI`` a chunk: ``x_rows`` ``[BT]`` points
    at each row's first channel (rows masked by ``ok``), ``w`` at ``[K, c_in, c_out]`` weights (tap
    ``k``; zeros if ``k >= K``), ``co`` ``[BCO]`` the output channels. ``BCI == 1``: outer products (layers of
    fewer than 16 input channels); ``OUTS > 0`` (fewer than 16 output channels): each channel's
    float32 products summed across the chunk; otherwise a tensor-core (IEEE float32: FMA) ``tl.dot``."""
    for c0 in range(0, c_in, BCI):
        if BCI == 1:
            a = tl.load(x_rows + c0, mask=ok, other=0.0)
            if ELU:
                a = _elu(a)
            b = tl.load(w + (k * c_in + c0) * c_out + co, mask=co_ok & ((co * 0 + k) < K), other=0.0)
            acc += a.to(tl.float32)[:, None] * b.to(tl.float32)[None, :]
        else:
            ci = c0 + tl.arange(0, BCI)
            ci_ok = ci < c_in
            a = tl.load(x_rows[:, None] + ci[None, :], mask=ok[:, None] & ci_ok[None, :], other=0.0)
            if ELU:
                a = _elu(a)
            b_ok = ci_ok[:, None] & co_ok[None, :] & ((ci[:, None] * 0 + k) < K)
            b = tl.load(w + (k * c_in + ci[:, None]) * c_out + co[None, :], mask=b_ok, other=0.0)
            if OUTS > 0:
                a32, b32 = a.to(tl.float32), b.to(tl.float32)
                for j in tl.static_range(OUTS):
                    column = co[None, :] == j
                    b_j = tl.sum(tl.where(column, b32, 0.0), 1)
                    acc += tl.where(column, tl.sum(a32 * b_j[None, :], 1)[:, None], 0.0)
            else:
                acc = tl.dot(a, b, acc, input_precision=PREC)
    return acc


@triton.jit
def lstm_wave_kernel(
    gates_in, w_ih, w_hh, bias, h, c, out, res, wave, steps, batch, plane,
    L: tl.constexpr, H: tl.constexpr, PREC: tl.constexpr,
    BM: tl.constexpr, U: tl.constexpr, BK: tl.constexpr,
):  # fmt: skip
    """One wave of an ``L``-layer LSTM: layer ``l`` computes its time step ``t = wave - l`` (if
    ``0 <= t < steps``) for every item, so ``steps + L - 1`` launches run the whole network.

    Layer 0: ``gates = gates_in[:, t] + h[0, :, t - 1] @ W_hh0.T`` (its input projection and
    biases precomputed); layer ``l > 0``: ``gates = h[l - 1, :, t] @ W_ihl.T + h[l, :, t - 1] @
    W_hhl.T + bias[l]``, its input the layer below's output of the wave before. Gate order i, f,
    g, o; cell update in float32 (``gates_in`` ``[batch, steps, 4H]``, ``bias`` ``[L, 4H]`` and
    ``c`` ``[L, batch, H]`` float32). Writes ``h[l, :, t]`` (``h`` ``[L, batch, steps, H]``,
    ``plane = batch * steps * H``; rounded to ``h``'s dtype, that of the weights), ``c`` in place
    and the last layer's ``out[:, t] = h + res[:, t]`` (``[batch, steps, H]``) from the unrounded ``h``.

    A program computes ``U`` hidden units of ``BM`` items of one layer, their four gates in one
    product: ``w_hh`` ``[L, H, 4H]`` and ``w_ih`` ``[L - 1, H, 4H]`` hold ``W.T`` laid out by
    :func:`units_layout` (program ``p``'s columns ``p * 4U .. p * 4U + 4U - 1`` hold gates i, f,
    g, o of its units), so one ``[BM, BK] x [BK, 4U]`` ``tl.dot`` a chunk computes every gate
    (``4U >= 16``)."""
    layer = tl.program_id(1) // (H // U)
    p = tl.program_id(1) % (H // U)
    t = wave - layer
    if (t >= 0) & (t < steps):
        m = tl.program_id(0) * BM + tl.arange(0, BM)
        n = tl.arange(0, 4 * U)  # column n: gate n // U of unit p * U + n % U
        m_ok = (m < batch)[:, None]
        row = m.to(tl.int64)[:, None] * steps + t
        h_l = h + layer.to(tl.int64) * plane
        acc = tl.zeros([BM, 4 * U], tl.float32)
        columns = p * 4 * U + n[None, :]
        if layer > 0:  # the layer below's output at t
            w_l = w_ih + (layer - 1).to(tl.int64) * (H * 4 * H) + columns
            acc = _add_rows_times(acc, h_l - plane + row * H, w_l, m_ok, H, BK, PREC)
        if t > 0:  # this layer's output at t - 1
            w_l = w_hh + layer.to(tl.int64) * (H * 4 * H) + columns
            acc = _add_rows_times(acc, h_l + (row - 1) * H, w_l, m_ok, H, BK, PREC)
        column = (n // U) * H + p * U + n % U  # in the gate-major layout of gates_in and bias
        if layer == 0:
            acc += tl.load(gates_in + row * (4 * H) + column[None, :], mask=m_ok, other=0.0)
        else:
            acc += tl.load(bias + layer * (4 * H) + column)[None, :]
        pre = tl.reshape(acc, [BM, 4, U])
        gate = tl.arange(0, 4)[None, :, None]
        u = p * U + tl.arange(0, U)
        c_at = c + (layer.to(tl.int64) * batch + m.to(tl.int64)[:, None]) * H + u[None, :]
        h_new, c_new = _lstm_cell(pre, tl.load(c_at, mask=m_ok, other=0.0), gate)
        tl.store(c_at, c_new, mask=m_ok)
        h_at = row * H + u[None, :]
        tl.store(h_l + h_at, h_new.to(h.dtype.element_ty), mask=m_ok)
        if layer == L - 1:
            value = h_new + tl.load(res + h_at, mask=m_ok, other=0.0).to(tl.float32)
            tl.store(out + h_at, value.to(out.dtype.element_ty), mask=m_ok)


@triton.jit
def _add_rows_times(acc, rows, w, m_ok, H: tl.constexpr, BK: tl.constexpr, PREC: tl.constexpr):
    """``acc + x @ w`` in chunks of ``BK``: ``rows`` points at each item's ``H`` values ``[BM, 1]``
    (masked by ``m_ok``), ``w`` at the columns of a ``[H, 4H]`` matrix ``[1, 4U]``."""
    for k0 in range(0, H, BK):
        k = k0 + tl.arange(0, BK)
        x = tl.load(rows + k[None, :], mask=m_ok, other=0.0)
        acc = tl.dot(x, tl.load(w + k[:, None] * (4 * H)), acc, input_precision=PREC)
    return acc


@triton.jit
def _lstm_cell(pre, c, gate):
    """The float32 cell update from pre-activations ``pre`` ``[BM, 4, U]`` (gates i, f, g, o on
    axis 1) and the cell ``c`` ``[BM, U]``: ``(h, c)``."""
    i = tl.sigmoid(tl.sum(tl.where(gate == 0, pre, 0.0), 1))
    f = tl.sigmoid(tl.sum(tl.where(gate == 1, pre, 0.0), 1))
    g = _tanh(tl.sum(tl.where(gate == 2, pre, 0.0), 1))
    o = tl.sigmoid(tl.sum(tl.where(gate == 3, pre, 0.0), 1))
    c = f * c + i * g
    return o * _tanh(c), c


def units_layout(w_t, units: int):
    """An LSTM weight's transpose ``W.t()`` ``[H, 4H]`` (gate-major columns) to
    :func:`lstm_wave_kernel`'s layout: the four gates of each group of ``units`` hidden units side by side."""
    k, four_h = w_t.shape
    width = four_h // 4
    return w_t.reshape(k, 4, width // units, units).transpose(1, 2).reshape(k, four_h)


@triton.jit(do_not_specialize=["rows"])
def residual_codes_kernel(
    x, embed, embed_sq, codes, rows, bins,
    NQ: tl.constexpr, D: tl.constexpr, PREC: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
):  # fmt: skip
    """Residual vector quantization of ``BM`` rows a program, every codebook in one launch.

    For codebook ``k`` in order: ``codes[r, k] = argmax_n -(|x_r|^2 - 2 x_r . e_kn + |e_kn|^2)``
    (products in ``PREC``, Triton's ``input_precision``; sums in float32; lowest index on
    ties), then ``x_r -= e_k[codes[r, k]]`` in float32; the residual stays
    in registers. ``x`` ``[rows, D]`` float32, ``embed`` ``[NQ, bins, D]``, ``embed_sq``
    ``[NQ, bins]``, ``codes`` ``[rows, NQ]`` int64. Each row's sums run in the same order in any
    program, so a row's codes do not depend on the other rows."""
    r = tl.program_id(0) * BM + tl.arange(0, BM)
    d = tl.arange(0, D)
    r_ok = r < rows
    xs = tl.load(x + r.to(tl.int64)[:, None] * D + d[None, :], mask=r_ok[:, None], other=0.0)
    for k in range(NQ):
        book = embed + k * bins * D
        x_sq = tl.sum(xs * xs, 1)
        best = tl.full([BM], float("-inf"), tl.float32)
        best_at = tl.zeros([BM], tl.int32)
        for n0 in range(0, bins, BN):
            n = n0 + tl.arange(0, BN)
            n_ok = n < bins
            e = tl.load(book + n[:, None] * D + d[None, :], mask=n_ok[:, None], other=0.0)
            dots = tl.dot(xs, tl.trans(e), input_precision=PREC)
            dist = -(x_sq[:, None] - 2 * dots + tl.load(embed_sq + k * bins + n, mask=n_ok, other=0.0)[None, :])
            dist = tl.where(n_ok[None, :], dist, float("-inf"))
            tile_best = tl.max(dist, 1)
            tile_at = tl.argmax(dist, 1, tie_break_left=True) + n0
            better = tile_best > best
            best_at = tl.where(better, tile_at, best_at)
            best = tl.where(better, tile_best, best)
        tl.store(codes + r.to(tl.int64) * NQ + k, best_at.to(tl.int64), mask=r_ok)
        xs = xs - tl.load(book + best_at[:, None] * D + d[None, :])


@triton.jit
def group_norm_partial_kernel(y, mean, partial, n, CENTER: tl.constexpr, CHUNK: tl.constexpr, BLOCK: tl.constexpr):
    """Per item ``b`` and chunk ``j`` of its ``n`` values: ``partial[b, j] = sum(v)`` over the chunk's
    values ``v = y`` (or ``(y - mean[b])^2`` when ``CENTER``), in float32, in a fixed order."""
    chunk = tl.program_id(0)
    item = tl.program_id(1).to(tl.int64)
    base = y + item * n
    m = tl.load(mean + item) if CENTER else 0.0
    acc = tl.zeros([BLOCK], tl.float32)
    for start in range(0, CHUNK, BLOCK):
        i = chunk * CHUNK + start + tl.arange(0, BLOCK)
        v = tl.load(base + i, mask=i < n, other=0.0).to(tl.float32)
        if CENTER:
            v = tl.where(i < n, (v - m) * (v - m), 0.0)
        acc += v
    tl.store(partial + item * tl.num_programs(0) + chunk, tl.sum(acc, 0))


@triton.jit
def group_norm_total_kernel(partial, out, chunks, n, eps, RSTD: tl.constexpr, BLOCK: tl.constexpr):
    """``out[b] = sum_j partial[b, j] / n`` (a mean), or ``1 / sqrt(that + eps)`` when ``RSTD``."""
    item = tl.program_id(0).to(tl.int64)
    acc = tl.zeros([BLOCK], tl.float32)
    for start in range(0, chunks, BLOCK):
        j = start + tl.arange(0, BLOCK)
        acc += tl.load(partial + item * chunks + j, mask=j < chunks, other=0.0)
    total = tl.sum(acc, 0) / n
    if RSTD:
        total = 1.0 / tl.sqrt(total + eps)
    tl.store(out + item, total)


@triton.jit
def group_norm_apply_kernel(
    y, mean, rstd, weight, bias, res, out, t, c,
    ADD: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr, ELU_OUT: tl.constexpr = False,
):  # fmt: skip
    """``out[b, t, :] = elu?((y[b, t, :] - mean[b]) * rstd[b] * weight + bias (+ res[b, t, :]))``,
    channels-last, computed in float32 and stored in ``out``'s dtype."""
    rows = tl.program_id(0) * BT + tl.arange(0, BT)
    cols = tl.arange(0, BC)
    item = tl.program_id(1).to(tl.int64)
    mask = (rows[:, None] < t) & (cols[None, :] < c)
    offs = item * t * c + rows[:, None] * c + cols[None, :]
    v = tl.load(y + offs, mask=mask, other=0.0).to(tl.float32)
    w = tl.load(weight + cols, mask=cols < c, other=0.0)
    b = tl.load(bias + cols, mask=cols < c, other=0.0)
    v = (v - tl.load(mean + item)) * tl.load(rstd + item) * w[None, :] + b[None, :]
    if ADD:
        v = v + tl.load(res + offs, mask=mask, other=0.0).to(tl.float32)
    if ELU_OUT:
        v = _elu(v)
    tl.store(out + offs, v.to(out.dtype.element_ty), mask=mask)
