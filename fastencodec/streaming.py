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

import weakref
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from fastencodec.arrays import Array, OutputKind, as_tensor, audio_layout, check_signal, to_channels
from fastencodec.model import LSTM, Conv1d, ConvTranspose1d, ResnetBlock, exact_float32, pad1d
from fastencodec.tokens import Tokens

if TYPE_CHECKING:
    from fastencodec.codec import EnCodec
    from fastencodec.config import EncodecConfig

SHORT_PUSH_FRAMES = 16
"""CPU LSTM inputs of at most this many frames run step by step here: oneDNN re-lays out all the
weights on every call (2.6 ms a layer for one frame on a CPU core)."""

CHUNK_SAMPLES = 1 << 16
"""Samples per chunk when ``encode``/``decode`` run long audio through a stream on CPU
(2.7 s at 24 kHz: the activations stay in cache)."""

GPU_CHUNK_SAMPLES = 1 << 22
"""Samples per chunk on GPUs, where one long pass is fastest (175 s at 24 kHz)."""


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
        # a few windows: one matrix product (3-4x faster than ATen's small-input conv on a CPU core)
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
            y = _conv_transpose_matmul(x, conv.weight, self.module.stride)
        if self.tail is not None:
            y[..., : self.tail.shape[-1]] += self.tail
        final = x.shape[-1] * self.module.stride
        self.tail = _own(y[..., final:])
        return self._emit(y[..., :final])

    def flush(self) -> torch.Tensor | None:
        if self.tail is None:
            return None
        return self._emit(self.tail[..., : self.tail.shape[-1] - self.module.trim[1]])


