"""The ``fastencodec`` command line: compress audio files to ``.ecdc``, decompress and inspect them.

Commands (``fastencodec COMMAND --help`` for every option)::

    fastencodec compress INPUT... [-b KBPS] [--model M] [--device DEVICE] [--precision P] [--threads N] [-f] [-q]
    fastencodec compress INPUT OUTPUT.ecdc ...
    fastencodec compress --stream [--pcm-format s16le|s32le|f32le] [--pcm-rate HZ] [--pcm-channels N] - OUTPUT.ecdc
    fastencodec decompress INPUT.ecdc... [--rate [HZ]] [--subtype SUBTYPE] [-r] [--model ...] [--force-model] [-f] [-q]
    fastencodec info FILE.ecdc [--json] [--model NAME|PATH]
    fastencodec bench [--model NAME|PATH] [--device DEVICE] [--seconds S] [--batch N] [-b KBPS] [--dtype D]
    fastencodec tokenize INPUT... --out DIR [--model ...] [-b KBPS] [--device DEVICE] [--workers N] [--shard-size N]
    fastencodec detokenize DIR --out AUDIO_DIR [--model ...] [--device DEVICE] [--batch ROWS]
    fastencodec generate PROMPT [-d SECONDS] [-o OUT.wav] [--model NAME|DIR] [--seed N] [--guidance G] ...

``-`` is standard input or output. Exit status: 0 success, 1 failure (one line on stderr per file,
naming it and the problem; with several files the others are still done), 2 bad usage, 130
interrupted (Ctrl-C). The work is done by :mod:`fastencodec.formats.files` (tokenize/detokenize:
:mod:`fastencodec.corpus`, generate: :mod:`fastencodec.musicgen`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

import torch

from fastencodec import __version__
from fastencodec.cli import bench, compress, decompress, detokenize, generate, info, tokenize
from fastencodec.cli.common import PROG, CliError, ModelLoadError, UsageError, check_distinct_outputs, display_name
from fastencodec.formats.ecdc import EcdcError
from fastencodec.io.errors import AudioFileError


def build_parser() -> argparse.ArgumentParser:
    """The ``fastencodec`` argument parser; each subcommand stores its function as ``run``."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="EnCodec neural audio codec: compress audio to .ecdc files (compatible with Meta's encodec) "
        "and back. Exit status: 0 ok, 1 failed, 2 bad usage.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in (compress, decompress, info, bench, tokenize, detokenize, generate):
        command.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or bad usage (argparse has printed why)
        return exc.code if isinstance(exc.code, int) else 2
    if not args.each:
        return guarded(args, args.input if args.command == "info" else None, lambda: args.run(args))
    jobs: list[tuple[str, str]] = []
    status = guarded(args, None, lambda: jobs.extend(check_distinct_outputs(args.jobs(args))))
    if status:
        return status
    models: dict = {}
    status = 0
    for source, output in jobs:
        done = guarded(args, source, lambda s=source, o=output: args.run(args, s, o, models))
        status = max(status, done)
        if done in (2, 130) or (isinstance(args.error, ModelLoadError) and args.model):
            break  # bad usage, Ctrl-C, or the one model every file needs cannot be loaded
    return status


def guarded(args: argparse.Namespace, source: str | None, work: Callable[[], object]) -> int:
    """Run ``work``; map its failure to one line on stderr and an exit status.

    Args:
        args: the parsed command line; ``args.error`` is set to the failure (or None).
        source: the input the work is about (messages name it), or None.
        work: the work.

    Returns:
        0 on success, 1 for a failure, 2 for bad usage, 130 on Ctrl-C.
    """
    args.error = None
    try:
        work()
    except Exception as exc:
        args.error = exc
        return _status(args, source, exc)
    except KeyboardInterrupt:
        return fail(f"{PROG}: interrupted", 130)
    return 0


def _status(args: argparse.Namespace, source: str | None, exc: Exception) -> int:
    """The message and exit status of a failure (an unexpected one is reported as an internal error)."""
    if isinstance(exc, UsageError):
        return fail(f"{PROG} {args.command}: error: {exc}", 2)
    if isinstance(exc, (CliError, AudioFileError)) and not isinstance(exc, EcdcError):
        return fail(f"{PROG}: {exc}")
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return fail(f"{PROG}: out of GPU memory ({str(exc).splitlines()[0]})")
    if isinstance(exc, ValueError):  # EcdcError, or e.g. a model that does not fit the file
        return fail(f"{PROG}: {display_name(source or '-')}: {exc}")
    if isinstance(exc, OSError):
        return fail(f"{PROG}: {exc}")
    if isinstance(exc, MemoryError):
        return fail(f"{PROG}: {display_name(source or '-')}: out of memory")
    # a bug: still one line, naming the exception, rather than a traceback
    return fail(f"{PROG}: internal error ({exc.__class__.__name__}: {exc}); please report it")


def fail(message: str, status: int = 1) -> int:
    """Print ``message`` as one line on stderr.

    Args:
        message: the text (its whitespace runs, newlines included, become single spaces).
        status: the exit status to return.

    Returns:
        ``status``.
    """
    print(" ".join(message.split()), file=sys.stderr)
    return status
