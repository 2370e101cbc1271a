"""``fastencodec compress``: audio files (or raw PCM) to ``.ecdc``."""

from __future__ import annotations

import argparse
from pathlib import Path

from fastencodec.cli.common import (
    BANDWIDTHS_HELP,
    UsageError,
    add_run_options,
    check_bandwidth,
    check_output,
    checked,
    display_name,
    expand_inputs,
    load_codec,
    open_binary,
    progress_bar,
    split_output,
)
from fastencodec.codec import EnCodec
from fastencodec.formats.coders import CODERS, CoderCache, SymbolCoder
from fastencodec.formats.files import check_rate, compress_source
from fastencodec.io.atomic import STDIO, AtomicOutput
from fastencodec.io.audio import AudioReader
from fastencodec.io.conform import AudioSource
from fastencodec.io.pcm import PCM_FORMATS, PcmSource, check_channels

SUFFIX = ".ecdc"
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".m4a", ".mp4", ".aac", ".aiff", ".aif", ".au", ".caf")
"""What ``compress`` picks up in a folder."""


def add_parser(commands: argparse._SubParsersAction) -> None:
    compress = commands.add_parser(
        "compress",
        help="audio files -> .ecdc",
        description="Compress audio (wav, flac, ogg, opus, mp3, m4a/aac, aiff, or anything FFmpeg decodes) to "
        ".ecdc files. Any sample rate and channel count is accepted: it is resampled (soxr) to the model's "
        "rate and mixed to its channels (more or fewer channels than the model has go through their mean). "
        "Like gzip, several files and folders may be given: each FILE becomes FILE.ecdc beside it.",
    )
    compress.add_argument(
        "paths", nargs="+", metavar="INPUT", help="audio files or folders (- for stdin); or INPUT OUTPUT.ecdc (or -)"
    )
    compress.add_argument(
        "-b",
        "--bandwidth",
        type=float,
        metavar="KBPS",
        help=f"target bandwidth ({BANDWIDTHS_HELP}; default: 6, or the model's only one)",
    )
    compress.add_argument(
        "--model", default="encodec-24khz", help="encodec-24khz (default), encodec-48khz, a repo id or a checkpoint"
    )
    entropy = compress.add_argument_group("entropy coding")
    entropy.add_argument(
        "--entropy",
        choices=tuple(CODERS),
        help="bits: plain packing (default); lm: Meta's LM coding, its LM on the CPU (Meta's tool reads it; "
        "decode on the same kind of machine); lmp1: portable LM coding (decodes anywhere; fastencodec "
        "only)",
    )
    entropy.add_argument(
        "--lm", action="store_true", help="same as --entropy lm (Meta's -l); not beside another --entropy"
    )
    entropy.add_argument("--lm-weights", metavar="PATH", help="LM checkpoint (default: torch hub's cache)")
    stream = compress.add_argument_group("raw PCM streams")
    stream.add_argument(
        "--stream",
        action="store_true",
        help="read INPUT (usually -) as headerless interleaved PCM, coding it as it arrives",
    )
    stream.add_argument("--pcm-format", choices=sorted(PCM_FORMATS), default="s16le", help="sample format (s16le)")
    stream.add_argument("--pcm-rate", type=checked(check_rate), metavar="HZ", help="sample rate (default: the model's)")
    stream.add_argument(
        "--pcm-channels", type=checked(check_channels), metavar="N", help="channels (default: the model's)"
    )
    add_run_options(compress)
    compress.set_defaults(run=run, jobs=jobs, each=True, coders=CoderCache())


def entropy_mode(args: argparse.Namespace) -> str:
    """The coder tag ``--entropy`` and ``--lm`` name (``--lm`` is ``--entropy lm``; another mode beside it
    is a usage error)."""
    if args.lm and args.entropy not in (None, "lm"):
        raise UsageError(f"--lm means --entropy lm; it contradicts --entropy {args.entropy} (give one of them)")
    return "lm" if args.lm else args.entropy or "bits"


def jobs(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(input, output) pairs the arguments name."""
    entropy_mode(args)
    inputs, output = split_output(args.paths, lambda p: p == STDIO or p.lower().endswith(SUFFIX))
    if output is None and len(args.paths) == 2 and Path(args.paths[1]).suffix and not Path(args.paths[1]).exists():
        raise UsageError(f"{args.paths[1]}: OUTPUT must end in {SUFFIX} (or be - for stdout)")
    if output is not None:
        return [(inputs[0], output)]
    return [
        (p, STDIO if p == STDIO else str(Path(p).with_suffix(SUFFIX))) for p in expand_inputs(inputs, AUDIO_SUFFIXES)
    ]


def run(args: argparse.Namespace, source: str, output: str, models: dict[str, EnCodec]) -> None:
    """Compress ``source`` to ``output``; ``models`` keeps the model loaded for earlier files."""
    check_output(output, source, args.force)

    def codec() -> EnCodec:
        if args.model not in models:
            models[args.model] = load_codec(args.model, args.device, args.threads, args.precision)
        return models[args.model]

    if args.stream:
        model = codec()
        bandwidth = check_bandwidth(model, args.bandwidth)
        with open_binary(source) as stream:
            pcm = PcmSource(
                stream,
                display_name(source),
                args.pcm_format,
                args.pcm_rate or model.sample_rate,
                args.pcm_channels or model.channels,
            )
            write(model, bandwidth, pcm, output, args.quiet, args.force, symbol_coder(args, model))
        return
    with AudioReader(source) as reader:
        model = codec()
        bandwidth = check_bandwidth(model, args.bandwidth)
        write(model, bandwidth, reader, output, args.quiet, args.force, symbol_coder(args, model))


def symbol_coder(args: argparse.Namespace, codec: EnCodec) -> SymbolCoder:
    """The coder ``--entropy`` (or ``--lm``) names, for ``codec``'s codes (built once per command)."""
    tag = entropy_mode(args)
    try:
        return args.coders.get(tag, codec.name, codec.config.bits_per_codebook, args.lm_weights)  # LM on the CPU
    except ValueError as exc:
        raise UsageError(f"--entropy {tag}: {exc}") from None


def write(
    codec: EnCodec,
    bandwidth: float,
    source: AudioSource,
    output: str,
    quiet: bool,
    force: bool,
    coder: SymbolCoder | None = None,
) -> None:
    """Compress ``source`` into the file ``output`` (or stdout), atomically, with a progress bar; an
    ``output`` that exists by the end (another run made it) is replaced only with ``force``."""
    output_file = AtomicOutput(output, overwrite=force)
    with progress_bar(source.frames, source.sample_rate, quiet, "compress") as bar, output_file as out:
        compress_source(codec, source, out.file, bandwidth, bar.update, coder)
