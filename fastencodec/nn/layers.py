"""The EnCodec network's building blocks: padded convolutions, residual blocks, LSTMs.

Tensors are ``[batch, channels, time]``. Parameter names follow the Hugging Face
layout with weight norm already folded (``encoder.layers.0.conv.weight``), so a
reader can match them against either reference implementation.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from fastencodec.kernels import fused_lstm
from fastencodec.nn.config import EncodecConfig


def extra_padding(length: int, kernel: int, stride: int, padding_total: int) -> int:
    """Samples to append so that the last window of a strided conv is complete.

    Args:
        length: input samples.
        kernel: the conv's effective kernel in samples (dilation included).
        stride: the conv's stride in samples.
        padding_total: the conv's fixed padding in samples (``kernel - stride``).

    Returns:
        Samples of extra right padding (0 or more).
    """
    n_frames = -(-(length - kernel + padding_total) // stride) + 1
    ideal_length = (n_frames - 1) * stride + kernel - padding_total
    return ideal_length - length


def pad1d(x: torch.Tensor, left: int, right: int, mode: str) -> torch.Tensor:
    """``F.pad`` on the time axis that also reflect-pads inputs shorter than the pad.

    Args:
        x: ``[batch, channels, samples]``.
        left: samples to add before the signal.
        right: samples to add after it.
        mode: ``F.pad`` mode (``"reflect"``, ``"constant"``, ...).

    Returns:
        ``[batch, channels, left + samples + right]``.
    """
    if not left and not right:
        return x
    if mode != "reflect":
        return F.pad(x, (left, right), mode)
    length = x.shape[-1]
    extra = max(left, right) - length + 1 if length <= max(left, right) else 0
    if extra:
        x = F.pad(x, (0, extra))
    padded = F.pad(x, (left, right), mode)
    return padded[..., : padded.shape[-1] - extra]


class Conv1d(nn.Module):
    """Conv1d with the reference's causal or centred padding and optional GroupNorm.

    Args:
        cfg: the model's config (causality, pad mode, normalisation).
        cin: input channels.
        cout: output channels.
        kernel: kernel size in samples.
        stride: stride in samples.
        dilation: dilation of the kernel.
    """

    def __init__(self, cfg: EncodecConfig, cin: int, cout: int, kernel: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, kernel, stride, dilation=dilation)
        self.norm = nn.GroupNorm(1, cout) if cfg.norm == "time_group_norm" else None
        self.causal = cfg.causal
        self.pad_mode = cfg.pad_mode
        self.kernel = (kernel - 1) * dilation + 1
        self.stride = stride
        self.padding_total = self.kernel - stride

    def padding(self, length: int) -> tuple[int, int]:
        """(left, right) padding in samples for an input of ``length`` samples."""
        extra = extra_padding(length, self.kernel, self.stride, self.padding_total)
        if self.causal:
            return self.padding_total, extra
        right = self.padding_total // 2
        return self.padding_total - right, right + extra

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[batch, cin, samples]`` to ``[batch, cout, ceil(samples / stride)]``."""
        x = pad1d(x, *self.padding(x.shape[-1]), self.pad_mode)
        x = self.conv(x)
        return x if self.norm is None else self.norm(x)


class ConvTranspose1d(nn.Module):
    """ConvTranspose1d that trims its fixed padding as the reference does.

    Args:
        cfg: the model's config (causality, ``trim_right_ratio``, normalisation).
        cin: input channels.
        cout: output channels.
        kernel: kernel size in samples.
        stride: upsampling factor.
    """

    def __init__(self, cfg: EncodecConfig, cin: int, cout: int, kernel: int, stride: int):
        super().__init__()
        self.conv = nn.ConvTranspose1d(cin, cout, kernel, stride)
        self.norm = nn.GroupNorm(1, cout) if cfg.norm == "time_group_norm" else None
        self.stride = stride
        total = kernel - stride
        right = math.ceil(total * cfg.trim_right_ratio) if cfg.causal else total // 2
        self.trim = (total - right, right)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[batch, cin, frames]`` to ``[batch, cout, frames * stride]``."""
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x)
        left, right = self.trim
        return x[..., left : x.shape[-1] - right]


class ResnetBlock(nn.Module):
    """SEANet residual block: ELU, dilated conv, ELU, 1x1 conv, plus a (1x1 conv) shortcut.

    Args:
        cfg: the model's config (kernel, ``compress``, shortcut kind).
        dim: channels in and out.
        dilation: dilation of the first conv.
    """

    def __init__(self, cfg: EncodecConfig, dim: int, dilation: int):
        super().__init__()
        hidden = dim // cfg.compress
        self.block = nn.Sequential(
            nn.ELU(),
            Conv1d(cfg, dim, hidden, cfg.residual_kernel_size, dilation=dilation),
            nn.ELU(inplace=True),
            Conv1d(cfg, hidden, dim, 1),
        )
        self.shortcut = Conv1d(cfg, dim, dim, 1) if cfg.conv_shortcut else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[batch, dim, samples]`` to the same shape."""
        y = self.block(x)
        return y.add_(self.shortcut(x))


