"""The ``fastencodec`` command line: compress audio files to ``.ecdc``, decompress and inspect them.

Commands (``fastencodec COMMAND --help`` for every option)::

    fastencodec compress INPUT [OUTPUT.ecdc] [-b KBPS] [--model NAME|PATH] [--device DEVICE] [-f] [-q]
    fastencodec compress --stream [--pcm-format s16le|s32le|f32le] [--pcm-rate HZ] [--pcm-channels N] - OUTPUT.ecdc
    fastencodec decompress INPUT.ecdc [OUTPUT.wav|.flac] [--rate [HZ]] [--subtype SUBTYPE] [--model ...] [-f] [-q]
    fastencodec info FILE.ecdc [--json] [--model NAME|PATH]
    fastencodec bench [--model NAME|PATH] [--device DEVICE] [--seconds S] [--batch N] [-b KBPS] [--dtype D]

``-`` is standard input or output. Exit status: 0 success, 1 failure (one line on stderr naming
the file and the problem), 2 bad usage.

Memory does not grow with the audio's length: audio is read, resampled, coded and written
block by block. Causal models (24 kHz) run through their exact stream encoder and decoder;
models that code 1 s segments (48 kHz) go segment by segment, in the batches
``EnCodec.encode`` forms for a whole file (so the codes are the same), and decoding
cross-fades the segments exactly as ``EnCodec.decode`` does. A model that is neither (32 kHz)
is coded as one piece.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import numpy as np
import torch
from tqdm import tqdm

from fastencodec.audio_io import STDIO, AtomicOutput, AudioFileError, AudioReader, AudioWriter, rebatch, to_channels
from fastencodec.bench import run_bench
from fastencodec.codec import EnCodec, triangle_weight
from fastencodec.config import META_24KHZ, META_48KHZ, EncodecConfig
from fastencodec.ecdc import (
    MAX_AUDIO_LENGTH,
    MAX_SOURCE_SAMPLE_RATE,
    EcdcError,
    EcdcHeader,
    EcdcReader,
    EcdcWriter,
    SegmentLayout,
)
from fastencodec.hub import ALIASES
from fastencodec.resample import StreamResampler, output_length
from fastencodec.streaming import check_streamable

PROG = "fastencodec"
ECDC_SUFFIX = ".ecdc"
DECOMPRESSED_SUFFIX = "_decompressed.wav"
"""Default decompression output: ``song.ecdc`` -> ``song_decompressed.wav`` (as Meta's tool)."""
BLOCK_SAMPLES = 1 << 16
"""Input samples per channel read at a time."""
PROGRESS_MIN_SECONDS = 5.0
"""Audio at least this long (seconds) gets a progress bar on stderr, unless ``--quiet``."""
MAX_PCM_CHANNELS = 256
"""Most interleaved channels ``compress --stream`` takes (a block of them is allocated at once)."""
PCM_FORMATS = {"s16le": ("<i2", 2.0**15), "s32le": ("<i4", 2.0**31), "f32le": ("<f4", 1.0)}
"""Raw PCM sample formats of ``compress --stream``: NumPy dtype and the value of full scale."""
META_CONFIGS = {config.name: config for config in (META_24KHZ, META_48KHZ)}
"""Layouts ``info`` knows without loading a model."""
SUBTYPES = ("PCM_16", "PCM_24", "PCM_32", "FLOAT")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
"""Network dtypes ``bench --dtype`` takes."""


class CliError(Exception):
    """A failure reported as one line on stderr; exit status 1."""


class UsageError(CliError):
    """Bad usage (an option the chosen model or output cannot take); exit status 2."""


# -- audio in -------------------------------------------------------------------------------------


class AudioSource(Protocol):
    """What compression reads: ``AudioReader`` (files) or ``PcmSource`` (raw PCM)."""

    name: str
    sample_rate: int
    channels: int
    frames: int | None

    def blocks(self, block_size: int) -> Iterator[np.ndarray]: ...


class PcmSource:
    """Raw interleaved PCM read from a binary stream as it arrives (``compress --stream``).

    Args:
        stream: binary stream, e.g. ``sys.stdin.buffer``.
        name: how messages name the stream.
        sample_format: a key of ``PCM_FORMATS`` (little-endian).
        sample_rate: sample rate in Hz.
        channels: interleaved channel count.
    """

    frames = None

    def __init__(self, stream: BinaryIO, name: str, sample_format: str, sample_rate: int, channels: int) -> None:
        self._stream = stream
        self.name = name
        dtype, self._full_scale = PCM_FORMATS[sample_format]
        self._dtype = np.dtype(dtype)
        self.sample_rate = sample_rate
        self.channels = channels

    def blocks(self, block_size: int) -> Iterator[np.ndarray]:
        """Yield float32 blocks [channels, n] of at most ``block_size`` samples, as soon as they arrive.

        Raises:
            AudioFileError: no samples, a partial last sample frame, or NaN/infinite samples.
        """
        frame_bytes = self._dtype.itemsize * self.channels
        read = getattr(self._stream, "read1", self._stream.read)  # read1: what is there, without waiting
        pending, total = b"", 0
        while chunk := read(block_size * frame_bytes):
            data = pending + chunk
            whole = len(data) - len(data) % frame_bytes
            pending = data[whole:]
            if whole:
                samples = np.frombuffer(data[:whole], self._dtype).reshape(-1, self.channels).T
                block = samples.astype(np.float32) / np.float32(self._full_scale)
                if not np.isfinite(block).all():
                    raise AudioFileError(f"{self.name}: contains NaN or infinite samples")
                total += block.shape[1]
                yield block
        if pending:
            raise AudioFileError(f"{self.name}: raw PCM ends inside a sample frame ({len(pending)} stray bytes)")
        if total == 0:
            raise AudioFileError(f"{self.name}: contains no audio samples")


def conformed(
    source: AudioSource, codec: EnCodec, length: int | None, progress: Callable[[int], object]
) -> Iterator[np.ndarray]:
    """``source``'s audio at the model's sample rate and channel count, float32 blocks [channels, n].

    Resampling is soxr's, streamed. Channel rule (``audio_io.to_channels``): equal counts are
    kept; otherwise the channels are averaged to mono, resampled once, and copied to every
    channel the model has. ``progress`` gets the input samples of each block read.

    Raises:
        AudioFileError: nothing is left at the model's rate, or the total differs from
            ``length`` (the samples the source announced, at the model's rate), at the end.
    """
    mixed = source.channels if source.channels == codec.channels else 1
    resampler = StreamResampler(source.sample_rate, codec.sample_rate, mixed)
    total = 0
    for block in source.blocks(BLOCK_SAMPLES):
        audio = to_channels(resampler.push(to_channels(block, mixed)), codec.channels)
        total += audio.shape[-1]
        if total > MAX_AUDIO_LENGTH:
            raise AudioFileError(f"{source.name}: longer than an .ecdc file holds ({MAX_AUDIO_LENGTH:,} samples)")
        progress(block.shape[-1])
        yield audio
    audio = to_channels(resampler.flush(), codec.channels)
    total += audio.shape[-1]
    if total == 0:
        raise AudioFileError(f"{source.name}: too short: less than one sample at {codec.sample_rate} Hz")
    if length is not None and total != length:
        raise AudioFileError(f"{source.name}: announced {source.frames} samples but holds another number")
    yield audio


def encode_stream(codec: EnCodec, bandwidth: float, audio: Iterable[np.ndarray], writer: EcdcWriter) -> int:
    """Code a streamable model's audio with its exact stream encoder as one segment; returns the samples.

    The audio goes in pieces of ``codec.chunk_samples``, as ``EnCodec.encode`` feeds long signals
    to the same encoder, so the codes are those of encoding the whole file at once.
    """
    encoder = codec.stream_encoder(bandwidth)
    writer.begin_segment()
    for chunk in rebatch(audio, codec.chunk_samples):
        writer.write_frames(encoder.push(chunk[None])[0])
    writer.write_frames(encoder.flush()[0])
    writer.end_segment()
    return encoder.samples


def encode_segments(codec: EnCodec, bandwidth: float, audio: Iterable[np.ndarray], writer: EcdcWriter) -> int:
    """Code audio segment by segment, each with its own scale; returns the samples.

    A rolling buffer keeps the audio of the segments not complete yet. Complete segments are
    encoded in batches of ``codec.batch_samples // segment_length``, the batches ``EnCodec.encode``
    forms for a whole signal, so the codes are the same. A model without segments codes the
    whole input as one, at the end.
    """
    size, stride = codec.config.segment_length, codec.config.segment_stride
    batch = max(1, codec.batch_samples // size) if size else 1
    buffer = np.zeros((codec.channels, 0), dtype=np.float32)
    ready: list[np.ndarray] = []
    total = 0
    for block in audio:
        total += block.shape[-1]
        buffer = np.concatenate([buffer, block], axis=1)
        while size and stride and buffer.shape[-1] >= size:
            ready.append(buffer[:, :size])
            buffer = buffer[:, stride:]
        while len(ready) >= batch:
            write_segments(codec, bandwidth, ready[:batch], writer)
            ready = ready[batch:]
    size = size or buffer.shape[-1]
    stride = stride or size
    write_segments(
        codec, bandwidth, ready + [buffer[:, i : i + size] for i in range(0, buffer.shape[-1], stride)], writer
    )
    return total


def write_segments(codec: EnCodec, bandwidth: float, segments: list[np.ndarray], writer: EcdcWriter) -> None:
    """Encode segments [channels, n] as one batch and write them in order.

    ``EnCodec.encode`` codes an item of ``segment_length`` samples as that segment plus the
    sliver that would overlap a next one; only the segment's own frames and scale are kept.
    """
    if not segments:
        return
    tokens = codec.encode(segments, bandwidth)
    codes = np.asarray(tokens.codes)
    for i, segment in enumerate(segments):
        frames = -(-segment.shape[-1] // codec.hop_length)
        scale = None if tokens.scales is None else float(tokens.scales[i, 0])
        writer.write_segment(codes[i, :, :frames], scale)


def compress_source(
    codec: EnCodec, bandwidth: float, source: AudioSource, out: BinaryIO, progress: Callable[[int], object]
) -> None:
    """Compress ``source`` to an ``.ecdc`` stream on ``out`` (seekable).

    The header records the input's own sample rate and channel count; its audio length is
    written up front when the source knows its length, else filled in at the end.
    ``progress`` is called with the input samples of each block read.
    """
    length = None if source.frames is None else output_length(source.frames, source.sample_rate, codec.sample_rate)
    if length is not None and length > MAX_AUDIO_LENGTH:
        raise AudioFileError(
            f"{source.name}: {length:,} samples at {codec.sample_rate} Hz is more than an .ecdc file holds "
            f"({MAX_AUDIO_LENGTH:,})"
        )
    writer = EcdcWriter(
        out,
        model_name=codec.name,
        num_codebooks=codec.codebooks_for(bandwidth),
        bits_per_codebook=codec.config.bits_per_codebook,
        normalize=codec.config.normalize,
        audio_length=length or None,  # 0: ``conformed`` says why
        source_sample_rate=source.sample_rate,
        source_channels=source.channels,
    )
    encode = encode_stream if can_stream(codec) else encode_segments
    writer.finish(encode(codec, bandwidth, conformed(source, codec, length, progress), writer))


def can_stream(codec: EnCodec) -> bool:
    """Whether ``codec`` has an exact stream encoder and decoder (unsegmented models: 24 and 32 kHz)."""
    try:
        check_streamable(codec)
    except ValueError:
        return False
    return True


# -- decoding -------------------------------------------------------------------------------------


def segment_layout(config: EncodecConfig) -> SegmentLayout:
    """How the model ``config`` describes splits an ``.ecdc`` stream into segments and frames."""
    return SegmentLayout(
        sample_rate=config.sample_rate,
        frame_rate=config.frame_rate,
        bits_per_codebook=config.bits_per_codebook,
        normalize=config.normalize,
        segment_length=config.segment_length,
        segment_stride=config.segment_stride,
    )


def decoded_blocks(codec: EnCodec, reader: EcdcReader) -> Iterator[np.ndarray]:
    """Decode ``reader``'s codes to float32 blocks [channels, n] at the model's rate, ``audio_length`` in all."""
    layout = segment_layout(codec.config)
    blocks = stream_decoded(codec, reader, layout) if can_stream(codec) else segment_decoded(codec, reader, layout)
    remaining = reader.header.audio_length
    for block in blocks:
        if remaining > 0:
            yield block[:, :remaining]
        remaining -= block.shape[-1]


def stream_decoded(codec: EnCodec, reader: EcdcReader, layout: SegmentLayout) -> Iterator[np.ndarray]:
    """A streamable model's audio from its exact stream decoder, fed the frames of ``codec.chunk_samples``
    at a time as ``EnCodec.decode`` feeds long signals to it (so the samples are the same)."""
    decoder = codec.stream_decoder()
    step = max(1, codec.chunk_samples // codec.hop_length)
    for codes in rebatch((chunk.codes for chunk in reader.chunks(layout)), step):
        yield decoder.push(codes[None])[0]
    yield decoder.flush()[0]


def segment_decoded(codec: EnCodec, reader: EcdcReader, layout: SegmentLayout) -> Iterator[np.ndarray]:
    """A segmenting model's audio, segment by segment, cross-faded as ``EnCodec.decode`` does."""
    fade: CrossFade | None = None
    for batch in equal_runs(reader.segments(layout), codec.hop_length, codec.batch_samples):
        codes = torch.from_numpy(np.stack([codes for codes, _ in batch]))
        scales = torch.tensor([scale for _, scale in batch]) if codec.config.normalize else None
        for piece in codec.decode_segments(codes, scales):
            if codec.config.segment_stride is None:
                yield piece.numpy()
                continue
            if fade is None:
                fade = CrossFade(piece.shape[-1], codec.config.segment_stride, codec.channels)
            yield fade.add(piece)
    if fade is not None:
        yield fade.finish()


def equal_runs(
    segments: Iterable[tuple[np.ndarray, float | None]], hop_length: int, batch_samples: int
) -> Iterator[list[tuple[np.ndarray, float | None]]]:
    """Group consecutive segments of equal frame counts into batches of at most ``batch_samples`` samples."""
    run: list[tuple[np.ndarray, float | None]] = []
    for segment in segments:
        frames = segment[0].shape[-1]
        limit = max(1, batch_samples // (frames * hop_length))
        if run and (run[0][0].shape[-1] != frames or len(run) >= limit):
            yield run
            run = []
        run.append(segment)
    if run:
        yield run


class CrossFade:
    """Joins decoded segments with the reference's triangular cross-fade, as they come.

    Each sample is returned once no later segment overlaps it. The weighted sums and weight
    totals are formed with the same float32 operations as ``EnCodec.decode``, so the samples
    are the same.

    Args:
        first_length: length in samples of the first decoded segment (whole frames).
        stride: samples between the starts of consecutive segments.
        channels: channel count.
    """

    def __init__(self, first_length: int, stride: int, channels: int) -> None:
        self._weight = triangle_weight(first_length)
        self._stride = stride
        self._sums = torch.zeros(channels, 0)
        self._totals = torch.zeros(0)

    def add(self, piece: torch.Tensor) -> np.ndarray:
        """Add the next decoded segment [channels, n]; returns the samples now final [channels, m]."""
        n, held = piece.shape[-1], self._totals.shape[-1]
        weight = self._weight[:n]
        sums = torch.zeros(piece.shape[0], max(n, held))
        sums[:, :held] = self._sums
        sums[:, :n] += weight * piece
        totals = torch.zeros(max(n, held))
        totals[:held] = self._totals
        totals[:n] += weight
        self._sums, self._totals = sums[:, self._stride :], totals[self._stride :]
        return (sums[:, : self._stride] / totals[: self._stride]).numpy()

    def finish(self) -> np.ndarray:
        """The samples after the last segment's start [channels, m]."""
        return (self._sums / self._totals).numpy()


# -- commands -------------------------------------------------------------------------------------


def check_input_name(path: str) -> None:
    """Refuse an input path that cannot name a file (``''``, ``/``, ``.``, any directory) with one line."""
    if path == "":
        raise CliError("'': empty input path")
    if path != STDIO and Path(path).is_dir():
        raise CliError(f"{path}: is a directory")


def run_compress(args: argparse.Namespace) -> None:
    check_input_name(args.input)
    output = args.output or (STDIO if args.input == STDIO else str(Path(args.input).with_suffix(ECDC_SUFFIX)))
    if output != STDIO and not output.lower().endswith(ECDC_SUFFIX):
        raise UsageError(f"{output}: OUTPUT must end in {ECDC_SUFFIX} (or be - for stdout)")
    check_output(output, args.input, args.force)
    if args.stream:
        codec = load_codec(args.model, args.device)
        bandwidth = check_bandwidth(codec, args.bandwidth)
        with open_binary(args.input) as stream:
            source = PcmSource(
                stream,
                display_name(args.input),
                args.pcm_format,
                args.pcm_rate or codec.sample_rate,
                args.pcm_channels or codec.channels,
            )
            write_compressed(codec, bandwidth, source, output, args.quiet, args.force)
        return
    with AudioReader(args.input) as reader:
        codec = load_codec(args.model, args.device)
        bandwidth = check_bandwidth(codec, args.bandwidth)
        write_compressed(codec, bandwidth, reader, output, args.quiet, args.force)


def write_compressed(
    codec: EnCodec, bandwidth: float, source: AudioSource, output: str, quiet: bool, force: bool = False
) -> None:
    """Compress ``source`` into the file ``output`` (or stdout), atomically, with a progress bar;
    an ``output`` that exists by the end is replaced only with ``force``."""
    output_file = AtomicOutput(output, overwrite=force)
    with progress_bar(source.frames, source.sample_rate, quiet, "compress") as bar, output_file as out:
        compress_source(codec, bandwidth, source, out.file, bar.update)


def run_decompress(args: argparse.Namespace) -> None:
    check_input_name(args.input)
    default = STDIO if args.input == STDIO else str(Path(args.input).with_suffix("")) + DECOMPRESSED_SUFFIX
    output = args.output or default
    if output != STDIO and Path(output).suffix.lower() not in (".wav", ".flac"):
        raise UsageError(f"{output}: OUTPUT must end in .wav or .flac (or be - for stdout)")
    check_output(output, args.input, args.force)
    with open_binary(args.input) as stream:
        reader = EcdcReader(stream)
        header = reader.header
        codec = codec_for(header, args)
        rate = output_rate(args.rate, header, codec, args.quiet)
        try:
            writer = AudioWriter(output, rate, codec.channels, args.subtype, overwrite=args.force)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        with progress_bar(header.audio_length, codec.sample_rate, args.quiet, "decompress") as bar, writer:
            resampler = StreamResampler(codec.sample_rate, rate, codec.channels)
            for block in decoded_blocks(codec, reader):
                writer.write(resampler.push(block))
                bar.update(block.shape[-1])
            writer.write(resampler.flush())


def output_rate(rate: str | None, header: EcdcHeader, codec: EnCodec, quiet: bool) -> int:
    """Sample rate (Hz) to write: the model's, ``--rate HZ``, or with a bare ``--rate`` the input's original one."""
    if rate is None:
        return codec.sample_rate
    if rate != "original":
        return int(rate)
    if header.source_sample_rate is None:
        if not quiet:
            print(
                f"{PROG}: the file does not record the original rate; writing {codec.sample_rate} Hz", file=sys.stderr
            )
        return codec.sample_rate
    return header.source_sample_rate


def run_info(args: argparse.Namespace) -> None:
    with open_binary(args.input) as stream:
        counted = CountingReader(stream)
        reader = EcdcReader(counted)  # type: ignore[arg-type]  # EcdcReader only calls read()
        header = reader.header
        config = codec_for(header, args).config if args.model else META_CONFIGS.get(header.model_name)
        if config is None:
            known = ", ".join(META_CONFIGS)
            raise CliError(
                f"{display_name(args.input)}: unknown model {header.model_name!r} (known: {known}); pass --model"
            )
        for _ in reader.chunks(segment_layout(config)):  # reads every code: checks the length and checksum
            pass
    facts = describe(display_name(args.input), header, config, counted.count)
    if args.json:
        print(json.dumps(facts, indent=2))
        return
    for line in info_lines(facts):
        print(line)


class CountingReader:
    """Wraps a binary stream, counting the bytes read through it."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self.count += len(data)
        return data


def describe(name: str, header: EcdcHeader, config: EncodecConfig, size: int) -> dict[str, Any]:
    """What ``info`` reports about an ``.ecdc`` file of ``size`` bytes (JSON-ready)."""
    duration = header.audio_length / config.sample_rate
    rate = header.source_sample_rate or config.sample_rate
    channels = header.source_channels or config.channels
    pcm_bytes = 2 * channels * round(duration * rate)
    return {
        "file": name,
        "model": header.model_name,
        "sample_rate": config.sample_rate,
        "channels": config.channels,
        "bandwidth_kbps": header.num_codebooks * config.bits_per_codebook * config.frame_rate / 1000,
        "codebooks": header.num_codebooks,
        "samples": header.audio_length,
        "duration_s": duration,
        "original_sample_rate": header.source_sample_rate,
        "original_channels": header.source_channels,
        "original_pcm16_bytes": pcm_bytes,
        "bytes": size,
        "bitrate_kbps": 8 * size / duration / 1000,
        "compression_ratio": pcm_bytes / size,
        "checksum": "crc32 ok" if header.checksum else "none",
    }


def info_lines(facts: dict[str, Any]) -> list[str]:
    """``describe``'s facts as aligned ``label: value`` lines."""
    if facts["original_sample_rate"] is None:
        original = "not recorded (file written by Meta's encodec); ratio against the model's rate"
    else:
        original = f"{facts['original_sample_rate']} Hz, {plural(facts['original_channels'], 'channel')}"
    rows = [
        ("file", facts["file"]),
        ("model", f"{facts['model']} ({facts['sample_rate']} Hz, {plural(facts['channels'], 'channel')})"),
        ("bandwidth", f"{facts['bandwidth_kbps']:g} kbps ({plural(facts['codebooks'], 'codebook')})"),
        ("duration", f"{facts['duration_s']:.3f} s ({facts['samples']} samples at {facts['sample_rate']} Hz)"),
        ("original", original),
        ("original size", f"{facts['original_pcm16_bytes']:,} bytes as 16-bit PCM"),
        ("size", f"{facts['bytes']:,} bytes ({facts['bitrate_kbps']:.2f} kbps)"),
        ("ratio", f"{facts['compression_ratio']:.1f}:1"),
        ("checksum", facts["checksum"]),
    ]
    return [f"{label + ':':<15}{value}" for label, value in rows]


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def run_bench_command(args: argparse.Namespace) -> None:
    if args.device is not None:
        check_device(args.device)
    try:
        table = run_bench(
            args.device,
            args.seconds,
            model=args.model,
            batch=args.batch,
            bandwidth=args.bandwidth,
            dtype=DTYPES[args.dtype],
            repeat=args.repeat,
        )
    except ValueError as exc:  # an option the model cannot take (e.g. its bandwidths)
        raise UsageError(str(exc)) from None
    print(table)


# -- shared helpers -------------------------------------------------------------------------------


def check_device(device: str) -> None:
    """Fail with one line when ``device`` is a CUDA device and CUDA is not available."""
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise CliError(f"--device {device}: CUDA is not available")


def load_codec(spec: str, device: str, local: bool = True) -> EnCodec:
    """Load the model ``spec`` (name, repo id or path; only a published name without ``local``)
    on ``device``, or fail with one line."""
    check_device(device)
    try:
        return EnCodec.from_pretrained(spec, device=device, local=local)
    except (OSError, ValueError, RuntimeError) as exc:
        raise CliError(f"{spec}: cannot load the model ({exc})") from None


def codec_for(header: EcdcHeader, args: argparse.Namespace) -> EnCodec:
    """The model that decodes ``header``'s codes: ``--model``, else the one the header names."""
    name = header.model_name
    if args.model is None and name not in ALIASES:
        raise CliError(f"{display_name(args.input)}: unknown model {name!r}; pass --model NAME|PATH")
    codec = load_codec(args.model or name, args.device, local=args.model is not None)  # a file names no path
    if codec.name != name:
        raise CliError(f"{display_name(args.input)}: coded with {name}, but --model {args.model} is {codec.name}")
    if header.num_codebooks > codec.num_codebooks:
        have = f"{header.num_codebooks} codebooks"
        raise CliError(f"{display_name(args.input)}: {have}; {name} has at most {codec.num_codebooks}")
    return codec


def check_bandwidth(codec: EnCodec, bandwidth: float | None) -> float:
    """``bandwidth`` (kbps; None: the model's default) if the model supports it, else a usage error."""
    if bandwidth is None:
        return codec.default_bandwidth
    try:
        codec.codebooks_for(bandwidth)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return bandwidth


def check_output(output: str, source: str, force: bool) -> None:
    """Refuse an output that exists (without ``force``), is a directory, or is the input itself."""
    if output == STDIO:
        return
    path = Path(output)
    if path.is_dir():
        raise CliError(f"{output}: is a directory")
    if not path.exists():
        return
    if source != STDIO and Path(source).exists() and os.path.samefile(source, output):
        raise CliError(f"{output}: is the input file")
    if not force:
        raise CliError(f"{output}: already exists (use -f/--force to overwrite)")


@contextmanager
def open_binary(path: str) -> Iterator[BinaryIO]:
    """Standard input for ``-``, else the file opened for binary reading; failures name the file."""
    if path == STDIO:
        yield sys.stdin.buffer
        return
    try:
        stream = open(path, "rb")
    except OSError as exc:
        raise CliError(f"{path}: cannot read ({exc.strerror or exc})") from None
    with stream:
        yield stream


def display_name(path: str) -> str:
    return "<stdin>" if path == STDIO else path


@contextmanager
def progress_bar(samples: int | None, sample_rate: int, quiet: bool, action: str) -> Iterator[tqdm]:
    """A tqdm bar on stderr, updated in samples and shown in seconds of audio.

    Hidden with ``quiet`` and for audio shorter than ``PROGRESS_MIN_SECONDS``; audio of unknown
    length (raw PCM streams, some FFmpeg inputs) shows a running count.
    """
    hidden = quiet or (samples is not None and samples < PROGRESS_MIN_SECONDS * sample_rate)
    known = "{percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s [{elapsed}<{remaining}, {rate_noinv_fmt}]"
    with tqdm(
        total=samples,
        desc=action,
        unit="s audio",
        unit_scale=1 / sample_rate,
        bar_format="{desc}: " + (known if samples is not None else "{n:.1f} s [{elapsed}, {rate_noinv_fmt}]"),
        file=sys.stderr,
        disable=hidden,
    ) as bar:
        yield bar


# -- arguments ------------------------------------------------------------------------------------


def _positive(convert: Callable[[str], float], noun: str) -> Callable[[str], float]:
    """An argparse type: ``convert(text)`` if it is a finite number > 0, else a usage error."""

    def parse(text: str) -> float:
        try:
            value = convert(text)
        except ValueError:
            value = 0
        if not 0 < value < math.inf:  # also refuses NaN
            raise argparse.ArgumentTypeError(f"expected a positive {noun}, got {text!r}")
        return value

    return parse


positive_int = _positive(int, "integer")
positive_float = _positive(float, "number")


def rate_value(text: str) -> str:
    """``--rate``'s value: a positive integer (Hz, at most ``MAX_SOURCE_SAMPLE_RATE``) or ``original``."""
    return text if text == "original" else str(sample_rate_value(text))


def sample_rate_value(text: str) -> int:
    """A sample rate in Hz: a positive integer up to ``MAX_SOURCE_SAMPLE_RATE``."""
    rate = int(positive_int(text))
    if rate > MAX_SOURCE_SAMPLE_RATE:
        raise argparse.ArgumentTypeError(f"sample rate {rate} Hz is above {MAX_SOURCE_SAMPLE_RATE} Hz")
    return rate


def pcm_channels_value(text: str) -> int:
    """``--pcm-channels``: a positive integer up to ``MAX_PCM_CHANNELS``."""
    channels = int(positive_int(text))
    if channels > MAX_PCM_CHANNELS:
        raise argparse.ArgumentTypeError(f"{channels} channels is more than {MAX_PCM_CHANNELS}")
    return channels


def device_value(text: str) -> str:
    try:
        torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"not a torch device: {text!r}") from None
    return text


def build_parser() -> argparse.ArgumentParser:
    """The ``fastencodec`` argument parser; each subcommand stores its function as ``run``."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="EnCodec neural audio codec: compress audio to .ecdc files (compatible with Meta's encodec) "
        "and back. Exit status: 0 ok, 1 failed, 2 bad usage.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    compress = commands.add_parser(
        "compress",
        help="audio file -> .ecdc",
        description="Compress audio (wav, flac, ogg, opus, mp3, m4a/aac, aiff, or anything FFmpeg decodes) to "
        "an .ecdc file. Any sample rate and channel count is accepted: it is resampled (soxr) to the model's "
        "rate and mixed to its channels (more or fewer channels than the model has go through their mean).",
    )
    compress.add_argument("input", metavar="INPUT", help="audio file, or - for standard input")
    compress.add_argument("output", metavar="OUTPUT", nargs="?", help="INPUT with .ecdc (default), or - for stdout")
    compress.add_argument(
        "-b", "--bandwidth", type=float, metavar="KBPS", help="target bandwidth (default: 6 for Meta's models)"
    )
    compress.add_argument(
        "--model", default="encodec-24khz", help="encodec-24khz (default), encodec-48khz, a repo id or a checkpoint"
    )
    stream = compress.add_argument_group("raw PCM streams")
    stream.add_argument(
        "--stream",
        action="store_true",
        help="read INPUT (usually -) as headerless interleaved PCM, coding it as it arrives",
    )
    stream.add_argument("--pcm-format", choices=sorted(PCM_FORMATS), default="s16le", help="sample format (s16le)")
    stream.add_argument("--pcm-rate", type=sample_rate_value, metavar="HZ", help="sample rate (default: the model's)")
    stream.add_argument("--pcm-channels", type=pcm_channels_value, metavar="N", help="channels (default: the model's)")
    compress.set_defaults(run=run_compress)

    decompress = commands.add_parser(
        "decompress",
        help=".ecdc -> wav/flac",
        description="Decompress an .ecdc file (ours or Meta's encodec without --lm) to WAV or FLAC.",
    )
    decompress.add_argument("input", metavar="INPUT", help=".ecdc file, or - for standard input")
    decompress.add_argument(
        "output", metavar="OUTPUT", nargs="?", help=f"INPUT with {DECOMPRESSED_SUFFIX} (default), .wav, .flac or -"
    )
    decompress.add_argument(
        "--rate",
        nargs="?",
        const="original",
        type=rate_value,
        metavar="HZ",
        help="resample to HZ; bare (after the file names) or as --rate=original: to the rate of the original "
        "input, which the file records",
    )
    decompress.add_argument(
        "--subtype", choices=SUBTYPES, help="sample format (default: FLOAT for .wav, PCM_24 for .flac)"
    )
    decompress.add_argument("--model", help="model (default: the one the file names)")
    decompress.set_defaults(run=run_decompress)

    info = commands.add_parser(
        "info", help="describe an .ecdc file", description="Print what an .ecdc file holds, checking it whole."
    )
    info.add_argument("input", metavar="FILE", help=".ecdc file, or - for standard input")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.add_argument("--model", help="model, for files of models other than Meta's two")
    info.set_defaults(run=run_info, device="cpu")

    bench = commands.add_parser(
        "bench",
        help="time encode and decode on this machine",
        description="Time encode and decode of random audio; prints real-time factors. Without --model it uses "
        "random weights in the 24 kHz architecture (no download; speed does not depend on the weights).",
    )
    bench.add_argument("--model", help="a model name, repo id or checkpoint (default: random 24 kHz weights)")
    bench.add_argument("--device", type=device_value, help="cpu, cuda, ... (default: cuda if available)")
    bench.add_argument("--seconds", type=positive_float, default=10.0, help="seconds of audio per item (10)")
    bench.add_argument("--batch", type=positive_int, default=1, help="signals per call (1)")
    bench.add_argument("-b", "--bandwidth", type=float, metavar="KBPS", help="bandwidth (default: the model's)")
    bench.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="network dtype (float32)")
    bench.add_argument("--repeat", type=positive_int, default=5, help="timed runs; the median is shown (5)")
    bench.set_defaults(run=run_bench_command)

    for command in (compress, decompress):
        command.add_argument("--device", type=device_value, default="cpu", help="cpu (default), cuda, cuda:1, ...")
        command.add_argument("-f", "--force", action="store_true", help="overwrite OUTPUT if it exists")
        command.add_argument("-q", "--quiet", action="store_true", help="no progress bar or notes on stderr")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or bad usage (argparse has printed why)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        args.run(args)
    except UsageError as exc:
        return fail(f"{PROG} {args.command}: error: {exc}", 2)
    except EcdcError as exc:
        return fail(f"{PROG}: {display_name(args.input)}: {exc}")
    except (CliError, AudioFileError) as exc:
        return fail(f"{PROG}: {exc}")
    except torch.cuda.OutOfMemoryError as exc:
        return fail(f"{PROG}: out of GPU memory ({str(exc).splitlines()[0]})")
    except OSError as exc:
        return fail(f"{PROG}: {exc}")
    except ValueError as exc:  # the library's own errors name the problem (e.g. a scale that overflows)
        return fail(f"{PROG}: {display_name(args.input) if 'input' in args else args.command}: {exc}")
    except MemoryError:
        return fail(f"{PROG}: out of memory")
    except KeyboardInterrupt:
        return fail(f"{PROG}: interrupted", 130)
    except Exception as exc:  # a bug: still one line, naming the exception, rather than a traceback
        return fail(f"{PROG}: internal error ({exc.__class__.__name__}: {exc}); please report it")
    return 0


def fail(message: str, status: int = 1) -> int:
    """Print ``message`` as one line on stderr; returns ``status``."""
    print(" ".join(message.split()), file=sys.stderr)
    return status
