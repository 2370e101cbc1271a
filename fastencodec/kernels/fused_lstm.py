"""A persistent two-layer LSTM kernel for batch 1 on CUDA (Triton).

cuDNN runs an LSTM at batch 1 as two tiny kernels per layer and time step; even replayed
as a CUDA graph, the codec's two layers' steps are most of encoding 10 s of audio on a GPU.
Here one kernel runs every step: each program keeps the weight
rows of a few hidden units in registers, the two layers run as a wavefront (layer 2 at step
``t - 1`` while layer 1 is at step ``t``), and the programs meet at a grid-wide barrier
(an atomic counter) once per step (timings in BENCHMARKS.md). Only layer 1's input
projection, which needs no recurrence, runs before, as one matrix product.

The arithmetic is float32 throughout (sums in another order than cuDNN's: outputs agree
to about 1e-7). Used by :class:`fastencodec.nn.layers.GraphedLSTM` when :func:`supports` says so;
Triton is imported only then.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

UNITS_PER_PROGRAM = 4
"""Hidden units per program (fewer programs meet faster at the barrier, more share the work)."""


def supports(lstm: nn.LSTM, x: torch.Tensor) -> bool:
    """Whether the kernel can run ``lstm`` on ``x`` ``[steps >= 1, 1, features]``: CUDA, float32,
    batch 1, no autograd or dropout, two unidirectional layers of a power-of-two width, Triton
    installed."""
    if not (x.is_cuda and x.dtype == torch.float32 and x.dim() == 3 and x.shape[0] >= 1 and x.shape[1] == 1):
        return False
    if torch.is_grad_enabled() or (lstm.training and lstm.dropout):
        return False
    width = lstm.hidden_size
    shape_ok = (
        all(w.dtype == torch.float32 and w.is_contiguous() for w in lstm._flat_weights)
        and lstm.num_layers == 2
        and lstm.input_size == width
        and width & (width - 1) == 0
        and width >= 64
        and lstm.bias
        and not lstm.bidirectional
        and not lstm.batch_first
        and lstm.proj_size == 0
    )
    return shape_ok and _kernel() is not None


def run(
    lstm: nn.LSTM, x: torch.Tensor, hx: tuple[torch.Tensor, torch.Tensor] | None
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """``lstm(x, hx)`` for inputs :func:`supports` accepts: ``(y [steps, 1, H], (h, c) [2, 1, H])``."""
    from fastencodec.kernels.triton_ops import COMPILE  # Triton is installed: supports() said so

    steps, _, width = x.shape
    units = _units_per_program(width, x.device)
    w_ih0, w_hh0, b_ih0, b_hh0, w_ih1, w_hh1, b_ih1, b_hh1 = lstm._flat_weights
    x_gates = torch.addmm(b_ih0 + b_hh0, x.reshape(steps, width), w_ih0.t())
    if hx is None:
        h0 = c0 = x.new_zeros(2, width)
    else:
        h0, c0 = hx[0].reshape(2, width), hx[1].reshape(2, width).contiguous()
    h1 = torch.stack([h0[0], h0[0]])  # ping-pong buffers: [step parity, width]
    h2 = torch.stack([h0[1], h0[1]])
    y = x.new_empty(steps, 1, width)
    h_n, c_n = x.new_empty(2, 1, width), x.new_empty(2, 1, width)
    arrivals = torch.zeros(1, dtype=torch.int32, device=x.device)
    _kernel()[(width // units,)](
        x_gates, w_hh0, w_ih1, w_hh1, (b_ih1 + b_hh1).contiguous(), h1, h2, c0, y, h_n, c_n, arrivals, steps,
        H=width, HB=units, num_warps=4, **COMPILE,
    )  # fmt: skip
    return y, (h_n, c_n)


def _units_per_program(width: int, device: torch.device) -> int:
    """Units per program such that every program fits on the GPU at once (the barrier needs it)."""
    units = UNITS_PER_PROGRAM
    while width // units > torch.cuda.get_device_properties(device).multi_processor_count:
        units *= 2
    return min(units, width)


@functools.cache
def _kernel():
    """The compiled-on-first-use Triton kernel, or None without Triton."""
    try:
        import triton
        import triton.language as tl
        from triton.language.extra import libdevice
    except ImportError:
        return None

    @triton.jit
    def cell(pre, c, gate):
        """One LSTM cell update from the gate pre-activations ``pre`` [4, HB]: (h, c)."""
        act = tl.where(gate == 2, libdevice.tanh(pre), tl.sigmoid(pre))
        i = tl.sum(tl.where(gate == 0, act, 0.0), 0)
        f = tl.sum(tl.where(gate == 1, act, 0.0), 0)
        g = tl.sum(tl.where(gate == 2, act, 0.0), 0)
        o = tl.sum(tl.where(gate == 3, act, 0.0), 0)
        c = f * c + i * g
        return o * libdevice.tanh(c), c

    @triton.jit
    def lstm2_batch1(
        x_gates, w_hh0, w_ih1, w_hh1, b1, h1, h2, c0, y, h_n, c_n, arrivals, steps,
        H: tl.constexpr, HB: tl.constexpr,
    ):  # fmt: skip
        program = tl.program_id(0)
        programs = tl.num_programs(0)
        gate = tl.arange(0, 4)[:, None]  # i, f, g, o
        mine = program * HB + tl.arange(0, HB)  # this program's hidden units
        rows = gate * H + mine[None, :]  # [4, HB]: their rows in each weight matrix
        k = tl.arange(0, H)
        at = rows[:, :, None] * H + k[None, None, :]
        w0, wi1, wh1 = tl.load(w_hh0 + at), tl.load(w_ih1 + at), tl.load(w_hh1 + at)
        bias1 = tl.load(b1 + rows)
        c_1 = tl.load(c0 + mine)
        c_2 = tl.load(c0 + H + mine)
        for s in range(0, steps + 1):
            # layer 1 runs step s, layer 2 step s - 1; both read h1 of step s - 1
            h1_prev = tl.load(h1 + (s % 2) * H + k, cache_modifier=".cg")
            if s < steps:
                pre = tl.sum(w0 * h1_prev[None, None, :], axis=2) + tl.load(x_gates + s * 4 * H + rows)
                h, c_1 = cell(pre, c_1, gate)
                tl.store(h1 + ((s + 1) % 2) * H + mine, h)
                if s == steps - 1:
                    tl.store(h_n + mine, h)
                    tl.store(c_n + mine, c_1)
            if s >= 1:
                h2_prev = tl.load(h2 + ((s + 1) % 2) * H + k, cache_modifier=".cg")
                pre = (
                    tl.sum(wi1 * h1_prev[None, None, :], axis=2) + tl.sum(wh1 * h2_prev[None, None, :], axis=2) + bias1
                )
                h, c_2 = cell(pre, c_2, gate)
                tl.store(h2 + (s % 2) * H + mine, h)
                tl.store(y + (s - 1) * H + mine, h)
                if s == steps:
                    tl.store(h_n + H + mine, h)
                    tl.store(c_n + H + mine, c_2)
            # grid-wide barrier: every program's h of this step is written before any reads it
            tl.debug_barrier()
            tl.atomic_add(arrivals, 1, sem="release", scope="gpu")
            seen = tl.atomic_add(arrivals, 0, sem="acquire", scope="gpu")
            while seen < (s + 1) * programs:
                seen = tl.atomic_add(arrivals, 0, sem="acquire", scope="gpu")
            tl.debug_barrier()

    return lstm2_batch1
