"""The public streams: ``StreamEncoder`` (audio pieces to final tokens) and ``StreamDecoder``
(tokens to final audio), for the models that stream (24 and 32 kHz; see
:mod:`fastencodec.streaming.layers` for the exactness and latency each layer keeps).

Each stream owns its state; many streams may run at once on one shared model.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fastencodec.arrays import Array, OutputKind, as_tensor, audio_layout, check_signal, to_channels
from fastencodec.engine.network import Engine
from fastencodec.streaming.layers import check_streamable, streamer
from fastencodec.tokens import Tokens


class _StreamBase:
    """Lifecycle shared by the encoder and decoder streams: flushed/broken flags, reset."""

    def __init__(self, engine: Engine, module: nn.Module):
        check_streamable(engine.config, engine.name)
        self.engine = engine
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
            with self.engine.module_compute():
                return self._net.flush() if x is None else self._net.push(x)
        except BaseException:
            self._broken = True
            raise


class StreamEncoder(_StreamBase):
    """Audio in pieces of any length to the tokens of every final frame (24 and 32 kHz models).

    ``push(audio)`` takes float audio at the model's sample rate (Hz) as ``[samples]``,
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

    Args:
        engine: the engine of a streamable model (``EnCodec.stream_encoder`` passes its own).
        num_codebooks: codebooks per frame (from the bandwidth).
        embeddings: return the embeddings ``[batch, dimension, frames]`` (float32) instead of codes.

    Attributes:
        num_codebooks: codebooks per frame at this bandwidth.
        samples: samples per item pushed so far.
        frames: frames per item returned so far.

    Raises:
        ValueError: the model cannot stream (48 kHz).
    """

    def __init__(self, engine: Engine, num_codebooks: int, *, embeddings: bool = False):
        self.num_codebooks = num_codebooks
        self._embeddings = embeddings
        super().__init__(engine, engine.model.encoder.layers)

    def reset(self) -> None:
        """Forget the current stream; the next push starts a new one."""
        super().reset()
        self.samples = 0
        self.frames = 0

    def push(self, audio: Array) -> np.ndarray | torch.Tensor:
        """Feed audio.

        Args:
            audio: float audio at the model's sample rate (Hz): ``[samples]``, ``[batch, samples]`` or
                ``[batch, channels, samples]``, of any length (0 included).

        Returns:
            int64 codes ``[batch, codebooks, frames]`` of the frames completed by this push (NumPy,
            or torch on the input's device).

        Raises:
            ValueError: another batch or channel count than the stream's, non-float or non-finite
                samples, or a stream already flushed or broken by an earlier failure.
        """
        self._check_usable()
        x = audio_layout(as_tensor(audio, "audio chunk"), "audio chunk", self.engine.channels)
        if not x.is_floating_point():
            raise ValueError(f"audio chunk has dtype {x.dtype}; pass floating-point audio in [-1, 1]")
        if x.shape[1] == 0:
            raise ValueError(f"audio chunk has 0 channels (shape {tuple(x.shape)})")
        layout = (x.shape[0], x.shape[1])
        self._check_layout(layout, "channels")
        if x.shape[-1]:
            check_signal(x, "audio chunk (not used; the stream is unchanged)")
        x = to_channels(x, self.engine.channels)
        self._layout = layout
        self.samples += x.shape[-1]
        return self._codes(self._step(x.to(self.engine.device, self.engine.dtype)), OutputKind.of(audio))

    def flush(self) -> np.ndarray | torch.Tensor:
        """End the stream.

        Returns:
            int64 codes ``[batch, codebooks, frames]`` of its last frames, the partial one included
            (``[0, codebooks, 0]`` for a stream that was never pushed to).
        """
        self._check_usable()
        self._flushed = True
        if self._layout is None:
            return self._kind.ints(torch.zeros(0, self.num_codebooks, 0, dtype=torch.long))
        return self._codes(self._step(None), self._kind)

    def _codes(self, emb: torch.Tensor | None, kind: OutputKind) -> np.ndarray | torch.Tensor:
        self._kind = kind
        if emb is None:
            emb = torch.zeros(self._layout[0], self.engine.config.dimension, 0, device=self.engine.device)
        if self._embeddings:
            self.frames += emb.shape[-1]
            return kind.audio(emb.float())
        with torch.inference_mode():
            codes = self.engine.networks.quantize(emb.float(), self.num_codebooks)
        self.frames += codes.shape[-1]
        return kind.ints(codes)


class StreamDecoder(_StreamBase):
    """Tokens in pieces of any length to the audio that is final (24 and 32 kHz models).

    ``push(codes)`` takes integer codes ``[batch, codebooks, frames]`` or ``[codebooks, frames]``
    (or :class:`~fastencodec.tokens.Tokens` of this model without padding frames) and returns
    float32 audio ``[batch, channels, samples]`` at the model's sample rate (Hz): NumPy for NumPy
    input, torch for torch input. Every push of a stream has the same batch and codebook count.
    ``flush()`` ends the stream; ``reset()`` starts a new one.

    A stream of ``F`` frames gives ``F * hop_length`` samples in all, equal to
    ``codec.decode(codes)`` of all its codes; the signal's own length is
    ``StreamEncoder.samples``, so drop what the last frame gives beyond it. Pushing frame
    ``t`` returns the frame's ``hop_length`` samples, except at the stream's start (see the
    module docstring). Bad codes raise ValueError and leave the stream as it was.

    Args:
        engine: the engine of a streamable model (``EnCodec.stream_decoder`` passes its own).

    Attributes:
        frames: frames per item pushed so far.
        samples: samples per item returned so far.

    Raises:
        ValueError: the model cannot stream (48 kHz).
    """

    def __init__(self, engine: Engine):
        super().__init__(engine, engine.model.decoder.layers)

    def reset(self) -> None:
        """Forget the current stream; the next push starts a new one."""
        super().reset()
        self.frames = 0
        self.samples = 0

    def push(self, codes: Tokens | Array) -> np.ndarray | torch.Tensor:
        """Feed codes.

        Args:
            codes: integer codes ``[batch, codebooks, frames]`` or ``[codebooks, frames]``, or Tokens of
                this model without padding frames.

        Returns:
            float32 audio ``[batch, channels, samples]`` that this push made final (NumPy, or torch
            on the codes' device).

        Raises:
            ValueError: codes out of range, another model's Tokens, another batch or codebook count
                than the stream's, or a stream already flushed or broken by an earlier failure.
        """
        self._check_usable()
        engine = self.engine
        if isinstance(codes, Tokens):
            codes.check_model(engine.model_id)
            codes = codes.codes
        c = engine.validate_codes(codes)
        layout = (c.shape[0], c.shape[1])
        self._check_layout(layout, "codebooks")
        self._layout = layout
        self.frames += c.shape[-1]
        with torch.inference_mode():
            emb = engine.model.quantizer.decode(c.to(engine.device)).to(engine.dtype)
        return self._audio(self._step(emb), OutputKind.of(codes))

    def flush(self) -> np.ndarray | torch.Tensor:
        """End the stream.

        Returns:
            float32 audio ``[batch, channels, samples]``: the rest of the last frames' samples
            (``[0, channels, 0]`` for a stream that was never pushed to).
        """
        self._check_usable()
        self._flushed = True
        if self._layout is None:
            return self._kind.audio(torch.zeros(0, self.engine.channels, 0))
        return self._audio(self._step(None), self._kind)

    def _audio(self, audio: torch.Tensor | None, kind: OutputKind) -> np.ndarray | torch.Tensor:
        self._kind = kind
        if audio is None:
            audio = torch.zeros(self._layout[0], self.engine.channels, 0)
        self.samples += audio.shape[-1]
        return kind.audio(audio.float())
