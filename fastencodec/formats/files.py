"""The file API: audio files (or arrays, or bytes) to ``.ecdc`` and back, as the CLI does it.

``compress``/``decompress`` take paths, bytes or open binary files; ``read_ecdc`` gives a whole
file as an :class:`EcdcFile` (header and codes, convertible to and from ``Tokens``). Coding runs
through :mod:`fastencodec.engine.blocks`, block by block, so memory does not grow with the
length, and the codes equal ``EnCodec.encode`` of the whole signal.
"""

from __future__ import annotations

import io
import operator
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
import torch

from fastencodec.arrays import bounded_int
from fastencodec.codec import EnCodec
from fastencodec.engine.blocks import BlockDecoder, BlockEncoder
from fastencodec.engine.segments import SegmentLayout
from fastencodec.formats.coders import LMWeights, SymbolCoder, coder_for
from fastencodec.formats.ecdc import (
    MAX_AUDIO_LENGTH,
    MAX_SOURCE_SAMPLE_RATE,
    EcdcError,
    EcdcHeader,
    EcdcReader,
    EcdcWriter,
)
from fastencodec.io.atomic import STDIO, AtomicOutput
from fastencodec.io.audio import AudioFileError, AudioReader, AudioWriter
from fastencodec.io.conform import AudioSource, conformed_blocks
from fastencodec.io.resample import StreamResampler, output_length
from fastencodec.nn.config import PUBLISHED_CONFIGS
from fastencodec.tokens import Tokens
from fastencodec.weights.hub import PUBLISHED

Progress = Callable[[int], object]
CLIP_LEVEL = 0.99
"""Peak the ``rescale`` option scales decoded audio down to, as Meta's ``-r``."""


class ModelMismatchError(ValueError):
    """An ``.ecdc`` file was coded by another model than the one asked to decode it."""


class ClippingWarning(UserWarning):
    """Decoded audio exceeded full scale and was clipped to fit a PCM output format."""


# -- models ---------------------------------------------------------------------------------------


def load_model(
    model: str | os.PathLike[str] | EnCodec, device: str | torch.device | None = None, local: bool = True
) -> EnCodec:
    """``model`` itself if it is an ``EnCodec``, else the model of that name or path, on ``device``
    (without ``local``: only a published model's name, see ``EnCodec.from_pretrained``).

    A given ``EnCodec`` is never moved (it may be shared): it runs where it is.

    Raises:
        ValueError: ``model`` is an ``EnCodec`` on another device than ``device``.
    """
    if isinstance(model, EnCodec):
        if device is not None and not _same_device(torch.device(device), model.device):
            raise ValueError(
                f"the model given is on {model.device}, not on device={device}; move it there first "
                "(model.to(device)) or leave device=None to run it where it is"
            )
        return model
    return EnCodec.from_pretrained(model, device=device, local=local)


def _same_device(wanted: torch.device, actual: torch.device) -> bool:
    """Whether ``actual`` is ``wanted`` (a device without an index, such as ``cuda``, means the current one)."""
    if wanted.type == "cuda" and wanted.index is None and torch.cuda.is_available():
        wanted = torch.device("cuda", torch.cuda.current_device())
    return wanted.type == actual.type and (wanted.index is None or wanted.index == actual.index)


def published_name(header: EcdcHeader) -> str:
    """The published model ``header`` names.

    Raises:
        EcdcError: it names another model (its weights must be given).
    """
    if header.model_name not in PUBLISHED.values():
        known = ", ".join(sorted(PUBLISHED.values()))
        raise EcdcError(
            f"unknown model {header.model_name!r} (known: {known}); pass the model that coded it (--model NAME|PATH)"
        )
    return header.model_name


