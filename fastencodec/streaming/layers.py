"""Exact stateful streaming for the EnCodec models that code a signal as one segment: the causal
24 kHz model and MusicGen's 32 kHz one (centred convolutions, so its streams look ahead).

Push audio of any length, get the tokens of every frame that is complete; push tokens,
get the audio that is final. The concatenated stream output equals offline
``EnCodec.encode`` / ``decode`` of the whole signal (same tokens up to float-rounding ties
of the codebook search; audio equal to float rounding), because every layer keeps exactly
the state the offline computation would read across a chunk boundary:

- a conv keeps the inputs its next window still needs (``kernel - stride`` of them);
  it waits for the first inputs the reference's reflect padding of the signal's start
  reads, and ``flush()`` appends the reference's reflect padding of the signal's end
  (for a centred conv, half its padding plus the final partial window, read from the
  last inputs, which it keeps);
- a transposed conv keeps the overlapping tail of its last window (partial sums) and
  emits only samples no later input can change;
- an LSTM carries its (h, c) state; a residual block holds whichever branch is ahead.

Latency of the 24 kHz model (hop 320 samples, frame period 13.33 ms), in steady state:

- encoder: the token of frame ``t`` comes back from the push that delivers sample
  ``(t + 1) * 320 - 1``, the frame's last one: no look-ahead beyond the frame itself;
  the algorithmic latency is the frame, 320 samples = 13.33 ms;
- decoder: pushing the token of frame ``t`` returns the frame's 320 samples at once
  (0 samples of look-ahead).

Start-up (once per stream): the reference reflect-pads the signal's start, which needs
the first ``padding_total + 1`` inputs of each conv, so the first tokens arrive
together once 2 240 samples (7 frames, 93.3 ms) have been pushed, and the decoder
returns its first audio once 7 frames have been pushed, 2 240 samples at once.

The 32 kHz model's centred convolutions read inputs ahead: a frame's token comes back
2 386 samples (74.6 ms) after the frame's last sample, and a pushed token's audio about
as much later (its first 158 samples come with the 4th frame pushed).

The 48 kHz model normalises each 1 s segment by its volume and uses group norm over
time, so it is not streamable; long audio for it is coded segment by segment (see
``EnCodec.encode``).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from fastencodec.kernels.cpu_steps import SHORT_PUSH_FRAMES, conv_transpose_matmul, lstm_steps, step_weights
from fastencodec.nn.config import EncodecConfig
from fastencodec.nn.layers import LSTM, Conv1d, ConvTranspose1d, ResnetBlock, pad1d

# -- per-layer streaming state ------------------------------------------------------------
# Each state has push(x [B, C, n]) -> y [B, C', m], the outputs that are final, and
# flush() -> y or None, the rest as offline processing ends the signal.


def _own(x: torch.Tensor | None) -> torch.Tensor | None:
    """A copy of a small piece of state: a view would keep its whole push alive (or, for the
    first layer, alias the caller's buffer, which the caller may refill for the next push)."""
    return None if x is None else x.clone()


def _cat(first: torch.Tensor | None, second: torch.Tensor | None) -> torch.Tensor | None:
    """Join along time; None stands for nothing."""
    if first is None or first.shape[-1] == 0:
        return second if second is not None else first
    if second is None or second.shape[-1] == 0:
        return first
    return torch.cat([first, second], dim=-1)


class _ConvStream:
    """A ``Conv1d``; keeps the inputs its next window needs, calls the model's ``nn.Conv1d``."""

    def __init__(self, module: Conv1d):
        if module.norm is not None:
            raise ValueError("convs with group norm cannot stream")
        if module.kernel < module.stride:  # windows that skip inputs: the buffer cannot say which
            raise ValueError(f"a conv with kernel {module.kernel} < stride {module.stride} cannot stream")
        if module.pad_mode not in STREAMABLE_PAD_MODES:
            raise ValueError(f"a conv with {module.pad_mode!r} padding cannot stream")
        self.module = module
        self.left = module.padding(0)[0]  # the start's padding; the end's depends on the length
        right_most = module.padding_total - self.left + module.stride - 1
        # the end's reflect padding reads the last right_most + 1 inputs; the windows keep at
        # least padding_total of them, and when that is too few, a copy of them is kept
        self.history_size = right_most + 1 if 0 < right_most >= module.padding_total else 0
        self.history: torch.Tensor | None = None
        self.buffer: torch.Tensor | None = None  # raw inputs until the start is padded, then unused padded inputs
        self.started = False
        self.length = 0  # inputs received

    def _windows(self, padded: torch.Tensor) -> torch.Tensor:
        """Outputs of every complete window of ``padded``; keeps the rest for later."""
        kernel, stride = self.module.kernel, self.module.stride
        count = (padded.shape[-1] - kernel) // stride + 1 if padded.shape[-1] >= kernel else 0
        self.buffer = _own(padded[..., count * stride :])
        conv = self.module.conv
        if count == 0:
            return padded.new_empty(padded.shape[0], conv.out_channels, 0)
        x = padded[..., : (count - 1) * stride + kernel]
        if x.is_cuda or not 1 < count <= SHORT_PUSH_FRAMES:
            return conv(x)
        # a few windows: one matrix product (faster than ATen's small-input conv on a CPU; BENCHMARKS.md)
        cols = x.unfold(-1, kernel, stride)[..., :: conv.dilation[0]].transpose(1, 2).reshape(x.shape[0] * count, -1)
        y = torch.addmm(conv.bias, cols, conv.weight.view(conv.out_channels, -1).t())
        return y.view(x.shape[0], count, -1).transpose(1, 2)

    def push(self, x: torch.Tensor) -> torch.Tensor:
        self.length += x.shape[-1]
        if self.history_size:
            self.history = _own(_cat(self.history, x[..., -self.history_size :])[..., -self.history_size :])
        buffer = _cat(self.buffer, x)
        if self.started:
            return self._windows(buffer)
        module = self.module
        if buffer.shape[-1] <= max(self.left, module.stride - 1):
            self.buffer = _own(buffer)
            return buffer.new_empty(buffer.shape[0], module.conv.out_channels, 0)
        self.started = True
        return self._windows(pad1d(buffer, self.left, 0, module.pad_mode))

    def flush(self) -> torch.Tensor | None:
        if self.buffer is None or self.length == 0:
            return None
        if not self.started:  # all the input is still here: the offline computation
            return self.module(self.buffer)
        right = self.module.padding(self.length)[1]
        if not right:
            return self._windows(self.buffer)
        last = self.history if self.history_size else self.buffer
        end = pad1d(last, 0, right, self.module.pad_mode)[..., -right:]
        return self._windows(torch.cat([self.buffer, end], dim=-1))


class _ConvTransposeStream:
    """A ``ConvTranspose1d``; keeps the overlap tail of its last window as partial sums."""

    def __init__(self, module: ConvTranspose1d):
        if module.norm is not None:
            raise ValueError("transposed convs with group norm cannot stream")
        self.module = module
        self.tail: torch.Tensor | None = None  # sums (without bias) of the samples not final yet
        self.to_trim = module.trim[0]  # start samples still to drop

    def _emit(self, y: torch.Tensor) -> torch.Tensor:
        bias = self.module.conv.bias
        if bias is not None:
            y = y + bias[:, None]
        drop = min(self.to_trim, y.shape[-1])
        self.to_trim -= drop
        return y[..., drop:]

    def push(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.module.conv
        if x.shape[-1] == 0:
            return x.new_empty(x.shape[0], conv.out_channels, 0)
        if x.is_cuda or x.shape[-1] > 2 * SHORT_PUSH_FRAMES:
            y = F.conv_transpose1d(x, conv.weight, None, conv.stride, 0, 0, conv.groups, conv.dilation)
        else:
            y = conv_transpose_matmul(x, conv.weight, self.module.stride)
        if self.tail is not None:
            y[..., : self.tail.shape[-1]] += self.tail
        final = x.shape[-1] * self.module.stride
        self.tail = _own(y[..., final:])
        return self._emit(y[..., :final])

    def flush(self) -> torch.Tensor | None:
        if self.tail is None:
            return None
        return self._emit(self.tail[..., : self.tail.shape[-1] - self.module.trim[1]])


class _LSTMStream:
    """The model's ``LSTM`` with its skip connection, carrying (h, c) across pushes."""

    def __init__(self, module: LSTM):
        self.module = module
        self.state: tuple[torch.Tensor, torch.Tensor] | None = None

    def push(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] == 0:
            return x
        seq = x.permute(2, 0, 1)
        lstm = self.module.lstm
        if seq.is_cuda or seq.shape[0] > SHORT_PUSH_FRAMES:
            # long pushes keep the offline computation's kernel, so their rounding matches it
            y, self.state = lstm(seq, self.state)
        else:
            y, self.state = lstm_steps(step_weights(lstm), seq, self.state)
        return (y + seq).permute(1, 2, 0)

    def flush(self) -> None:
        return None


class _PointwiseStream:
    """A layer that maps each time step on its own (ELU, identity)."""

    def __init__(self, module: nn.Module):
        self.module = module

    def push(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)

    def flush(self) -> None:
        return None


class _ResnetStream:
    """Residual block; at a stream's start the shortcut runs ahead of the block: hold it back."""

    def __init__(self, module: ResnetBlock):
        self.shortcut = streamer(module.shortcut)
        self.block = streamer(module.block)
        self.pending: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None)

    def _join(self, short: torch.Tensor | None, block: torch.Tensor | None) -> torch.Tensor | None:
        short, block = _cat(self.pending[0], short), _cat(self.pending[1], block)
        if short is None or block is None:
            self.pending = (_own(short), _own(block))
            return None
        n = min(short.shape[-1], block.shape[-1])
        self.pending = (_own(short[..., n:]), _own(block[..., n:]))
        return short[..., :n] + block[..., :n]

    def push(self, x: torch.Tensor) -> torch.Tensor:
        out = self._join(self.shortcut.push(x), self.block.push(x))
        assert out is not None  # both branches answer a push with a tensor
        return out

    def flush(self) -> torch.Tensor | None:
        return self._join(self.shortcut.flush(), self.block.flush())


class _SequentialStream:
    """Layers in order; a flush pushes each layer's flushed tail through the layers after it."""

    def __init__(self, module: nn.Sequential):
        self.layers = [streamer(layer) for layer in module]

    def push(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer.push(x)
        return x

    def flush(self) -> torch.Tensor | None:
        tail = None
        for layer in self.layers:
            tail = _cat(None if tail is None else layer.push(tail), layer.flush())
        return tail


Stream = _ConvStream | _ConvTransposeStream | _LSTMStream | _PointwiseStream | _ResnetStream | _SequentialStream


def streamer(module: nn.Module) -> Stream:
    """Fresh streaming state for one of the model's modules; it runs the module's own weights.

    ``push(x)`` takes ``[batch, channels, n]`` and returns the outputs that are final,
    ``[batch, channels_out, m]``; ``flush()`` returns the rest as offline processing ends the
    signal (None when nothing is left).

    Args:
        module: a ``Conv1d``, ``ConvTranspose1d``, ``LSTM``, ``ResnetBlock``, ``nn.Sequential`` of
            those, ``nn.ELU`` or ``nn.Identity`` of the model.

    Returns:
        The module's stream state.

    Raises:
        ValueError: a module with no streaming form (e.g. a conv with group norm).
    """
    for kind, stream in (
        (Conv1d, _ConvStream),
        (ConvTranspose1d, _ConvTransposeStream),
        (LSTM, _LSTMStream),
        (ResnetBlock, _ResnetStream),
        (nn.Sequential, _SequentialStream),
        ((nn.ELU, nn.Identity), _PointwiseStream),
    ):
        if isinstance(module, kind):
            return stream(module)
    raise ValueError(f"{type(module).__name__} has no streaming form")


STREAMABLE_PAD_MODES = ("reflect", "constant", "replicate")
"""Paddings of a signal's ends that a stream can rebuild from the inputs at that end."""


def streamable(cfg: EncodecConfig) -> bool:
    """Whether a model codes the whole signal as one segment with no statistics over time (no
    volume normalisation, no group norm), so that a stream can carry its exact state: the
    24 kHz model (causal) and the 32 kHz one (centred convolutions: a stream with look-ahead).

    Args:
        cfg: the model's architecture.

    Returns:
        True if streams of it are exact.
    """
    plain = not cfg.normalize and cfg.segment_length is None and cfg.norm == "weight_norm"
    return plain and cfg.pad_mode in STREAMABLE_PAD_MODES


def check_streamable(cfg: EncodecConfig, name: str) -> None:
    """Refuse a model that cannot stream (see :func:`streamable`).

    Args:
        cfg: the model's architecture.
        name: how messages name the model.

    Raises:
        ValueError: it cannot stream.
    """
    if not streamable(cfg):
        raise ValueError(
            f"{name} cannot stream: it normalises segments by their volume or over time, or pads with "
            f"{cfg.pad_mode!r}; its encode/decode code long audio segment by segment in bounded memory"
        )
