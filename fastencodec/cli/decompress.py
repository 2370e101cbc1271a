"""``fastencodec decompress``: ``.ecdc`` files to WAV or FLAC."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from fastencodec.cli import common
from fastencodec.codec import EnCodec
from fastencodec.formats.coders import CoderCache
from fastencodec.formats.ecdc import EcdcHeader, EcdcReader
from fastencodec.formats.files import ClippingWarning, check_rate, decompress_stream, published_name
from fastencodec.io.atomic import STDIO

SUFFIX = "_decompressed.wav"
"""Default output: ``song.ecdc`` -> ``song_decompressed.wav`` (as Meta's tool)."""
SUBTYPES = ("PCM_16", "PCM_24", "PCM_32", "FLOAT")


def add_parser(commands: argparse._SubParsersAction) -> None:
    decompress = commands.add_parser(
        "decompress",
        help=".ecdc -> wav/flac",
        description="Decompress .ecdc files (ours, or Meta's encodec, with or without --lm) to WAV or FLAC. "
        f"Several files and folders may be given: each FILE.ecdc becomes FILE{SUFFIX}.",
    )
    decompress.add_argument(
        "paths", nargs="+", metavar="INPUT", help=".ecdc files or folders (- for stdin); or INPUT OUTPUT.wav|.flac|-"
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
    decompress.add_argument(
        "-r",
        "--rescale",
        action="store_true",
        help="scale the audio down to a peak of 0.99 if it would clip (as Meta's -r)",
    )
    decompress.add_argument("--model", help="model (default: the published model the file names)")
    decompress.add_argument(
        "--lm-weights", metavar="PATH", help="LM checkpoint of LM-coded files (default: torch hub's cache)"
    )
    decompress.add_argument(
        "--force-model",
        action="store_true",
        help="decode with --model even if the file names another model or checkpoint",
    )
    common.add_run_options(decompress)
    decompress.set_defaults(run=run, jobs=jobs, each=True, coders=CoderCache())


def rate_value(text: str) -> str:
    """``--rate``'s value: a positive integer (Hz, see ``check_rate``) or ``original``."""
    return text if text == "original" else str(common.checked(check_rate)(text))


def is_output(path: str) -> bool:
    return path == STDIO or Path(path).suffix.lower() in (".wav", ".flac")


def jobs(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(input, output) pairs the arguments name."""
    inputs, output = common.split_output(args.paths, is_output)
    if output is None and len(args.paths) == 2 and Path(args.paths[1]).suffix.lower() not in ("", ".ecdc"):
        raise common.UsageError(f"{args.paths[1]}: OUTPUT must end in .wav or .flac (or be - for stdout)")
    if output is not None:
        return [(inputs[0], output)]
    found = common.expand_inputs(inputs, (".ecdc",))
    return [(p, STDIO if p == STDIO else str(Path(p).with_suffix("")) + SUFFIX) for p in found]


def run(args: argparse.Namespace, source: str, output: str, models: dict[str, EnCodec | Exception]) -> None:
    """Decompress ``source`` to ``output``; ``models`` keeps the models loaded (or failed) for earlier files."""
    common.check_output(output, source, args.force)
    bars: list = []

    def started(header: EcdcHeader, model: EnCodec, rate: int) -> None:
        bars.append(common.progress_bar(header.audio_length, model.sample_rate, args.quiet, "decompress"))
        bars.append(bars[0].__enter__())

    with common.open_binary(source) as stream, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reader = EcdcReader(stream, lm_weights=args.lm_weights, coders=args.coders)
        name = args.model or published_name(reader.header)
        if name not in models:  # a name from the file: only a published model, never a local folder
            try:
                models[name] = common.load_codec(
                    name, args.device, args.threads, args.precision, local=args.model is not None
                )
            except common.ModelLoadError as exc:
                models[name] = exc  # the other files that need it are skipped, not retried
                if args.model:
                    raise
                raise common.ModelLoadError(f"{common.display_name(source)}: {exc}") from None
        if isinstance(models[name], common.ModelLoadError):
            raise common.CliError(f"{common.display_name(source)}: skipped, its model failed to load ({models[name]})")
        try:
            decompress_stream(
                reader,
                output,
                model=models[name],
                device=args.device,
                rate=None if args.rate is None else args.rate if args.rate == "original" else int(args.rate),
                subtype=args.subtype,
                force_model=args.force_model,
                rescale=args.rescale,
                progress=lambda n: bars[1].update(n),
                on_model=started,
                overwrite=args.force,
            )
        except ValueError as exc:
            if "subtype" in str(exc):
                raise common.UsageError(str(exc)) from None
            raise
        finally:
            if bars:
                bars[0].__exit__(None, None, None)
    for warning in caught:
        if not args.quiet or issubclass(warning.category, ClippingWarning):
            print(f"{common.PROG}: {source}: {warning.message}", file=sys.stderr)
