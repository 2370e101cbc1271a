"""``EnCodec``: the public codec API (load, encode, decode, encode_continuous)."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from fastencodec.arrays import Array, OutputKind, as_tensor, audio_batch
from fastencodec.hub import resolve
from fastencodec.model import EncodecModel
from fastencodec.streaming import (
    CHUNK_SAMPLES,
    GPU_CHUNK_SAMPLES,
    StreamDecoder,
    StreamEncoder,
    decode_long,
    encode_long,
    streamable,
)
from fastencodec.tokens import PAD, Tokens
from fastencodec.weights import build_model

CPU_BATCH_SAMPLES = 1 << 17
"""Most audio samples (per channel) run through the network at once on a CPU: small batches
keep the activations in cache (two 48 kHz segments: twice as fast as 43 of them)."""

GPU_BATCH_BYTES_PER_SAMPLE = 2560
"""GPU memory budgeted per audio sample of a batch: four times the peak measured on an H100
(9.2 GiB for 64 x 10 s at 24 kHz, about 640 bytes a sample), which leaves room for cuDNN's
algorithm search on new shapes."""

GPU_BATCH_SAMPLES = (1 << 21, 1 << 24)
"""Fewest and most audio samples (per channel) run through the network at once on a GPU; in
between, as many as free memory allows (``GPU_BATCH_BYTES_PER_SAMPLE``). Bigger batches mean
fewer sequential LSTM steps: 64 x 10 s in one batch ran 1.35x faster than in batches of 8."""


class EnCodec:
    """One EnCodec model on one device.

    ``encode`` returns :class:`~fastencodec.tokens.Tokens` ``[batch, codebooks, frames]``;
    ``decode`` returns audio ``[batch, channels, samples]`` at ``sample_rate`` Hz.
    See :mod:`fastencodec.arrays` for the accepted audio layouts and channel rule.
    """

    def __init__(self, model: EncodecModel, device: str | torch.device | None = None, dtype: torch.dtype | None = None):
        self.model = model
        self.config = model.config
        digest = hashlib.sha1(model.quantizer.embed.float().cpu().numpy().tobytes()).hexdigest()[:12]
        self.model_id = f"{self.config.name}:{digest}"
        self.to(device, dtype)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        *,
        cache_dir: str | Path | None = None,
        revision: str | None = None,
        local: bool = True,
    ) -> EnCodec:
        """Load ``encodec-24khz``, ``encodec-32khz``, ``encodec-48khz``, any Hugging Face repo id,
        a local checkpoint directory or a checkpoint file (HF, Meta ``.th`` or MLX layout).

        ``dtype`` (default float32) applies to the encoder and decoder networks; codebook
        search stays in float32. The short names always mean the published models (from the
        Hugging Face cache), never a local directory of that name. ``local=False`` accepts
        only those short names: use it for a name read from a file (an ``.ecdc`` header), so
        that the file cannot pick weights on disk.
        """
        return cls(build_model(resolve(name_or_path, cache_dir, revision, local=local)), device, dtype)

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> EnCodec:
        """Move to ``device`` and/or run the networks in floating ``dtype``; returns self."""
        if device is not None:
            self.model.to(torch.device(device))
        if dtype is not None:
            if not dtype.is_floating_point:
                raise ValueError(f"dtype must be a floating-point torch dtype, not {dtype}")
            self.model.encoder.to(dtype)
            self.model.decoder.to(dtype)
        for module in self.model.modules():
            if isinstance(module, torch.nn.LSTM):
                module.flatten_parameters()  # cuDNN wants one weight buffer (a no-op on CPU)
        return self

    # -- properties ---------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.model.quantizer.embed.device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.encoder.parameters()).dtype

    @property
    def name(self) -> str:
        """Model name as Meta's ``.ecdc`` header spells it, e.g. ``encodec_24khz``."""
        return self.config.name

    @property
    def sample_rate(self) -> int:
        """Audio sample rate in Hz."""
        return self.config.sample_rate

    @property
    def channels(self) -> int:
        return self.config.channels

    @property
    def frame_rate(self) -> int:
        """Token frames per second (Hz)."""
        return self.config.frame_rate

    @property
    def hop_length(self) -> int:
        """Audio samples per token frame."""
        return self.config.hop_length

    @property
    def bandwidths(self) -> list[float]:
        """Supported bandwidths in kbps."""
        return list(self.config.target_bandwidths)

    @property
    def default_bandwidth(self) -> float:
        """6 kbps where the model has it, else its first listed bandwidth."""
        return 6.0 if 6.0 in self.bandwidths else self.bandwidths[0]

    @property
    def codebook_size(self) -> int:
        """Entries per codebook: tokens lie in ``0 .. codebook_size - 1``."""
        return self.config.codebook_size

    @property
    def num_codebooks(self) -> int:
        """Codebooks at the highest bandwidth."""
        return self.config.num_quantizers

    def codebooks_for(self, bandwidth: float | None = None) -> int:
        """Codebooks used at ``bandwidth`` kbps (validated)."""
        return self.config.codebooks_for_bandwidth(self._bandwidth(bandwidth))

    def _bandwidth(self, bandwidth: float | None) -> float:
        if bandwidth is None:
            return self.default_bandwidth
        try:
            value = float(bandwidth)
        except (TypeError, ValueError):
            raise ValueError(f"bandwidth must be a number in kbps, got {bandwidth!r}") from None
        for known in self.bandwidths:
            if math.isclose(value, known):
                return known
        raise ValueError(f"bandwidth {bandwidth} kbps is not supported by {self.name}; choose one of {self.bandwidths}")

    # -- segmentation ---------------------------------------------------------
    def segments(self, length: int) -> list[tuple[int, int]]:
        """``(offset, samples)`` of the segments a signal of ``length`` samples is coded in."""
        size, stride = self.config.segment_length, self.config.segment_stride
        if size is None or stride is None:
            return [(0, length)]
        return [(offset, min(size, length - offset)) for offset in range(0, length, stride)]

    def frames(self, length: int) -> int:
        """Token frames for a signal of ``length`` samples."""
        return sum(-(-n // self.hop_length) for _, n in self.segments(length))

    # -- encoding -------------------------------------------------------------
    def encode(self, audio: Array, bandwidth: float | None = None, lengths: Sequence[int] | None = None) -> Tokens:
        """Audio at ``sample_rate`` Hz to tokens ``[batch, codebooks, frames]`` at ``frame_rate`` Hz.

        ``bandwidth`` in kbps picks the number of codebooks (default: ``default_bandwidth``).
        ``lengths`` gives each item's length in samples for a right-padded batch; a list of
        signals of unequal lengths works too. Each item gets exactly the tokens it gets
        when encoded alone.
        """
        n_q = self.codebooks_for(bandwidth)
        items, kind, as_list = audio_batch(audio, lengths, self.channels)
        results = self._run_encoder(items, n_q)
        width = max(codes.shape[-1] for codes, _ in results)
        codes = torch.full((len(items), n_q, width), PAD, dtype=torch.long)
        for i, (item_codes, _) in enumerate(results):
            codes[i, :, : item_codes.shape[-1]] = item_codes
        scales = None
        if self.config.normalize:
            segs = max(len(s) for _, s in results)
            table = torch.zeros(len(items), segs)
            for i, (_, item_scales) in enumerate(results):
                table[i, : len(item_scales)] = item_scales
            scales = kind.audio(table) if kind.torch else table.numpy()
        lengths_out = tuple(item.shape[-1] for item in items)
        return Tokens(kind.ints(codes), lengths_out, scales, self.model_id, as_list)

    def encode_continuous(self, audio: Array, lengths: Sequence[int] | None = None) -> np.ndarray | torch.Tensor:
        """Pre-quantisation embeddings ``[batch, dimension, frames]`` at ``frame_rate`` Hz.

        For normalising models each segment is normalised first, as for ``encode``;
        frames past an item's end in an unequal-length batch are zero.
        """
        items, kind, _ = audio_batch(audio, lengths, self.channels)
        results = self._run_encoder(items, None)
        width = max(emb.shape[-1] for emb, _ in results)
        out = torch.zeros(len(items), self.config.dimension, width)
        for i, (emb, _) in enumerate(results):
            out[i, :, : emb.shape[-1]] = emb
        return kind.audio(out)

    @torch.inference_mode()
    def _run_encoder(self, items: list[torch.Tensor], n_q: int | None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per item: codes ``[n_q, frames]`` (or embeddings when ``n_q`` is None) and segment scales.

        A streamable model (24 and 32 kHz) streams items longer than ``chunk_samples`` chunk by chunk (items of
        equal length together); other items run in batches of whole segments of at most
        ``batch_samples`` samples.
        """
        results: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(items)
        jobs = []  # (item, segment audio [C, n])
        for i, x in enumerate(items):
            if not self._streams_long(x.shape[-1]):
                jobs += [(i, x[:, off : off + n]) for off, n in self.segments(x.shape[-1])]
        for group in self._long_groups([x.shape[-1] for x in items]):
            out = encode_long(self, _stack([items[i] for i in group]), n_q, self.chunk_samples)
            for i, value in zip(group, out):
                results[i] = (value, torch.ones(1))
        outputs: list[torch.Tensor | None] = [None] * len(jobs)
        scales = torch.ones(len(jobs))
        for batch in _batches([x.shape[-1] for _, x in jobs], self.batch_samples):
            x = torch.stack([jobs[j][1] for j in batch]).to(self.device, torch.float32)
            if self.config.normalize:
                volume = x.mean(dim=1, keepdim=True).pow(2).mean(dim=2, keepdim=True).sqrt() + 1e-8
                x = x / volume
                scales[batch] = volume.view(-1).cpu()
            emb = self.model.encoder(x.to(self.dtype)).float()
            out = emb if n_q is None else self.model.quantizer.encode(emb, n_q)
            for j, value in zip(batch, out.cpu()):
                outputs[j] = value
        for i in range(len(items)):
            mine = [j for j, (owner, _) in enumerate(jobs) if owner == i]
            if mine:
                results[i] = (torch.cat([outputs[j] for j in mine], dim=-1), scales[mine])
        return results

    @property
    def batch_samples(self) -> int:
        """Most samples per channel the networks process in one batch on this device now."""
        if self.device.type != "cuda":
            return CPU_BATCH_SAMPLES
        cached = torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(self.device)
        free = torch.cuda.mem_get_info(self.device)[0] + cached  # PyTorch's cache is free to reuse
        least, most = GPU_BATCH_SAMPLES
        return max(least, min(most, free // GPU_BATCH_BYTES_PER_SAMPLE))

    @property
    def chunk_samples(self) -> int:
        """Samples per chunk for long signals of streamable models: cache-sized on CPU, large on GPU."""
        return CHUNK_SAMPLES if self.device.type == "cpu" else GPU_CHUNK_SAMPLES

    def _streams_long(self, length: int) -> bool:
        """Whether a signal of ``length`` samples is coded through a stream, chunk by chunk."""
        return length > self.chunk_samples and streamable(self.config)

    def _long_groups(self, lengths: list[int]) -> list[list[int]]:
        """Indices of the streamed items, grouped by equal length, at most ``batch_samples``
        samples of them per chunk (memory stays bounded however many long items come)."""
        return _batches([n if self._streams_long(n) else 0 for n in lengths], self.batch_samples, self.chunk_samples)

    # -- decoding -------------------------------------------------------------
    def decode(
        self,
        tokens: Tokens | Array,
        scales: Array | None = None,
        lengths: Sequence[int] | None = None,
    ) -> np.ndarray | torch.Tensor | list:
        """Tokens to audio ``[batch, channels, samples]`` at ``sample_rate`` Hz.

        ``tokens`` is what ``encode`` returned (each item is trimmed to its input length),
        or plain integer codes ``[batch, codebooks, frames]`` (or ``[codebooks, frames]``)
        with any number of codebooks up to ``num_codebooks``; trailing frames of -1 mark
        padding. Plain codes for a normalising model (48 kHz) need ``scales``
        ``[batch, segments]`` and ``lengths`` in samples. A batch encoded from a list
        decodes to a list.
        """
        codes, item_lengths, item_scales, kind, as_list = self._parse_tokens(tokens, scales, lengths)
        device = kind.device if kind.torch else torch.device("cpu")  # GPU audio stays on the GPU
        audio = self._run_decoder(codes, item_lengths, item_scales, device)
        if as_list:
            return [kind.audio(a) for a in audio]
        if len(audio) == 1:  # a view: a long signal is not copied again
            return kind.audio(audio[0][None])
        out = torch.zeros(len(audio), self.channels, max(a.shape[-1] for a in audio), device=device)
        for i, a in enumerate(audio):
            out[i, :, : a.shape[-1]] = a
        return kind.audio(out)

    def _parse_tokens(
        self, tokens: Tokens | Array, scales: Array | None, lengths: Sequence[int] | None
    ) -> tuple[list[torch.Tensor], list[int], list[torch.Tensor] | None, OutputKind, bool]:
        as_list = False
        if isinstance(tokens, Tokens):
            self.check_model(tokens)
            if scales is not None or lengths is not None:
                raise ValueError("Tokens carry their own scales and lengths; scales=/lengths= are for plain codes")
            kind, as_list = OutputKind.of(tokens.codes), tokens.as_list
            lengths, scales = tokens.lengths, tokens.scales
            codes = self.validate_codes(tokens.codes, padding=True)
        else:
            kind = OutputKind.of(tokens)
            codes = self.validate_codes(tokens, padding=True)
        batch, _, width = codes.shape
        if batch == 0 or width == 0:
            raise ValueError(f"tokens are empty (shape {tuple(codes.shape)})")
        valid = (codes >= 0).all(dim=1)  # [batch, frames]
        frames = valid.sum(dim=1).tolist()
        for i, f in enumerate(frames):
            if f == 0 or not bool(valid[i, :f].all()) or bool((codes[i, :, f:] != PAD).any()):
                raise ValueError(f"tokens[{i}] has -1 codes that are not whole trailing padding frames")
        if lengths is None:
            if self.config.segment_length is not None:
                raise ValueError(f"{self.name} codes segments: plain codes need lengths= (samples per item)")
            lengths = [f * self.hop_length for f in frames]
        lengths = [int(n) for n in lengths]
        if len(lengths) != batch:
            raise ValueError(f"lengths has {len(lengths)} entries for {batch} token items")
        for i, (n, f) in enumerate(zip(lengths, frames)):
            if n <= 0 or self.frames(n) != f:
                raise ValueError(f"tokens[{i}] has {f} frames; a length of {n} samples needs {self.frames(max(n, 1))}")
        item_scales = None
        if self.config.normalize:
            if scales is None:
                raise ValueError(f"{self.name} normalises segments: plain codes need scales= [batch, segments]")
            table = as_tensor(scales, "scales").float().cpu()
            if table.dim() == 1:
                table = table[None]
            item_scales = []
            for i, n in enumerate(lengths):
                count = len(self.segments(n))
                if table.dim() != 2 or table.shape[0] != batch or table.shape[1] < count:
                    raise ValueError(f"scales have shape {tuple(table.shape)}; need [{batch}, >= {count}]")
                row = table[i, :count]
                if not bool(torch.isfinite(row).all()) or bool((row <= 0).any()):
                    raise ValueError(f"scales[{i}] must be positive and finite")
                item_scales.append(row)
        return [codes[i, :, :f] for i, f in enumerate(frames)], lengths, item_scales, kind, as_list

    def check_model(self, tokens: Tokens) -> None:
        """Refuse ``Tokens`` made by another model."""
        if tokens.model_id != self.model_id:
            raise ValueError(f"tokens come from another model ({tokens.model_id}); this is {self.model_id}")

    def validate_codes(self, codes: Array, padding: bool = False) -> torch.Tensor:
        """Integer codes ``[batch, codebooks, frames]`` (or ``[codebooks, frames]``) as a CPU int64
        tensor, checked against this model: 1 to ``num_codebooks`` codebooks, values in
        ``0 .. codebook_size - 1`` (or ``PAD`` where ``padding`` allows it)."""
        c = as_tensor(codes, "tokens")
        if c.dim() == 2:
            c = c[None]
        if c.dim() != 3:
            raise ValueError(f"tokens have shape {tuple(c.shape)}; expected [batch, codebooks, frames]")
        if c.is_floating_point() or c.is_complex() or c.dtype == torch.bool:
            raise ValueError(f"tokens must be integers, got dtype {c.dtype}")
        if not 1 <= c.shape[1] <= self.num_codebooks:
            raise ValueError(f"tokens have {c.shape[1]} codebooks; {self.name} has 1 to {self.num_codebooks}")
        if c.numel() and not c.dtype.is_signed:  # unsigned: converting to int64 could wrap to PAD
            high = int(c.cpu().numpy().max())
            if high >= self.codebook_size:
                raise ValueError(
                    f"tokens out of range: values up to {high}, expected 0..{self.codebook_size - 1} ({self.name})"
                )
        c = c.long().cpu()
        if c.numel():
            low, high = int(c.min()), int(c.max())
            if low < (PAD if padding else 0) or high >= self.codebook_size:
                raise ValueError(
                    f"tokens out of range: values {low}..{high}, expected 0..{self.codebook_size - 1} ({self.name})"
                )
        return c

    @torch.inference_mode()
    def _run_decoder(
        self, codes: list[torch.Tensor], lengths: list[int], scales: list[torch.Tensor] | None, device: torch.device
    ) -> list[torch.Tensor]:
        """Per item audio ``[channels, length]`` (float32, on ``device``).

        A streamable model streams items longer than ``chunk_samples`` chunk by chunk; other items
        run in batches of whole segments, each added into the item's output as it comes.
        """
        segmented = self.config.segment_length is not None
        audio: list[torch.Tensor | None] = [
            torch.zeros(self.channels, n, device=device) if segmented else None for n in lengths
        ]
        for group in self._long_groups(lengths):
            out = decode_long(self, _stack([codes[i] for i in group]), lengths[group[0]], self.chunk_samples, device)
            for i, value in zip(group, out):
                audio[i] = value
        jobs = []  # (item, segment index, codes [K, f])
        for i, (item, n) in enumerate(zip(codes, lengths)):
            if self._streams_long(n):
                continue
            start = 0
            for s, (_, samples) in enumerate(self.segments(n)):
                f = -(-samples // self.hop_length)
                jobs.append((i, s, item[:, start : start + f]))
                start += f
        for batch in _batches([c.shape[-1] * self.hop_length for _, _, c in jobs], self.batch_samples):
            factor = None if scales is None else torch.stack([scales[jobs[j][0]][jobs[j][1]] for j in batch])
            out = self.decode_segments(torch.stack([jobs[j][2] for j in batch]), factor, device)
            for j, value in zip(batch, out):
                i, s, _ = jobs[j]
                if segmented:
                    self._overlap_add(audio[i], s, value)
                else:
                    audio[i] = value[:, : lengths[i]]
        if segmented:
            for a in audio:
                self._overlap_normalize(a)
        return audio

    def decode_segments(
        self, codes: torch.Tensor, scales: torch.Tensor | None = None, device: str | torch.device = "cpu"
    ) -> torch.Tensor:
        """Independently coded segments' codes ``[segments, K, frames]`` to their audio
        ``[segments, channels, frames * hop_length]`` (float32, on ``device``), each times its
        scale (``[segments]``, normalising models); no cross-fade."""
        with torch.inference_mode():
            emb = self.model.quantizer.decode(codes.to(self.device))
            audio = self.model.decoder(emb.to(self.dtype)).float()
            if scales is not None:
                audio = audio * scales.to(audio.device).view(-1, 1, 1)
            if not bool(torch.isfinite(audio).all()):
                raise ValueError("decoded audio overflows float32 (a segment scale is too large for its codes)")
        return audio.to(device)

    def _overlap_weight(self, length: int) -> torch.Tensor:
        """The cross-fade weight over the first decoded segment of a signal of ``length`` samples."""
        size = -(-min(self.config.segment_length or length, length) // self.hop_length) * self.hop_length
        return triangle_weight(size)

    def _overlap_add(self, out: torch.Tensor, index: int, piece: torch.Tensor) -> None:
        """Add decoded segment ``index`` ``[C, n]``, weighted, into the item's output ``out``."""
        offset = index * (self.config.segment_stride or 1)
        n = min(piece.shape[-1], out.shape[-1] - offset)
        out[:, offset : offset + n] += self._overlap_weight(out.shape[-1])[:n].to(out.device) * piece[:, :n]

    def _overlap_normalize(self, out: torch.Tensor) -> None:
        """Divide the summed segments by the summed weights, one stride at a time (as the reference)."""
        stride = self.config.segment_stride or 1
        weight = self._overlap_weight(out.shape[-1]).to(out.device)
        overlap = weight.shape[-1] - stride
        for offset in range(0, out.shape[-1], stride):
            n = min(stride, out.shape[-1] - offset)
            total = weight[:n].clone()
            if offset and overlap > 0:  # the previous segment's end lies on this stride's start
                total[: min(overlap, n)] += weight[stride : stride + min(overlap, n)]
            out[:, offset : offset + n] /= total

    # -- streaming ------------------------------------------------------------
    def stream_encoder(self, bandwidth: float | None = None) -> StreamEncoder:
        """A :class:`~fastencodec.streaming.StreamEncoder`: push audio chunks, get the tokens of
        each frame as soon as it is final (24 and 32 kHz models; ``bandwidth`` in kbps)."""
        return StreamEncoder(self, bandwidth)

    def stream_decoder(self) -> StreamDecoder:
        """A :class:`~fastencodec.streaming.StreamDecoder`: push tokens, get their audio as soon
        as it is final (24 and 32 kHz models)."""
        return StreamDecoder(self)


def triangle_weight(size: int) -> torch.Tensor:
    """The reference's overlap-add weight over a decoded segment of ``size`` samples: a triangle
    peaking mid-segment, the same float32 values as Meta's ``_linear_overlap_add``."""
    t = torch.linspace(0, 1, size + 2)[1:-1]
    return 0.5 - (t - 0.5).abs()


def _stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    """``torch.stack``, but a view (no copy of a long signal) for a single tensor."""
    return tensors[0][None] if len(tensors) == 1 else torch.stack(tensors)


def _batches(sizes: list[int], limit: int, chunk: int | None = None) -> list[list[int]]:
    """Indices grouped by equal size, each group cut to at most ``limit`` samples (counting at
    most ``chunk`` samples of each member when given); members of size 0 are left out."""
    groups: dict[int, list[int]] = {}
    for j, size in enumerate(sizes):
        if size:
            groups.setdefault(size, []).append(j)
    out = []
    for size, members in groups.items():
        per = max(1, limit // (size if chunk is None else min(size, chunk)))
        out += [members[k : k + per] for k in range(0, len(members), per)]
    return out