def model_for(header: EcdcHeader, model: str | os.PathLike[str] | EnCodec | None, device: Any, force: bool) -> EnCodec:
    """The model that decodes ``header``'s codes: ``model``, else the published model the header names.

    Raises:
        EcdcError: the header names no published model and no ``model`` is given, or it has
            more codebooks than the model.
        ModelMismatchError: the model's name or fingerprint differs from the header's (unless ``force``).
    """
    # a name read from the file resolves only to a published model, never to a local directory
    codec = load_model(published_name(header) if model is None else model, device, local=model is not None)
    differs = codec.name != header.model_name or header.fingerprint not in (None, codec.fingerprint)
    if differs and not force:
        theirs = f"file {header.fingerprint}, " if header.fingerprint else ""
        raise ModelMismatchError(
            f"coded with {header.model_name}, but the model given is {codec.name} (fingerprints: {theirs}model "
            f"{codec.fingerprint}); force it with force_model=True (--force-model)"
        )
    if header.num_codebooks > codec.num_codebooks:
        raise EcdcError(f"{header.num_codebooks} codebooks; {codec.name} has at most {codec.num_codebooks}")
    return codec


# -- compressing ----------------------------------------------------------------------------------


def compress_source(
    codec: EnCodec,
    source: AudioSource,
    out: BinaryIO,
    bandwidth: float | None = None,
    progress: Progress | None = None,
    coder: SymbolCoder | None = None,
) -> None:
    """Compress ``source`` to an ``.ecdc`` stream on ``out`` (seekable), its codes stored by ``coder``
    (default: plain bit packing; see :func:`~fastencodec.formats.coders.coder_for`).

    The header records the input's own rate and channel count and the model's fingerprint; its
    audio length is written up front when the source knows its length, else filled in at the end.

    Raises:
        AudioFileError: the audio is longer than an ``.ecdc`` file holds (``MAX_AUDIO_LENGTH`` samples
            at the model's rate), checked before coding when the source knows its length.
    """
    num_codebooks = codec.codebooks_for(bandwidth)
    length = None if source.frames is None else output_length(source.frames, source.sample_rate, codec.sample_rate)
    if length is not None and length > MAX_AUDIO_LENGTH:
        raise AudioFileError(
            f"{source.name}: {length:,} samples at {codec.sample_rate} Hz is more than an .ecdc file holds "
            f"({MAX_AUDIO_LENGTH:,})"
        )
    writer = EcdcWriter(
        out,
        model_name=codec.name,
        num_codebooks=num_codebooks,
        bits_per_codebook=codec.config.bits_per_codebook,
        normalize=codec.config.normalize,
        audio_length=length or None,  # 0: ``conformed_blocks`` says why
        source_sample_rate=source.sample_rate,
        source_channels=source.channels,
        fingerprint=codec.fingerprint,
        coder=coder,
    )
    encoder = BlockEncoder(codec.engine, num_codebooks)
    blocks = conformed_blocks(source, codec.sample_rate, codec.channels, expected=length, progress=progress)
    starting = True
    for block in blocks:
        for codes, scale, ends in encoder.push(block):
            starting = _write(writer, codes, scale, ends, starting)
        if encoder.samples > MAX_AUDIO_LENGTH:
            raise AudioFileError(f"{source.name}: longer than an .ecdc file holds ({MAX_AUDIO_LENGTH:,} samples)")
    for codes, scale, ends in encoder.finish():
        starting = _write(writer, codes, scale, ends, starting)
    writer.finish(encoder.samples)


def _write(writer: EcdcWriter, codes: np.ndarray, scale: float | None, ends: bool, starting: bool) -> bool:
    if starting:
        writer.begin_segment(scale)
    writer.write_frames(codes)
    if ends:
        writer.end_segment()
    return ends


class ArraySource:
    """An in-memory signal as an audio source.

    Args:
        audio: float audio ``[channels, samples]`` (or ``[samples]``).
        sample_rate: its rate in Hz.
        name: how messages name it.
    """

    def __init__(self, audio: Any, sample_rate: int, name: str = "<array>") -> None:
        array = np.asarray(audio.detach().cpu() if isinstance(audio, torch.Tensor) else audio, dtype=np.float32)
        self.audio = array[None] if array.ndim == 1 else array
        if self.audio.ndim != 2 or 0 in self.audio.shape:
            raise ValueError(f"{name}: audio must be [channels, samples], got shape {array.shape}")
        try:  # any integer (``np.int64`` too), but not a float or bool
            rate = -1 if isinstance(sample_rate, (bool, np.bool_)) else operator.index(sample_rate)
        except TypeError:
            rate = -1
        if rate <= 0:
            raise ValueError(f"{name}: sample_rate must be a positive integer (Hz), got {sample_rate!r}")
        self.name, self.sample_rate = name, rate
        self.channels, self.frames = self.audio.shape

    def blocks(self, block_size: int) -> Iterator[np.ndarray]:
        for start in range(0, self.frames, block_size):
            yield self.audio[:, start : start + block_size]


