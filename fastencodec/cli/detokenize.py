"""``fastencodec detokenize``: Parquet token shards back to audio files (the work: :mod:`fastencodec.corpus`)."""

from __future__ import annotations

import argparse
import sys

from fastencodec.cli.common import CliError, corpus_api, device_value, load_codec, positive_int
from fastencodec.corpus.manifest import read_manifest


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "detokenize",
        help="Parquet token shards -> audio files",
        description="Decode every row of a token corpus (the output of `tokenize`) to AUDIO_DIR/<path>.wav "
        "(32-bit float at the model's rate; segments: <path>@<offset>s.wav).",
    )
    parser.add_argument("input", metavar="DIR", help="token corpus folder")
    parser.add_argument("--out", required=True, metavar="AUDIO_DIR", help="output folder")
    parser.add_argument(
        "--model", help="model name, repo id or checkpoint (default: the published model the manifest names)"
    )
    parser.add_argument("--device", type=device_value, default="cpu", help="cpu (default), cuda, ...")
    parser.add_argument("--batch", type=positive_int, default=16, metavar="ROWS", help="rows decoded together (16)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run, each=False)


def run(args: argparse.Namespace) -> None:
    api = corpus_api()
    try:
        manifest = read_manifest(args.input)
    except (OSError, ValueError) as exc:
        raise CliError(str(exc)) from None
    named = manifest.get("model")
    if args.model is None and not isinstance(named, str):
        raise CliError(f"{args.input}: the manifest names no model; pass --model")
    # a name read from the manifest may only mean a published model, never local weights
    codec = load_codec(args.model or named, args.device, local=args.model is not None)
    try:
        written = api.detokenize(args.input, args.out, codec, batch_rows=args.batch, progress=not args.quiet)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if not args.quiet:
        print(f"{written} files written to {args.out}", file=sys.stderr)