def _conv_transpose_matmul(x: torch.Tensor, weight: torch.Tensor, stride: int) -> torch.Tensor:
    """``F.conv_transpose1d(x, weight, stride=stride)`` (no bias) as one matrix product and an
    overlap-add; on a CPU core 1.3-12x faster than ATen's kernel for inputs of a few steps.

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
            y, self.state = _lstm_steps(_step_weights(lstm), seq, self.state)
        return (y + seq).permute(1, 2, 0)

    def flush(self) -> None:
        return None


_STEP_WEIGHTS: weakref.WeakKeyDictionary[nn.LSTM, tuple[tuple, list]] = weakref.WeakKeyDictionary()


def _step_weights(lstm: nn.LSTM) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per layer ``(W_ih^T, W_hh^T, b_ih, b_hh)`` with the matrices stored transposed, cached per module.

    A one-frame step is a matrix-vector product bound by reading the weights (4 MiB a
    matrix). Multiplying by a contiguous ``[input, 4 * hidden]`` matrix streams it at about
    twice the speed of the ``[4 * hidden, input]`` layout that ``nn.LSTM`` keeps (measured on
    one AMD EPYC core with MKL: 285 us instead of 590 us per matrix from memory).
    """
    params = [
        [getattr(lstm, f"{name}_l{layer}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        for layer in range(lstm.num_layers)
    ]
    key = tuple((p.data_ptr(), p._version) for layer in params for p in layer)  # changed weights rebuild
    cached = _STEP_WEIGHTS.get(lstm)
    if cached is None or cached[0] != key:
        layers = [(w_ih.t().contiguous(), w_hh.t().contiguous(), b_ih, b_hh) for w_ih, w_hh, b_ih, b_hh in params]
        cached = _STEP_WEIGHTS[lstm] = (key, layers)
    return cached[1]


def _lstm_steps(
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
    24 kHz model (causal) and the 32 kHz one (centred convolutions: a stream with look-ahead)."""
    plain = not cfg.normalize and cfg.segment_length is None and cfg.norm == "weight_norm"
    return plain and cfg.pad_mode in STREAMABLE_PAD_MODES


def check_streamable(codec: EnCodec) -> None:
    """Raise ValueError unless ``codec`` can stream (see :func:`streamable`)."""
    if not streamable(codec.config):
        raise ValueError(
            f"{codec.name} cannot stream: it normalises segments by their volume or over time, or pads with "
            f"{codec.config.pad_mode!r}; its encode/decode code long audio segment by segment in bounded memory"
        )


# -- long signals through a stream (used by EnCodec.encode/decode) ----------------------------


@torch.inference_mode()
def encode_long(codec: EnCodec, audio: torch.Tensor, num_codebooks: int | None, chunk: int) -> torch.Tensor:
    """Equal-length signals ``[batch, channels, samples]`` to codes ``[batch, num_codebooks, frames]``
    (int64), or to embeddings ``[batch, dimension, frames]`` (float32) when ``num_codebooks`` is
    None, ``chunk`` samples at a time: memory does not grow with the length beyond the result."""
    check_streamable(codec)
    net = streamer(codec.model.encoder.layers)
    batch, frames = audio.shape[0], codec.frames(audio.shape[-1])
    if num_codebooks is None:
        out = torch.empty(batch, codec.config.dimension, frames)
    else:
        out = torch.empty(batch, num_codebooks, frames, dtype=torch.long)
    done = 0
    for start in range(0, audio.shape[-1] + chunk, chunk):
        piece = audio[:, :, start : start + chunk]
        with exact_float32():
            emb = net.push(piece.to(codec.device, codec.dtype)) if piece.shape[-1] else net.flush()
        if emb is None or emb.shape[-1] == 0:
            continue
        emb = emb.float()
        values = emb if num_codebooks is None else codec.model.quantizer.encode(emb, num_codebooks)
        out[:, :, done : done + values.shape[-1]] = values.cpu()
        done += values.shape[-1]
    return out


@torch.inference_mode()
def decode_long(
    codec: EnCodec, codes: torch.Tensor, length: int, chunk: int, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """Codes ``[batch, codebooks, frames]`` to audio ``[batch, channels, length]`` (float32, on
    ``device``), about ``chunk`` samples at a time: memory does not grow with the length beyond
    the result."""
    check_streamable(codec)
    net = streamer(codec.model.decoder.layers)
    out = torch.empty(codes.shape[0], codec.channels, length, device=device)
    step = max(1, chunk // codec.hop_length)
    done = 0
    for start in range(0, codes.shape[-1] + step, step):
        piece = codes[:, :, start : start + step].to(codec.device)
        with exact_float32():
            audio = net.push(codec.model.quantizer.decode(piece).to(codec.dtype)) if piece.shape[-1] else net.flush()
        if audio is None:
            continue
        take = min(audio.shape[-1], length - done)
        out[:, :, done : done + take] = audio[:, :, :take]
        done += take
    return out


# -- public streams ------------------------------------------------------------------------


class _StreamBase:
    """Lifecycle shared by the encoder and decoder streams: flushed/broken flags, reset."""

    def __init__(self, codec: EnCodec, module: nn.Module):
        check_streamable(codec)
        self.codec = codec
        self._module = module
        self.reset()

    def reset(self) -> None:
        """Forget the current stream; the next push starts a new one."""
        self._net = streamer(self._module)
        self._layout: tuple[int, int] | None = None
        self._kind = OutputKind(False)
        self._flushed = False
        self._broken = False

    def _check_usable(self) -> None:
        if self._flushed:
            raise ValueError("the stream was flushed; call reset() to start a new one")
        if self._broken:
            raise ValueError("an earlier call failed midway; call reset() to start a new stream")

    def _check_layout(self, layout: tuple[int, int], what: str) -> None:
        if self._layout is not None and layout != self._layout:
            raise ValueError(
                f"this chunk has batch {layout[0]} with {layout[1]} {what}, but the stream started with "
                f"batch {self._layout[0]} with {self._layout[1]} {what}; call reset() to start a new stream"
            )

    @torch.inference_mode()
    def _step(self, x: torch.Tensor | None) -> torch.Tensor | None:
        """Push ``x`` through the network, or flush it when ``x`` is None."""
        try:
            with exact_float32():
                return self._net.flush() if x is None else self._net.push(x)
        except BaseException:
            self._broken = True
            raise


class StreamEncoder(_StreamBase):
    """Audio in pieces of any length to the tokens of every final frame (24 and 32 kHz models).

    ``push(audio)`` takes float audio at ``codec.sample_rate`` Hz as ``[samples]``,
    ``[batch, samples]`` or ``[batch, channels, samples]`` (the channel rule of ``encode``;
    every push of a stream has the same batch and channel count) and returns int64 codes
    ``[batch, codebooks, frames completed]``: NumPy for NumPy input, torch for torch input.
    ``flush()`` ends the stream and returns its last frames, the final partial frame
    included; ``reset()`` starts a new stream. Concatenated along the last axis, everything
    returned equals ``codec.encode(whole_signal, bandwidth).codes``, up to float-rounding ties
    of the nearest-codebook search (inputs of other lengths take other kernels, which round differently).

    The token of frame ``t`` is returned by the push that delivers the frame's last sample
    ``(t + 1) * hop_length - 1``, except at the stream's start (see the module docstring).
    Bad input (another layout, NaN, integers) raises ValueError and leaves the stream as it
    was; a push after ``flush()`` raises ValueError until ``reset()``.

    Attributes: ``num_codebooks`` (per frame at this bandwidth), ``samples`` (per item pushed
    so far), ``frames`` (per item returned so far).
    """

    def __init__(self, codec: EnCodec, bandwidth: float | None = None):
        self.num_codebooks = codec.codebooks_for(bandwidth)
        super().__init__(codec, codec.model.encoder.layers)

    def reset(self) -> None:
        """Forget the current stream; the next push starts a new one."""
        super().reset()
        self.samples = 0
        self.frames = 0

    def push(self, audio: Array) -> np.ndarray | torch.Tensor:
        """Feed audio ``[.., samples]``; returns codes ``[batch, codebooks, frames completed]``."""
        self._check_usable()
        x = audio_layout(as_tensor(audio, "audio chunk"), "audio chunk")
        if not x.is_floating_point():
            raise ValueError(f"audio chunk has dtype {x.dtype}; pass floating-point audio in [-1, 1]")
        if x.shape[1] == 0:
            raise ValueError(f"audio chunk has 0 channels (shape {tuple(x.shape)})")
        layout = (x.shape[0], x.shape[1])
        self._check_layout(layout, "channels")
        if x.shape[-1]:
            check_signal(x, "audio chunk (not used; the stream is unchanged)")
        x = to_channels(x, self.codec.channels)
        self._layout = layout
        self.samples += x.shape[-1]
        return self._codes(self._step(x.to(self.codec.device, self.codec.dtype)), OutputKind.of(audio))

    def flush(self) -> np.ndarray | torch.Tensor:
        """End the stream; returns the codes ``[batch, codebooks, frames]`` of its last frames."""
        self._check_usable()
        self._flushed = True
        if self._layout is None:
            return self._kind.ints(torch.zeros(0, self.num_codebooks, 0, dtype=torch.long))
        return self._codes(self._step(None), self._kind)

    def _codes(self, emb: torch.Tensor | None, kind: OutputKind) -> np.ndarray | torch.Tensor:
        self._kind = kind
        if emb is None:
            emb = torch.zeros(self._layout[0], self.codec.config.dimension, 0)
        with torch.inference_mode():
            codes = self.codec.model.quantizer.encode(emb.float(), self.num_codebooks)
        self.frames += codes.shape[-1]
        return kind.ints(codes)


class StreamDecoder(_StreamBase):
    """Tokens in pieces of any length to the audio that is final (24 and 32 kHz models).

    ``push(codes)`` takes integer codes ``[batch, codebooks, frames]`` or ``[codebooks, frames]``
    (or :class:`~fastencodec.tokens.Tokens` of this model without padding frames) and returns
    float32 audio ``[batch, channels, samples]`` at ``codec.sample_rate`` Hz: NumPy for NumPy
    input, torch for torch input. Every push of a stream has the same batch and codebook count.
    ``flush()`` ends the stream; ``reset()`` starts a new one.

    A stream of ``F`` frames gives ``F * hop_length`` samples in all, equal to
    ``codec.decode(codes)`` of all its codes; the signal's own length is
    ``StreamEncoder.samples``, so drop what the last frame gives beyond it. Pushing frame
    ``t`` returns the frame's ``hop_length`` samples, except at the stream's start (see the
    module docstring). Bad codes raise ValueError and leave the stream as it was.

    Attributes: ``frames`` (per item pushed so far), ``samples`` (per item returned so far).
    """

    def __init__(self, codec: EnCodec):
        super().__init__(codec, codec.model.decoder.layers)

    def reset(self) -> None:
        """Forget the current stream; the next push starts a new one."""
        super().reset()
        self.frames = 0
        self.samples = 0

    def push(self, codes: Tokens | Array) -> np.ndarray | torch.Tensor:
        """Feed codes ``[batch, codebooks, frames]``; returns audio ``[batch, channels, samples]``."""
        self._check_usable()
        codec = self.codec
        if isinstance(codes, Tokens):
            codec.check_model(codes)
            codes = codes.codes
        c = codec.validate_codes(codes)
        layout = (c.shape[0], c.shape[1])
        self._check_layout(layout, "codebooks")
        self._layout = layout
        self.frames += c.shape[-1]
        with torch.inference_mode():
            emb = codec.model.quantizer.decode(c.to(codec.device)).to(codec.dtype)
        return self._audio(self._step(emb), OutputKind.of(codes))

    def flush(self) -> np.ndarray | torch.Tensor:
        """End the stream; returns its last audio ``[batch, channels, samples]``."""
        self._check_usable()
        self._flushed = True
        if self._layout is None:
            return self._kind.audio(torch.zeros(0, self.codec.channels, 0))
        return self._audio(self._step(None), self._kind)

    def _audio(self, audio: torch.Tensor | None, kind: OutputKind) -> np.ndarray | torch.Tensor:
        self._kind = kind
        if audio is None:
            audio = torch.zeros(self._layout[0], self.codec.channels, 0)
        self.samples += audio.shape[-1]
        return kind.audio(audio.float())
