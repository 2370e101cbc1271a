"""CPU kernels for short stream pushes (a few frames), where ATen's general kernels are slow.

Each computes what the corresponding ``torch.nn`` layer computes, with the same float32
operations per output (see BENCHMARKS.md for the speed-ups).
"""

from __future__ import annotations

import threading
import weakref

import torch
from torch import nn

SHORT_PUSH_FRAMES = 16
"""CPU LSTM inputs of at most this many frames run step by step here: oneDNN re-lays out all the
weights on every call."""


def conv_transpose_matmul(x: torch.Tensor, weight: torch.Tensor, stride: int) -> torch.Tensor:
    """``F.conv_transpose1d(x, weight, stride=stride)`` (no bias) as one matrix product and an
    overlap-add; faster than ATen's kernel on a CPU for inputs of a few steps (BENCHMARKS.md).

    ``x`` ``[batch, in, steps]``, ``weight`` ``[in, out, kernel]``; returns
    ``[batch, out, (steps - 1) * stride + kernel]``.
    """
    batch, _, steps = x.shape
    cin, cout, kernel = weight.shape
    cols = torch.matmul(x.transpose(1, 2), weight.reshape(cin, cout * kernel)).view(batch, steps, cout, kernel)
    phases = -(-kernel // stride)
    y = x.new_zeros(batch, cout, (steps + phases - 1) * stride)
    for p in range(phases):
        part = cols[..., p * stride : (p + 1) * stride]  # the last phase may be shorter than the stride
        span = y[..., p * stride : p * stride + steps * stride].view(batch, cout, steps, stride)
        span[..., : part.shape[-1]] += part.transpose(1, 2)
    return y[..., : (steps - 1) * stride + kernel]


_STEP_LOCK = threading.Lock()
_STEP_WEIGHTS: weakref.WeakKeyDictionary[nn.LSTM, tuple[tuple, list]] = weakref.WeakKeyDictionary()


def step_weights(lstm: nn.LSTM) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per layer ``(W_ih^T, W_hh^T, b_ih, b_hh)`` with the matrices stored transposed, cached per module.

    A one-frame step is a matrix-vector product bound by reading the weights; a contiguous
    ``[input, 4 * hidden]`` matrix streams faster than the ``[4 * hidden, input]`` layout that
    ``nn.LSTM`` keeps (timings in BENCHMARKS.md, "Measurements behind the code").
    """
    params = [
        [getattr(lstm, f"{name}_l{layer}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        for layer in range(lstm.num_layers)
    ]
    key = tuple((p.data_ptr(), p._version) for layer in params for p in layer)  # changed weights rebuild
    with _STEP_LOCK:
        cached = _STEP_WEIGHTS.get(lstm)
        if cached is None or cached[0] != key:
            layers = [(w_ih.t().contiguous(), w_hh.t().contiguous(), b_ih, b_hh) for w_ih, w_hh, b_ih, b_hh in params]
            cached = _STEP_WEIGHTS[lstm] = (key, layers)
    return cached[1]


def lstm_steps(
    layers: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]],
    seq: torch.Tensor,
    state: tuple[torch.Tensor, torch.Tensor] | None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """``nn.LSTM`` on ``seq`` ``[steps, batch, input]`` from ``state`` (h, c) ``[layers, batch, hidden]``,
    one step at a time, as ATen's LSTM cell computes it (gates in the order i, f, g, o)."""
    steps, batch = seq.shape[0], seq.shape[1]
    hidden = layers[0][1].shape[0]
    if state is None:
        state = (seq.new_zeros(len(layers), batch, hidden), seq.new_zeros(len(layers), batch, hidden))
    out, last_h, last_c = seq, [], []
    for layer, (w_ih, w_hh, b_ih, b_hh) in enumerate(layers):
        x_gates = torch.addmm(b_ih, out.reshape(steps * batch, -1), w_ih).view(steps, batch, -1)
        h, c = state[0][layer], state[1][layer]
        outputs = []
        for t in range(steps):
            gates = torch.addmm(b_hh, h, w_hh).add_(x_gates[t])
            i, f, g, o = gates.chunk(4, 1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outputs.append(h)
        out = torch.stack(outputs)
        last_h.append(h)
        last_c.append(c)
    return out, (torch.stack(last_h), torch.stack(last_c))
