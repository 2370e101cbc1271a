"""``Engine``: one model on one device under one runtime policy; runs batches of segments.

Everything that codes audio (``EnCodec.encode``/``decode``, the file API, the streams) runs the
networks through an ``Engine``, so precision, device moves and code validation happen in one place.
Batches of segments run through the policy's precision mode (:class:`fastencodec.kernels.Networks`);
the streams run the modules (``exact`` arithmetic) in :meth:`Engine.module_compute`.
"""

from __future__ import annotations

import hashlib

import torch

from fastencodec.arrays import Array, as_tensor
from fastencodec.engine.planner import bucket_edge
from fastencodec.engine.policy import RuntimePolicy
from fastencodec.engine.segments import SegmentLayout
from fastencodec.kernels import Networks
from fastencodec.nn.model import EncodecModel
from fastencodec.streaming.layers import streamable
from fastencodec.tokens import PAD


def fingerprint(model: EncodecModel) -> str:
    """A short hex digest of a model's codebooks: tells checkpoints of one architecture apart."""
    return hashlib.sha1(model.quantizer.embed.float().cpu().numpy().tobytes()).hexdigest()[:12]


class Engine:
    """A model, its device and its resolved runtime policy.

    Args:
        model: the network (inference mode).
        policy: the runtime policy (sizes left as None take the device's defaults).
        name: the model's name (``.ecdc`` header ``m``), e.g. ``encodec_24khz``.
    """

    def __init__(self, model: EncodecModel, policy: RuntimePolicy, name: str) -> None:
        self.model = model
        self.config = model.config
        self.layout = SegmentLayout.of(model.config)
        self.name = name
        self._fingerprint: tuple[tuple[int, int], str] | None = None
        self.requested = policy
        self.policy = policy.for_device(self.device)
        self.networks = Networks(model, policy.precision)

    @property
    def fingerprint(self) -> str:
        """The current codebooks' :func:`fingerprint`, recomputed after they change (in place or replaced)."""
        embed = self.model.quantizer.embed
        try:
            key = (embed.data_ptr(), embed._version)
        except RuntimeError:  # an inference tensor has no version counter: no cache
            return fingerprint(self.model)
        if self._fingerprint is None or self._fingerprint[0] != key:
            self._fingerprint = (key, fingerprint(self.model))
        return self._fingerprint[1]

    @property
    def model_id(self) -> str:
        """``name:fingerprint``, the identity ``Tokens`` carry."""
        return f"{self.name}:{self.fingerprint}"

    @property
    def device(self) -> torch.device:
        return self.model.quantizer.embed.device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.encoder.parameters()).dtype

    @property
    def channels(self) -> int:
        return self.config.channels

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    @property
    def streamable(self) -> bool:
        """Whether the model has an exact stream encoder and decoder (see ``streaming.layers.streamable``)."""
        return streamable(self.config)

    def streams_long(self, length: int) -> bool:
        """Whether a signal of ``length`` samples is coded through a stream, chunk by chunk. Only in
        ``exact``: the streams run the modules, so other modes code long signals whole."""
        return length > self.policy.chunk_samples and self.streamable and self.policy.precision == "exact"

    def ragged(self, length: int, part: str = "encoder") -> bool:
        """Whether an item of ``length`` samples (``part="encoder"``) or frames (``"decoder"``) may
        share a batch with items of other lengths (padded to a common length), bitwise as if
        alone: a streamable model in float32 on CUDA with Triton (see ``Networks.ragged``), an
        item coded whole (at most ``chunk_samples`` long), and the policy's
        ``buckets_per_octave`` not 0."""
        samples = length if part == "encoder" else length * self.hop_length
        if not self.policy.buckets_per_octave or not self.streamable or self.dtype != torch.float32:
            return False
        return samples <= (self.policy.chunk_samples or 0) and self.networks.ragged(part, length)

    def bucket(self, frames: int) -> int:
        """The frames a ragged batch holding an item of ``frames`` frames is padded to:
        :func:`~fastencodec.engine.planner.bucket_edge` under the policy's ``buckets_per_octave``."""
        return bucket_edge(frames, self.policy.buckets_per_octave)

    def moved(self) -> None:
        """Re-resolve the policy's device defaults after the model moved or was cast.

        Raises:
            ValueError: the device cannot run the precision, or the networks were cast to
                another dtype under a precision other than ``exact``.
        """
        if self.dtype != torch.float32 and self.policy.precision != "exact":
            raise ValueError(f"dtype {self.dtype} and precision {self.policy.precision!r}: choose one of the two")
        self.policy = self.requested.for_device(self.device)
        self.networks = Networks(self.model, self.policy.precision)

    def module_compute(self) -> object:
        """The context the torch modules run in (streams, cast networks): see
        :meth:`RuntimePolicy.module_compute`."""
        return self.policy.module_compute(self.device)

    @torch.inference_mode()
    def encode_batch(
        self, x: torch.Tensor, num_codebooks: int | None, lengths: list[int] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Segments ``[batch, channels, samples]`` to codes ``[batch, K, frames]`` (embeddings
        ``[batch, dimension, frames]`` when ``num_codebooks`` is None) and scales ``[batch]``, on the CPU.

        ``lengths``: samples per item of a right-padded ragged batch (each :meth:`ragged`); item
        ``i``'s first ``ceil(lengths[i] / hop_length)`` frames are then those it gets alone."""
        x = x.to(self.device, torch.float32)
        if lengths is not None:
            values = self.networks.encode(x, lengths)
            if num_codebooks is not None:
                values = self.networks.quantize(values, num_codebooks)
            return values.cpu(), None
        if self.dtype != torch.float32:  # networks cast by ``EnCodec.to(dtype=)``: the modules
            with self.module_compute():
                values, scale = self.model.embed(x) if num_codebooks is None else self.model.encode(x, num_codebooks)
        else:
            x, scale = self.model.normalize(x)
            values = self.networks.encode(x)
            if num_codebooks is not None:
                values = self.networks.quantize(values, num_codebooks)
        return values.cpu(), None if scale is None else scale.cpu()

    @torch.inference_mode()
    def decode_batch(
        self,
        codes: torch.Tensor,
        scales: torch.Tensor | None,
        device: torch.device | str = "cpu",
        lengths: list[int] | None = None,
    ) -> torch.Tensor:
        """Codes of independently coded segments ``[batch, K, frames]`` to their audio
        ``[batch, channels, frames * hop_length]`` (float32, on ``device``), times their scales ``[batch]``.

        ``lengths``: frames per item of a right-padded ragged batch (each :meth:`ragged` for the
        decoder); item ``i``'s first ``lengths[i] * hop_length`` samples are then those it gets
        alone, and the samples after them zero.

        Raises:
            ValueError: the audio overflows float32 (a segment scale too large for its codes).
        """
        codes = codes.to(self.device)
        if lengths is not None:
            audio = self.networks.decode(self.networks.dequantize(codes), lengths)
            ends = torch.tensor(lengths, device=audio.device).view(-1, 1, 1) * self.hop_length
            audio = audio.masked_fill(torch.arange(audio.shape[-1], device=audio.device) >= ends, 0.0)
        elif self.dtype != torch.float32:  # networks cast by ``EnCodec.to(dtype=)``: the modules
            with self.module_compute():
                audio = self.model.decode(codes, scales)
        else:
            audio = self.networks.decode(self.networks.dequantize(codes))
            if scales is not None:
                audio = audio * scales.to(audio.device).view(-1, 1, 1)
        if not bool(torch.isfinite(audio).all()):
            raise ValueError("decoded audio overflows float32 (a segment scale is too large for its codes)")
        return audio.to(device)

    def validate_codes(self, codes: Array, padding: bool = False) -> torch.Tensor:
        """Integer codes ``[batch, codebooks, frames]`` (or ``[codebooks, frames]``) as a CPU int64
        tensor, checked against this model.

        Args:
            codes: the codes.
            padding: whether ``PAD`` (-1) is allowed.

        Raises:
            ValueError: wrong rank, dtype, codebook count or values.
        """
        c = as_tensor(codes, "tokens")
        if c.dim() == 2:
            c = c[None]
        if c.dim() != 3:
            raise ValueError(f"tokens have shape {tuple(c.shape)}; expected [batch, codebooks, frames]")
        if c.is_floating_point() or c.is_complex() or c.dtype == torch.bool:
            raise ValueError(f"tokens must be integers, got dtype {c.dtype}")
        num_codebooks = self.config.num_quantizers
        if not 1 <= c.shape[1] <= num_codebooks:
            raise ValueError(f"tokens have {c.shape[1]} codebooks; {self.name} has 1 to {num_codebooks}")
        size = self.config.codebook_size
        if c.numel() and not c.dtype.is_signed:  # unsigned: converting to int64 could wrap to PAD
            high = int(c.cpu().numpy().max())
            if high >= size:
                raise ValueError(f"tokens out of range: values up to {high}, expected 0..{size - 1} ({self.name})")
        c = c.long().cpu()
        if c.numel():
            low, high = int(c.min()), int(c.max())
            if low < (PAD if padding else 0) or high >= self.config.codebook_size:
                raise ValueError(
                    f"tokens out of range: values {low}..{high}, expected 0..{self.config.codebook_size - 1} "
                    f"({self.name})"
                )
        return c