class ReplayOrder:
    """Serialises, on the GPU, the replays of CUDA graphs that share memory (a graph's static
    inputs and outputs, or one memory pool of several graphs), whatever CUDA stream each caller
    uses: a replay waits (an event) until the previous one's outputs were copied out, and copies
    its own before the next can start. Callers hold their lock around :meth:`replay`."""

    def __init__(self) -> None:
        self._done: torch.cuda.Event | None = None

    def replay(self, graph: torch.cuda.CUDAGraph, static_in: tuple, inputs: tuple, copy_out: Any) -> Any:
        """Copy ``inputs`` into ``static_in``, replay ``graph`` and return ``copy_out()`` (fresh
        copies of its outputs), all on the current stream, after the previous replay's copies."""
        stream = torch.cuda.current_stream(static_in[0].device)
        if self._done is not None:
            stream.wait_event(self._done)
        for buffer, value in zip(static_in, inputs):
            buffer.copy_(value)
        graph.replay()
        out = copy_out()
        self._done = torch.cuda.Event()
        self._done.record(stream)
        return out


class GraphedLSTM(nn.LSTM):
    """``nn.LSTM`` that replays a CUDA graph for input shapes it has already seen.

    cuDNN runs an LSTM at small batch as two tiny kernels per time step, so eager
    inference is bound by launch overhead (timings in BENCHMARKS.md). From the second call with the same shapes,
    dtype, device and weights (without autograd, on CUDA), the call is captured once and
    replayed; replay runs the same kernels, so results are bitwise equal to eager.
    Outputs are fresh tensors (copies of the graph's buffers). At most ``MAX_GRAPHS``
    graphs, each of at most ``MAX_GRAPH_BYTES`` of output, are kept (least recently used
    dropped). A lock makes the cache and each replay (whose buffers are shared) safe to use
    from several threads, and :class:`ReplayOrder` keeps replays apart on the GPU. Batch 1 in float32 with Triton
    installed runs :mod:`fastencodec.kernels.fused_lstm`'s single kernel instead.
    """

    MAX_GRAPHS = 4
    MAX_GRAPH_BYTES = 128 << 20

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._graphs: OrderedDict[tuple, tuple] = OrderedDict()
        self._seen: set[tuple] = set()
        self._lock = threading.Lock()
        self._order = ReplayOrder()

    def __getstate__(self) -> dict:
        state = super().__getstate__()  # copies and pickles keep the weights, not the graphs or the lock
        state.pop("_lock", None)
        state.pop("_order", None)
        state["_graphs"], state["_seen"] = OrderedDict(), set()
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._lock = threading.Lock()
        self._order = ReplayOrder()

    def forward(
        self, x: torch.Tensor, hx: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """``nn.LSTM.forward``, replayed from a CUDA graph where it can be.

        Args:
            x: input ``[time, batch, dim]``.
            hx: initial ``(h, c)``, each ``[layers, batch, dim]``, or None for zeros.

        Returns:
            ``(y, (h, c))``: output ``[time, batch, dim]`` and the final states.
        """
        if fused_lstm.supports(self, x):  # batch 1 on CUDA: one persistent kernel for all steps
            return fused_lstm.run(self, x, hx)
        eager = (
            not x.is_cuda
            or torch.is_grad_enabled()
            or torch.cuda.is_current_stream_capturing()
            or x.numel() * x.element_size() > self.MAX_GRAPH_BYTES
        )
        if eager:
            return super().forward(x, hx)
        key = (
            tuple(x.shape),
            x.dtype,
            x.device,
            None if hx is None else (tuple(hx[0].shape), hx[0].dtype),
            torch.backends.cudnn.allow_tf32,
            tuple(w.data_ptr() for w in self._flat_weights),
        )
        with self._lock:
            if key not in self._graphs:
                if key not in self._seen:
                    if len(self._seen) >= 64:  # bound the memory of one-off shapes
                        self._seen.clear()
                    self._seen.add(key)
                    return super().forward(x, hx)
                self._graphs[key] = self._capture(x, hx)
                while len(self._graphs) > self.MAX_GRAPHS:
                    self._graphs.popitem(last=False)
            self._graphs.move_to_end(key)
            graph, static_in, static_out = self._graphs[key]
            y, (h, c) = static_out
            inputs = (x,) if hx is None else (x, *hx)
            return self._order.replay(graph, static_in, inputs, lambda: (y.clone(), (h.clone(), c.clone())))

    def _capture(self, x: torch.Tensor, hx: tuple[torch.Tensor, torch.Tensor] | None) -> tuple:
        """Capture one call on ``x``-shaped inputs: (graph, static inputs, static outputs)."""
        static_in = tuple(t.clone() for t in ((x,) if hx is None else (x, *hx)))
        args = (static_in[0], None if hx is None else static_in[1:])
        stream = torch.cuda.Stream(x.device)
        stream.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(stream):
            super().forward(*args)  # warm-up outside the graph (cuDNN workspace, plans)
        torch.cuda.current_stream(x.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = super().forward(*args)
        return graph, static_in, static_out


class LSTM(nn.Module):
    """Multi-layer LSTM over time with a skip connection, in conv layout.

    Args:
        dim: channels in, hidden and out.
        num_layers: LSTM layers.
    """

    def __init__(self, dim: int, num_layers: int):
        super().__init__()
        self.lstm = GraphedLSTM(dim, dim, num_layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[batch, dim, frames]`` to the same shape: the LSTM's output plus its input."""
        x = x.permute(2, 0, 1)
        y = self.lstm(x)[0] + x
        return y.permute(1, 2, 0)