def compress(
    audio: str | os.PathLike[str] | bytes | np.ndarray | torch.Tensor | AudioSource,
    destination: str | os.PathLike[str] | BinaryIO | None = None,
    *,
    model: str | os.PathLike[str] | EnCodec = "encodec-24khz",
    bandwidth: float | None = None,
    device: str | torch.device | None = None,
    sample_rate: int | None = None,
    progress: Progress | None = None,
    entropy: str = "bits",
    lm_weights: LMWeights = None,
    overwrite: bool = True,
) -> bytes | None:
    """Compress audio to ``.ecdc`` (the CLI's ``compress``).

    Args:
        audio: an audio file's path (any format the CLI reads; ``"-"`` is stdin), its bytes, a
            float array ``[channels, samples]`` at ``sample_rate`` Hz, or an ``AudioSource``.
            Any rate and channel count: resampled (soxr) and mixed to the model's.
        destination: a path (written atomically), a binary file, or None to return the bytes.
        model: a model name, repo id, checkpoint path, or a loaded ``EnCodec``.
        bandwidth: kbps (default: the model's default).
        device: where to run the model (not Meta's LM: see ``entropy``).
        sample_rate: the rate of ``audio`` given as an array, in Hz.
        progress: called with the input samples of each block read.
        overwrite: replace an existing ``destination`` path (False: fail if it exists when the
            file is complete).
        entropy: how the codes are stored: ``"bits"`` (plain packing, the default), ``"lm"``
            (Meta's LM entropy coding, as ``encodec --lm``; Meta's tool reads it) or ``"lmp1"``
            (portable LM coding, decodable on any machine; fastencodec only). The LM modes need the
            ``entropy`` extra and Meta's LM weights for the 24 or 48 kHz model. ``"lm"`` runs
            Meta's LM on the CPU whatever ``device``, so that Meta's tool reads the file
            (``EcdcFile.write(device="cuda")`` codes it on a GPU; such a file decodes only there).
        lm_weights: the LM checkpoint (default: torch hub's cache, downloaded from Meta if missing).

    Returns:
        The ``.ecdc`` bytes when ``destination`` is None, else None.

    Raises:
        AudioFileError: unreadable or empty audio.
        ValueError: a bad bandwidth, model or entropy mode.
        fastencodec.entropy.MissingLMWeights: the LM weights are missing and cannot be downloaded.
    """
    codec = load_model(model, device)
    codec.check_bandwidth(bandwidth)
    coder = coder_for(entropy, codec.name, codec.config.bits_per_codebook, lm_weights)  # Meta's LM on the CPU
    with _source(audio, sample_rate) as source:
        if destination is None or not isinstance(destination, (str, os.PathLike)):
            out = io.BytesIO() if destination is None or not destination.seekable() else destination
            compress_source(codec, source, out, bandwidth, progress, coder)
            if destination is None:
                return out.getvalue()
            if out is not destination:
                destination.write(out.getvalue())
            return None
        with AtomicOutput(destination, overwrite) as output:
            compress_source(codec, source, output.file, bandwidth, progress, coder)
    return None


class _source:
    """Context: an ``AudioSource`` for what ``compress`` accepts, closed afterwards."""

    def __init__(self, audio: Any, sample_rate: int | None) -> None:
        self._closing: list[Any] = []
        if isinstance(audio, (str, os.PathLike)):
            self.source: Any = AudioReader(audio)
            self._closing.append(self.source)
        elif isinstance(audio, (bytes, bytearray, memoryview)):
            spool = tempfile.TemporaryFile()
            spool.write(audio)
            spool.seek(0)
            self._closing.append(spool)
            self.source = AudioReader.from_file(spool, "<bytes>")
            self._closing.append(self.source)
        elif isinstance(audio, (np.ndarray, torch.Tensor)):
            if sample_rate is None:
                raise ValueError("compress of an array needs sample_rate= (Hz)")
            self.source = ArraySource(audio, sample_rate)
        else:
            self.source = audio

    def __enter__(self) -> AudioSource:
        return self.source

    def __exit__(self, *exc: object) -> None:
        for item in reversed(self._closing):
            item.close()


