"""Mixed-length batches on one CUDA GPU: ragged length buckets against equal-length grouping.

``python benchmarks/ragged.py [--items 64] [--shortest 3] [--longest 15] [--repeat 2] [--out DIR]``

A corpus-like list of items of random lengths (seeded, uniform in seconds) goes through
``EnCodec.encode`` (6 kbps) and ``EnCodec.decode`` in one call each, under
``RuntimePolicy(buckets_per_octave=B)``: ``B = 0`` batches only items of equal length (the rule
before ragged batches; random lengths then run one at a time), ``B > 0`` batches items of one
length bucket together. Each setting first codes a different item list of the same length
distribution (Triton compilation, first-seen shapes; printed as "first call"), then is timed
``--repeat`` times (wall clock after CUDA synchronisation; the median is printed; items/s and the
real-time factor count encode + decode). Prints items/s, the real-time factor and the
ratio to ``B = 0``, checks that every setting gives the same codes and audio, and writes
``ragged.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fastencodec import EnCodec, RuntimePolicy  # noqa: E402
from tests import support  # noqa: E402


def corpus(rate: int, count: int, shortest: float, longest: float, seed: int) -> list[np.ndarray]:
    """``count`` mono items, lengths uniform in ``[shortest, longest]`` seconds (odd sample counts included)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(int(shortest * rate), int(longest * rate) + 1, count)
    return [support.speech_like(rate, 1, n / rate + 0.01, seed + i)[:, :n].numpy() for i, n in enumerate(lengths)]


def timed(fn, repeat: int) -> tuple[float, object]:
    """Median wall seconds of ``fn()`` over ``repeat`` runs (CUDA synchronised) and its last result."""
    times, out = [], None
    for _ in range(repeat):
        torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--shortest", type=float, default=3.0)
    parser.add_argument("--longest", type=float, default=15.0)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--buckets", type=int, nargs="+", default=[0, 4, 8, 16])
    parser.add_argument("--precisions", nargs="+", default=["exact"])
    parser.add_argument("--out", type=Path, default=Path("."))
    args = parser.parse_args()
    model = support.fast_model(24_000).cuda()
    rate = model.config.sample_rate
    warm = corpus(rate, args.items, args.shortest, args.longest, seed=1000)
    items = corpus(rate, args.items, args.shortest, args.longest, seed=0)
    seconds = sum(x.shape[-1] for x in items) / rate
    rows, reference = [], {}
    print(f"{torch.cuda.get_device_name()}, {args.items} items of {args.shortest}-{args.longest} s ({seconds:.0f} s)")
    print("| precision | buckets/octave | first call s | encode s | decode s | items/s | real-time factor | vs 0 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for precision in args.precisions:
        base = None
        for per_octave in args.buckets:
            codec = EnCodec(model, policy=RuntimePolicy(precision=precision, buckets_per_octave=per_octave))
            first_s, _ = timed(lambda: codec.decode(codec.encode(warm, bandwidth=6.0)), 1)  # noqa: B023
            enc_s, tokens = timed(functools.partial(codec.encode, items, bandwidth=6.0), args.repeat)
            dec_s, audio = timed(functools.partial(codec.decode, tokens), args.repeat)
            same = True
            if precision in reference:
                ref_codes, ref_audio = reference[precision]
                same = np.array_equal(tokens.codes, ref_codes) and all(map(np.array_equal, audio, ref_audio))
            else:
                reference[precision] = (tokens.codes, audio)
            total = enc_s + dec_s
            base = base or total
            row = {
                "precision": precision, "buckets_per_octave": per_octave, "first_s": first_s, "encode_s": enc_s,
                "decode_s": dec_s,
                "items_per_s": args.items / total, "rtf": seconds / total, "speedup": base / total, "same": same,
            }  # fmt: skip
            rows.append(row)
            print(
                f"| {precision} | {per_octave} | {first_s:.2f} | {enc_s:.3f} | {dec_s:.3f} | "
                f"{row['items_per_s']:.1f} | {row['rtf']:.0f}x | {row['speedup']:.2f}x |"
                + ("" if same else " DIFFERENT OUTPUT"),
                flush=True,
            )
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"date": datetime.datetime.now(datetime.UTC).isoformat(), "device": torch.cuda.get_device_name()}
    meta |= {"items": args.items, "seconds": seconds, "shortest": args.shortest, "longest": args.longest}
    (args.out / "ragged.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    if not all(row["same"] for row in rows):
        raise SystemExit("a bucket setting changed codes or audio")


if __name__ == "__main__":
    main()
