"""``EnCodec``: the public codec API (load, encode, decode, stream).

The work happens in :mod:`fastencodec.engine`; this class validates inputs, hands them to the
engine and shapes the results.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastencodec.arrays import Array, OutputKind, as_tensor, audio_batch
from fastencodec.engine.blocks import decode_items, encode_items
from fastencodec.engine.network import Engine
from fastencodec.engine.policy import RuntimePolicy
from fastencodec.engine.segments import SegmentLayout
from fastencodec.nn.model import EncodecModel
from fastencodec.streaming.streams import StreamDecoder, StreamEncoder
from fastencodec.tokens import PAD, Tokens
from fastencodec.weights.hub import model_name, resolve
from fastencodec.weights.loading import build_model


class EnCodec:
    """One EnCodec model on one device, under one runtime policy.

    ``encode`` returns :class:`~fastencodec.tokens.Tokens` ``[batch, codebooks, frames]``;
    ``decode`` returns audio ``[batch, channels, samples]`` at ``sample_rate`` Hz. See
    :mod:`fastencodec.arrays` for the accepted audio layouts and the channel rule. One instance
    may be used from several threads at once.

    Args:
        model: the network (inference mode).
        device: where to run it (default: where it is).
        dtype: floating dtype of the encoder and decoder networks (default: as the model is).
        policy: the runtime policy (default ``RuntimePolicy()``: exact float32, device-default sizes).
        name: the model's name as ``.ecdc`` headers spell it (default: from its config).
    """

    def __init__(
        self,
        model: EncodecModel,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        *,
        policy: RuntimePolicy | None = None,
        name: str | None = None,
    ) -> None:
        self.model = model
        self.config = model.config
        self._engine = Engine(model, policy or RuntimePolicy(), name or model.config.name)
        if self._engine.policy.threads is not None:
            torch.set_num_threads(self._engine.policy.threads)  # torch's pool is per process
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
        policy: RuntimePolicy | None = None,
        **policy_options: Any,
    ) -> EnCodec:
        """Load a published model, a Hugging Face repo or a local checkpoint.

        Args:
            name_or_path: ``encodec-24khz``, ``encodec-32khz``, ``encodec-48khz``, a Hugging Face
                repo id, a checkpoint directory or file (HF, Meta ``.th`` or MLX layout).
            device: where to run (default CPU).
            dtype: floating dtype of the encoder and decoder (default float32); the codebook
                search stays in float32.
            cache_dir: Hugging Face cache directory.
            revision: Hugging Face revision.
            local: accept local paths. The short names always mean the published models (from
                the Hugging Face cache), never a local directory of that name; ``local=False``
                accepts only those short names: use it for a name read from a file (an ``.ecdc``
                header), so that the file cannot pick weights on disk.
            policy: the runtime policy; or give its fields as keywords (``precision="exact"``,
                ``batch_samples=``, ``chunk_samples=``, ``threads=``).

        Returns:
            The codec, on ``device``.

        Raises:
            FileNotFoundError: nothing found under that name.
            ValueError: not a valid checkpoint, or a bad policy value.
            TypeError: a keyword that is not a ``RuntimePolicy`` field.
        """
        if policy_options:
            policy = replace(policy or RuntimePolicy(), **policy_options)
        path = resolve(name_or_path, cache_dir, revision, local=local)
        model = build_model(path)
        return cls(model, device, dtype, policy=policy, name=model_name(name_or_path, path, model.config))

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> EnCodec:
        """Move to ``device`` and/or run the encoder and decoder in ``dtype`` (in place).

        Args:
            device: the new device, or None to stay.
            dtype: a floating torch dtype, or None to keep the current one.

        Returns:
            ``self``.

        Raises:
            ValueError: ``dtype`` is not a floating-point dtype.
        """
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
        self._engine.moved()
        return self

    # -- properties ---------------------------------------------------------------------------
    @property
    def engine(self) -> Engine:
        """The engine that runs the networks (model, device, resolved policy)."""
        return self._engine

    @property
    def policy(self) -> RuntimePolicy:
        """The runtime policy in force, its sizes resolved for the current device."""
        return self._engine.policy

    @property
    def layout(self) -> SegmentLayout:
        """How signals split into segments and frames."""
        return self._engine.layout

    @property
    def model_id(self) -> str:
        """``name:fingerprint``: identifies the checkpoint (its codebooks), not just the architecture."""
        return self._engine.model_id

    @property
    def fingerprint(self) -> str:
        """Digest of the codebooks, stored in ``.ecdc`` headers (``fp``)."""
        return self._engine.fingerprint

    @property
    def device(self) -> torch.device:
        """The device the networks run on."""
        return self._engine.device

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the encoder and decoder networks."""
        return self._engine.dtype

    @property
    def name(self) -> str:
        """Model name as ``.ecdc`` headers spell it, e.g. ``encodec_24khz``."""
        return self._engine.name

    @property
    def sample_rate(self) -> int:
        """Audio sample rate in Hz."""
        return self.config.sample_rate

    @property
    def channels(self) -> int:
        """Audio channels the model codes (1, or 2 for ``encodec-48khz``)."""
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

    @property
    def streamable(self) -> bool:
        """Whether the model has exact streams (24 and 32 kHz)."""
        return self._engine.streamable

    def codebooks_for(self, bandwidth: float | None = None) -> int:
        """Codebooks per frame at a bandwidth.

        Args:
            bandwidth: kbps, one of ``bandwidths`` (None: ``default_bandwidth``).

        Returns:
            The codebook count, 1 to ``num_codebooks``.

        Raises:
            ValueError: the model does not support ``bandwidth``.
        """
        return self.config.codebooks_for_bandwidth(self.check_bandwidth(bandwidth))

    def check_bandwidth(self, bandwidth: float | None) -> float:
        """A bandwidth as the model lists it.

        Args:
            bandwidth: kbps (anything ``float`` takes, matched with ``math.isclose``), or None for
                ``default_bandwidth``.

        Returns:
            The entry of ``bandwidths`` it matches, in kbps.

        Raises:
            ValueError: not a number, or not one of ``bandwidths``.
        """
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

    # -- encoding -----------------------------------------------------------------------------
    def encode(
        self,
        audio: Array,
        bandwidth: float | None = None,
        lengths: Sequence[int] | None = None,
        *,
        layout: str | None = None,
    ) -> Tokens:
        """Audio to tokens.

        Args:
            audio: float audio at ``sample_rate`` Hz: ``[samples]``, ``[batch, samples]``,
                ``[batch, channels, samples]`` or a list of signals (see :mod:`fastencodec.arrays`).
            bandwidth: kbps, picks the number of codebooks (default ``default_bandwidth``).
            lengths: each item's length in samples, for a right-padded batch.
            layout: for 2-D audio, ``"batch"`` (``[batch, samples]``) or ``"channels"``
                (one ``[channels, samples]`` signal); needed for a multichannel model.

        Returns:
            Tokens ``[batch, codebooks, frames]`` at ``frame_rate`` Hz; each item gets exactly
            the tokens it gets alone, whatever the batch.

        Raises:
            ValueError: bad audio, lengths, layout or bandwidth.
        """
        n_q = self.codebooks_for(bandwidth)
        items, kind, as_list = audio_batch(audio, lengths, self.channels, layout)
        results = encode_items(self._engine, items, n_q)
        codes = torch.full((len(items), n_q, max(c.shape[-1] for c, _ in results)), PAD, dtype=torch.long)
        for i, (item_codes, _) in enumerate(results):
            codes[i, :, : item_codes.shape[-1]] = item_codes
        scales = None
        if self.config.normalize:
            table = torch.zeros(len(items), max(len(s) for _, s in results))
            for i, (_, item_scales) in enumerate(results):
                table[i, : len(item_scales)] = torch.tensor(item_scales)
            scales = table.to(kind.device) if kind.torch else table.numpy()  # float32 whatever the audio's dtype
        lengths_out = tuple(item.shape[-1] for item in items)
        return Tokens(
            kind.ints(codes),
            lengths_out,
            scales,
            self.model_id,
            as_list,
            layout=self.layout,
            precision=self.policy.precision,
        )

    def encode_continuous(
        self, audio: Array, lengths: Sequence[int] | None = None, *, layout: str | None = None
    ) -> np.ndarray | torch.Tensor:
        """Audio to the encoder's embeddings, before quantisation.

        Normalising models normalise each segment first.

        Args:
            audio: as for :meth:`encode`.
            lengths: as for :meth:`encode`.
            layout: as for :meth:`encode`.

        Returns:
            float32 embeddings ``[batch, dimension, frames]`` at ``frame_rate`` Hz (frames past an
            item's end in an unequal-length batch are zero): NumPy for NumPy input, torch on the
            input's device for torch input.

        Raises:
            ValueError: bad audio, lengths or layout.
        """
        items, kind, _ = audio_batch(audio, lengths, self.channels, layout)
        results = encode_items(self._engine, items, None)
        out = torch.zeros(len(items), self.config.dimension, max(e.shape[-1] for e, _ in results))
        for i, (emb, _) in enumerate(results):
            out[i, :, : emb.shape[-1]] = emb
        return kind.audio(out)

    # -- decoding -----------------------------------------------------------------------------
    def decode(
        self, tokens: Tokens | Array, scales: Array | None = None, lengths: Sequence[int] | None = None
    ) -> np.ndarray | torch.Tensor | list:
        """Tokens to audio.

        Args:
            tokens: what ``encode`` returned (each item is trimmed to its input length), or plain
                integer codes ``[batch, codebooks, frames]`` (or ``[codebooks, frames]``) with 1 to
                ``num_codebooks`` codebooks; trailing frames of -1 mark padding.
            scales: for plain codes of a normalising model (48 kHz): ``[batch, segments]``.
            lengths: for plain codes: samples per item (needed for segmenting models).

        Returns:
            float audio ``[batch, channels, samples]`` at ``sample_rate`` Hz (a list for a batch
            encoded from a list): NumPy for NumPy codes, torch on the codes' device for torch.

        Raises:
            ValueError: codes, scales or lengths that do not fit this model.
        """
        if isinstance(tokens, Tokens):
            tokens.check_model(self.model_id)
            if scales is not None or lengths is not None:
                raise ValueError("Tokens carry their own scales and lengths; scales=/lengths= are for plain codes")
            kind, as_list = OutputKind.of(tokens.codes), tokens.as_list
            codes, pieces = self._engine.validate_codes(tokens.codes, padding=True), tokens.pieces
            lengths, scales = tokens.lengths, tokens.scales
        else:
            kind, as_list, pieces = OutputKind.of(tokens), False, None
            codes = self._engine.validate_codes(tokens, padding=True)
        device = kind.device if kind.torch else torch.device("cpu")  # GPU audio stays on the GPU
        audio = self._decode_codes(codes, lengths, pieces, scales, device)
        if as_list:
            return [kind.audio(a) for a in audio]
        if len(audio) == 1:  # a view: a long signal is not copied again
            return kind.audio(audio[0][None])
        out = torch.zeros(len(audio), self.channels, max(a.shape[-1] for a in audio), device=device)
        for i, a in enumerate(audio):
            out[i, :, : a.shape[-1]] = a
        return kind.audio(out)

    def _decode_codes(
        self,
        codes: torch.Tensor,
        lengths: Sequence[int] | None,
        pieces: Sequence[Sequence[int]] | None,
        scales: Array | None,
        device: torch.device,
    ) -> list[torch.Tensor]:
        """Validated codes ``[batch, K, frames]`` to each item's audio ``[channels, length]``."""
        layout, batch, width = self.layout, codes.shape[0], codes.shape[-1]
        if batch == 0 or width == 0:
            raise ValueError(f"tokens are empty (shape {tuple(codes.shape)})")
        valid = (codes >= 0).all(dim=1)  # [batch, frames]
        frames = valid.sum(dim=1).tolist()
        for i, f in enumerate(frames):
            if f == 0 or not bool(valid[i, :f].all()) or bool((codes[i, :, f:] != PAD).any()):
                raise ValueError(f"tokens[{i}] has -1 codes that are not whole trailing padding frames")
        if lengths is None:
            if layout.segmented:
                raise ValueError(f"{self.name} codes segments: plain codes need lengths= (samples per item)")
            lengths = [f * self.hop_length for f in frames]
        lengths = [int(n) for n in lengths]
        if len(lengths) != batch:
            raise ValueError(f"lengths has {len(lengths)} entries for {batch} token items")
        pieces = [(n,) for n in lengths] if pieces is None else pieces
        for i, (f, parts) in enumerate(zip(frames, pieces)):
            need = sum(layout.total_frames(p) for p in parts) if all(p > 0 for p in parts) else -1
            if need != f:
                raise ValueError(f"tokens[{i}] has {f} frames; a length of {lengths[i]} samples needs {max(need, 0)}")
        table = self._scale_table(scales, pieces, batch)
        # independently coded signals: each piece of a segmenting model, each whole item otherwise
        sub_codes, sub_lengths, sub_scales, owners = [], [], [], []
        for i, parts in enumerate(pieces):
            start, seg = 0, 0
            split = parts if layout.segmented else [sum(layout.frames(p) for p in parts) * self.hop_length]
            if len(parts) == 1:
                split = parts
            for n in split:
                f, count = layout.total_frames(n), layout.count(n)
                sub_codes.append(codes[i, :, start : start + f])
                sub_lengths.append(n)
                sub_scales.append(None if table is None else table[i][seg : seg + count])
                owners.append(i)
                start, seg = start + f, seg + count
        audio = decode_items(self._engine, sub_codes, sub_lengths, None if table is None else sub_scales, device)
        out: list[list[torch.Tensor]] = [[] for _ in range(batch)]
        for i, piece in zip(owners, audio):
            out[i].append(piece)
        return [self._join(parts, pieces[i]) for i, parts in enumerate(out)]

    def _join(self, audio: list[torch.Tensor], parts: Sequence[int]) -> torch.Tensor:
        """An item's audio from its decoded signals: pieces of a concatenation cut to their lengths."""
        if len(audio) == 1 and len(parts) == 1:
            return audio[0]
        if len(audio) > 1:
            return torch.cat(audio, dim=-1)
        starts = np.cumsum([0] + [self.layout.frames(p) * self.hop_length for p in parts])
        return torch.cat([audio[0][:, s : s + n] for s, n in zip(starts, parts)], dim=-1)

    def _scale_table(self, scales: Array | None, pieces: Sequence[Sequence[int]], batch: int) -> list | None:
        """Per item its segments' scales (floats), checked; None for models that do not normalise."""
        if not self.config.normalize:
            return None
        if scales is None:
            raise ValueError(f"{self.name} normalises segments: plain codes need scales= [batch, segments]")
        table = as_tensor(scales, "scales").float().cpu()
        if table.dim() == 1:
            table = table[None]
        rows = []
        for i, parts in enumerate(pieces):
            count = sum(self.layout.count(p) for p in parts)
            if table.dim() != 2 or table.shape[0] != batch or table.shape[1] < count:
                raise ValueError(f"scales have shape {tuple(table.shape)}; need [{batch}, >= {count}]")
            row = table[i, :count]
            if not bool(torch.isfinite(row).all()) or bool((row <= 0).any()):
                raise ValueError(f"scales[{i}] must be positive and finite")
            rows.append(row.tolist())
        return rows

    def check_model(self, tokens: Tokens) -> None:
        """Refuse ``Tokens`` made by another model.

        Args:
            tokens: what :meth:`encode` returned, here or elsewhere.

        Raises:
            ValueError: they come from another model (the message names both).
        """
        tokens.check_model(self.model_id)

    def validate_codes(self, codes: Array, padding: bool = False) -> torch.Tensor:
        """Codes checked against this model (see :meth:`fastencodec.engine.network.Engine.validate_codes`).

        Args:
            codes: integer codes ``[batch, codebooks, frames]`` or ``[codebooks, frames]``.
            padding: accept trailing frames of ``-1`` (padding).

        Returns:
            CPU int64 codes ``[batch, codebooks, frames]``.

        Raises:
            ValueError: another shape, a non-integer dtype, too many codebooks, or codes outside
                ``0 .. codebook_size - 1``.
        """
        return self._engine.validate_codes(codes, padding)

    # -- streaming ----------------------------------------------------------------------------
    def stream_encoder(self, bandwidth: float | None = None) -> StreamEncoder:
        """A stream that turns audio chunks into the tokens of each frame as soon as it is final.

        Args:
            bandwidth: kbps (None: ``default_bandwidth``).

        Returns:
            A new :class:`~fastencodec.streaming.streams.StreamEncoder` with its own state.

        Raises:
            ValueError: the model cannot stream (only the 24 and 32 kHz models do), or an
                unsupported bandwidth.
        """
        return StreamEncoder(self._engine, self.codebooks_for(bandwidth))

    def stream_decoder(self) -> StreamDecoder:
        """A stream that turns tokens into their audio as soon as it is final.

        Returns:
            A new :class:`~fastencodec.streaming.streams.StreamDecoder` with its own state.

        Raises:
            ValueError: the model cannot stream (only the 24 and 32 kHz models do).
        """
        return StreamDecoder(self._engine)