# -- decompressing --------------------------------------------------------------------------------


def decoded_blocks(codec: EnCodec, reader: EcdcReader) -> Iterator[np.ndarray]:
    """``reader``'s codes decoded to float32 blocks ``[channels, n]`` at the model's rate,
    ``audio_length`` samples in all."""
    length = reader.header.audio_length
    decoder = BlockDecoder(codec.engine, length)
    silent: list[tuple[int, int]] = []  # sample spans of damaged segments
    position = 0
    for chunk in reader.chunks(codec.layout, device=codec.device):
        if chunk.damaged and chunk.first:
            offset, samples = codec.layout.span(chunk.segment, length)
            silent.append((offset, offset + samples))
        for block in decoder.push(chunk.codes, chunk.scale, chunk.last):
            yield _silenced(block, position, silent)
            position += block.shape[-1]
    for block in decoder.finish():
        yield _silenced(block, position, silent)
        position += block.shape[-1]


def _silenced(block: np.ndarray, position: int, spans: list[tuple[int, int]]) -> np.ndarray:
    """``block`` (starting at sample ``position``) with the samples inside ``spans`` set to zero."""
    for start, end in spans:
        lo, hi = max(start - position, 0), min(end - position, block.shape[-1])
        if lo < hi:
            block = block.copy() if not block.flags.writeable else block
            block[..., lo:hi] = 0
    return block


def check_rate(rate: int) -> int:
    """``rate`` if it is a sample rate (Hz) a file may record or be written at: 1 to ``MAX_SOURCE_SAMPLE_RATE``.

    Raises:
        ValueError: it is not.
    """
    return bounded_int(rate, "sample rate", MAX_SOURCE_SAMPLE_RATE, "Hz")


def output_rate(rate: int | str | None, header: EcdcHeader, codec: EnCodec) -> int:
    """The rate (Hz) to write: the model's (None), ``rate`` (see ``check_rate``), or with ``"original"``
    the input's rate the file records (the model's, with a warning, for files that do not record it)."""
    if rate is None:
        return codec.sample_rate
    if rate != "original":
        return check_rate(rate)
    if header.source_sample_rate is None:
        warnings.warn(
            f"the file does not record the original rate; writing {codec.sample_rate} Hz", UserWarning, stacklevel=3
        )
        return codec.sample_rate
    return header.source_sample_rate


def decompress_stream(
    source: BinaryIO | EcdcReader,
    destination: str | os.PathLike[str] | None,
    *,
    model: str | os.PathLike[str] | EnCodec | None = None,
    device: str | torch.device | None = None,
    rate: int | str | None = None,
    subtype: str | None = None,
    force_model: bool = False,
    rescale: bool = False,
    progress: Progress | None = None,
    on_model: Callable[[EcdcHeader, EnCodec, int], object] | None = None,
    lm_weights: LMWeights = None,
    overwrite: bool = True,
) -> tuple[np.ndarray, int] | None:
    """``decompress`` of an open ``.ecdc`` stream (or a reader whose header was read); ``on_model(header,
    codec, rate)`` is called once the model and output rate are known; ``overwrite=False`` fails
    if ``destination`` exists when the audio is complete."""
    reader = source if isinstance(source, EcdcReader) else EcdcReader(source, lm_weights=lm_weights)
    codec = model_for(reader.header, model, device, force_model)
    out_rate = output_rate(rate, reader.header, codec)
    if on_model is not None:
        on_model(reader.header, codec, out_rate)
    blocks = _resampled(decoded_blocks(codec, reader), codec.sample_rate, out_rate, codec.channels, progress)
    if rescale:
        blocks = _rescaled(blocks, codec.channels)
    if destination is None:
        return np.concatenate(list(blocks), axis=1), out_rate
    with AudioWriter(destination, out_rate, codec.channels, subtype, overwrite) as writer:
        for block in blocks:
            writer.write(block)
    if writer.clipped:
        warnings.warn(
            f"{writer.clipped} samples exceeded full scale and were clipped in {writer.subtype}; "
            "rescale=True (--rescale) scales the audio down instead, or write FLOAT",
            ClippingWarning,
            stacklevel=2,
        )
    return None


