"""``fastencodec tokenize``: an audio corpus to Parquet token shards (the work: :mod:`fastencodec.corpus`)."""

from __future__ import annotations

import argparse
import sys

import torch

from fastencodec.cli.common import (
    CliError,
    UsageError,
    corpus_api,
    device_value,
    load_codec,
    positive_float,
    positive_int,
)
from fastencodec.corpus import ranks
from fastencodec.corpus.manifest import ERRORS, CorpusMismatchError
from fastencodec.corpus.sources import CorpusInputError
from fastencodec.corpus.workers import DECODE_TIMEOUT
from fastencodec.engine.policy import PRECISIONS


class ItemsFailed(CliError):
    """Some items could not be read; every other item is in the shards. Exit status 1."""


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "tokenize",
        help="audio corpus -> Parquet token shards",
        description="Tokenize a corpus into DIR/shard-NNNNN.parquet (one row per item: path, codes "
        "[codebooks][frames] int16, frames, samples, duration, scales, and offset for manifest segments) and "
        "DIR/manifest.json. Each row's codes equal EnCodec.encode of the item alone, decoded and resampled as "
        "`compress` does. A rerun into DIR resumes: complete shards are kept. Under torchrun or srun, each "
        "process codes the shards of its rank (RANK/WORLD_SIZE/LOCAL_RANK or SLURM_PROCID/SLURM_NTASKS/"
        "SLURM_LOCALID) with no communication. Unreadable files go to DIR/errors.jsonl. Exit status: 0 all "
        "items coded, 1 some items failed (the rest are coded) or the run failed, 2 bad usage.",
    )
    parser.add_argument(
        "inputs",
        metavar="INPUT",
        nargs="+",
        help="folder (recursive), text list of paths (.txt/.lst/.list), JSONL manifest (.jsonl: path, optional "
        "offset/duration in seconds) or audio file",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--model", default="encodec-24khz", help="model name, repo id or checkpoint (encodec-24khz)")
    parser.add_argument("-b", "--bandwidth", type=float, metavar="KBPS", help="bandwidth (default: the model's)")
    parser.add_argument(
        "--device", type=device_value, help="cpu, cuda (the local rank's GPU), cuda:1, ... (default: cuda if available)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="audio decoding processes (0: decode in the main process; default: this node's cores shared among "
        "its ranks, less one)",
    )
    parser.add_argument("--shard-size", type=positive_int, default=1000, metavar="ITEMS", help="items per shard (1000)")
    parser.add_argument(
        "--precision",
        choices=sorted(PRECISIONS),
        default="exact",
        help="the networks' numerical mode (exact: codes equal to Meta's reference); recorded in the manifest",
    )
    parser.add_argument(
        "--decode-timeout",
        type=positive_float,
        default=DECODE_TIMEOUT,
        metavar="SECONDS",
        help=f"stop a decoding process that holds an item this long without audio ({DECODE_TIMEOUT:g}); the item "
        "is tried once more, then listed in errors.jsonl",
    )
    parser.add_argument("--rank", type=int, help="this process's rank (default: from the launcher's variables)")
    parser.add_argument("--world-size", type=positive_int, help="number of processes (default: from the launcher)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    parser.set_defaults(run=run, each=False)


def run(args: argparse.Namespace) -> None:
    api = corpus_api()
    try:
        rank = ranks.from_environment()
        if args.rank is not None or args.world_size is not None:
            rank = ranks.Rank(
                rank.rank if args.rank is None else args.rank,
                rank.world_size if args.world_size is None else args.world_size,
                rank.local_rank,
            )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.workers is not None and args.workers < 0:
        raise UsageError(f"--workers must be >= 0, got {args.workers}")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    codec = load_codec(args.model, ranks.device_for(device, rank), precision=args.precision)
    try:
        summary = api.tokenize_corpus(
            args.inputs,
            args.out,
            codec,
            args.bandwidth,
            workers=args.workers,
            shard_size=args.shard_size,
            rank=rank,
            progress=not args.quiet and rank.rank == 0,
            decode_timeout=args.decode_timeout,
        )
    except (CorpusInputError, CorpusMismatchError) as exc:
        raise CliError(str(exc)) from None
    except ValueError as exc:  # a bandwidth the model cannot take
        raise UsageError(str(exc)) from None
    where = f"rank {rank.rank} of {rank.world_size}: " if rank.world_size > 1 else ""
    if not args.quiet:
        print(
            f"{where}{summary.written} shards written, {summary.skipped} already complete; {summary.coded} items "
            f"({summary.hours:.3f} h of audio) coded in {summary.seconds:.1f} s ({summary.rate:,.0f} h/h); "
            f"{summary.failed} failed",
            file=sys.stderr,
        )
    if summary.failed:
        raise ItemsFailed(f"{where}{summary.failed} items could not be read: see {args.out}/{ERRORS}")
