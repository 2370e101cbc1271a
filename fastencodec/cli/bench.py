"""``fastencodec bench``: encode/decode speed of one model on this machine."""

from __future__ import annotations

import argparse

import torch

from fastencodec.bench import run_bench
from fastencodec.cli.common import DTYPES, UsageError, check_device, device_value, positive_float, positive_int


def add_parser(commands: argparse._SubParsersAction) -> None:
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
    bench.add_argument("--threads", type=positive_int, metavar="N", help="CPU threads (default: torch's)")
    bench.set_defaults(run=run, each=False)


def run(args: argparse.Namespace) -> None:
    if args.device is not None:
        check_device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)  # the command owns the process
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