def decompress(
    data: str | os.PathLike[str] | bytes | BinaryIO,
    destination: str | os.PathLike[str] | None = None,
    **options: Any,
) -> tuple[np.ndarray, int] | None:
    """Decompress an ``.ecdc`` file (the CLI's ``decompress``).

    Args:
        data: the file's path (``"-"`` is stdin), its bytes, or a binary file.
        destination: a ``.wav``/``.flac`` path (``"-"``: stdout), written atomically; None returns the audio.
        **options: ``model`` (default: the published model the file names; a name, path or
            ``EnCodec``), ``device``, ``rate`` (Hz, or ``"original"``: the input's rate the file
            records), ``subtype`` (e.g. ``"PCM_16"``), ``force_model`` (decode a file of another
            model or checkpoint anyway), ``rescale`` (scale the audio to a peak of 0.99 when it
            would clip, as Meta's ``-r``), ``progress``, ``lm_weights`` (the LM checkpoint of
            LM-coded files; default: torch hub's cache), ``overwrite`` (default True: replace an
            existing ``destination``). The entropy mode is read from the file.

    Returns:
        ``(audio [channels, samples] float32, sample_rate)`` when ``destination`` is None, else None.

    Raises:
        EcdcError: a malformed file, or one of an unknown model.
        ModelMismatchError: the model differs from the file's (without ``force_model``).

    Warns:
        ClippingWarning: audio written in a PCM subtype was clipped (with the count of samples).
    """
    if isinstance(data, (bytes, bytearray, memoryview)):
        return decompress_stream(io.BytesIO(bytes(data)), destination, **options)
    if isinstance(data, (str, os.PathLike)):
        if data == STDIO:
            return decompress_stream(_stdin(), destination, **options)
        with open(data, "rb") as stream:
            return decompress_stream(stream, destination, **options)
    return decompress_stream(data, destination, **options)


def _stdin() -> BinaryIO:
    import sys

    return sys.stdin.buffer


def _resampled(
    blocks: Iterator[np.ndarray], rate: int, out_rate: int, channels: int, progress: Progress | None
) -> Iterator[np.ndarray]:
    resampler = StreamResampler(rate, out_rate, channels)
    for block in blocks:
        if progress is not None:
            progress(block.shape[-1])
        yield resampler.push(block)
    yield resampler.flush()


def _rescaled(blocks: Iterator[np.ndarray], channels: int) -> Iterator[np.ndarray]:
    """The blocks scaled by ``min(1, CLIP_LEVEL / peak)`` (two passes through a float32 spool file)."""
    peak = 0.0
    with tempfile.TemporaryFile() as spool:
        for block in blocks:
            if block.size:
                peak = max(peak, float(np.abs(block).max()))
            spool.write(np.ascontiguousarray(block.T, dtype=np.float32).tobytes())
        gain = np.float32(min(1.0, CLIP_LEVEL / peak)) if peak > CLIP_LEVEL else np.float32(1.0)
        spool.seek(0)
        step = channels * 4 << 16
        while data := spool.read(step):
            yield np.frombuffer(data, np.float32).reshape(-1, channels).T * gain


# -- whole files in memory ------------------------------------------------------------------------


@dataclass(frozen=True)
class EcdcFile:
    """A whole ``.ecdc`` file: its header and each segment's codes and scale.

    Attributes:
        header: the metadata.
        segments: per segment, int64 codes ``[codebooks, frames]`` and its scale (or None).
        bits_per_codebook: width of one code (log2 of the codebook size).
    """

    header: EcdcHeader
    segments: tuple[tuple[np.ndarray, float | None], ...]
    bits_per_codebook: int = 10

    @classmethod
    def from_tokens(cls, tokens: Tokens, codec: EnCodec, item: int = 0) -> EcdcFile:
        """Item ``item`` of ``tokens`` (made by ``codec``) as a file."""
        codec.check_model(tokens)
        one = tokens[item] if tokens.ndim == 3 else tokens
        if len(one.pieces[0]) != 1:
            raise ValueError("a concatenation of Tokens is several signals; store each piece as its own file")
        codes, length = np.asarray(one)[:, : one.frames[0]], one.lengths[0]
        scales = None if one.scales is None else torch.as_tensor(one.scales).cpu().numpy()[0]
        segments, start = [], 0
        for s, f in enumerate(codec.layout.frame_counts(length)):
            segments.append((codes[:, start : start + f], None if scales is None else float(scales[s])))
            start += f
        header = EcdcHeader(codec.name, length, codes.shape[0], None, None, True, codec.fingerprint)
        return cls(header, tuple(segments), codec.config.bits_per_codebook)

    def tokens(self, codec: EnCodec, force_model: bool = False) -> Tokens:
        """The codes as ``Tokens`` of ``codec`` (checked against the file's model)."""
        model_for(self.header, codec, None, force_model)
        codes = np.concatenate([c for c, _ in self.segments], axis=1)[None]
        scales = None
        if codec.config.normalize:
            scales = np.array([[s for _, s in self.segments]], dtype=np.float32)
        return Tokens(codes, (self.header.audio_length,), scales, codec.model_id, layout=codec.layout)

    def write(
        self, destination: BinaryIO, lm_weights: LMWeights = None, device: str | torch.device | None = None
    ) -> None:
        """Write the file to a seekable binary stream, its codes stored by the header's coder
        (``lm_weights``: the LM checkpoint of the LM modes; ``device``: where Meta's LM runs in
        ``lm`` mode, default the CPU)."""
        h = self.header
        coder = coder_for(h.coder, h.model_name, self.bits_per_codebook, lm_weights, device)
        writer = EcdcWriter(
            destination,
            model_name=h.model_name,
            num_codebooks=h.num_codebooks,
            bits_per_codebook=self.bits_per_codebook,
            normalize=bool(self.segments) and self.segments[0][1] is not None,
            audio_length=h.audio_length,
            source_sample_rate=h.source_sample_rate,
            source_channels=h.source_channels,
            checksum=h.checksum,
            fingerprint=h.fingerprint,
            coder=coder,
        )
        for codes, scale in self.segments:
            writer.write_segment(codes, scale)
        writer.finish()

    def to_bytes(self) -> bytes:
        out = io.BytesIO()
        self.write(out)
        return out.getvalue()


def read_ecdc(
    data: str | os.PathLike[str] | bytes | BinaryIO, codec: EnCodec | None = None, lm_weights: LMWeights = None
) -> EcdcFile:
    """Read a whole ``.ecdc`` file (path, bytes or binary stream) into memory.

    Args:
        data: the file.
        codec: the model whose layout splits the codes (default: the published model it names);
            Meta's LM of ``lm`` files runs where the file was coded (the CPU unless its header
            records a GPU, and then on ``codec``'s device).
        lm_weights: the LM checkpoint of LM-coded files (default: torch hub's cache).

    Raises:
        EcdcError: malformed, or of an unknown model without ``codec``.
    """
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = io.BytesIO(bytes(data))
    if isinstance(data, (str, os.PathLike)):
        with open(data, "rb") as stream:
            return read_ecdc(stream, codec, lm_weights)
    reader = EcdcReader(data, lm_weights=lm_weights)
    if codec is not None:
        layout = codec.layout
    elif reader.header.model_name in PUBLISHED_CONFIGS:
        layout = SegmentLayout.of(PUBLISHED_CONFIGS[reader.header.model_name])
    else:
        raise EcdcError(f"unknown model {reader.header.model_name!r}; pass the model that coded it (codec=)")
    device = None if codec is None else codec.device
    return EcdcFile(reader.header, tuple(reader.segments(layout, device)), layout.bits_per_codebook)
