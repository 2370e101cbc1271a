"""fastencodec and Meta's ``encodec`` side by side on a CPU, idle and with competing CPU load.

Each measurement runs in a fresh subprocess that builds one implementation (random weights),
warms it up, then encodes and decodes the same speech-like signal and reports wall time and CPU
time (``time.process_time``: all threads of the process). fastencodec runs twice: at torch's
default thread count (as Meta's) and at ``default_threads()`` (what the CLI picks). The
competing load is ``--busy`` spinning processes (default: one per usable core), each stopped
after ``--busy-seconds`` at the latest. Prints wall and CPU seconds and Meta/ours ratios.

Usage: python benchmarks/cpu_contention.py [--model 24khz|48khz] [--seconds 10] [--busy N]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def spin(deadline: float) -> None:
    """Burn one core until ``deadline`` (``time.time()`` seconds)."""
    x = 0
    while time.time() < deadline:
        x += 1


def measure(impl: str, model: str, seconds: float, bandwidth: float, threads: str | None) -> None:
    """Child process: time one implementation's encode and decode; prints one JSON line."""
    import tempfile

    import torch

    sys.path.insert(0, str(ROOT))
    from fastencodec import EnCodec
    from tests import support

    support.install_torchaudio_standin()
    if threads is not None:
        from fastencodec.engine.policy import default_threads

        torch.set_num_threads(default_threads() if threads == "auto" else int(threads))  # this child is ours
    rate, channels = (24_000, 1) if model == "24khz" else (48_000, 2)
    from encodec.model import EncodecModel

    torch.manual_seed(0)  # random weights: speed does not depend on their values
    meta = getattr(EncodecModel, f"encodec_model_{model}")(pretrained=False).eval()
    codec = None
    if impl == "fastencodec":
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"encodec_{model}-{'d7cc33bc' if model == '24khz' else '7e698e3e'}.th"
            torch.save(meta.state_dict(), path)
            codec = EnCodec.from_pretrained(path)
    audio = support.speech_like(rate, channels, seconds, seed=5)[None]
    meta.set_target_bandwidth(bandwidth)

    def encode():
        if codec is not None:
            return codec.encode(audio, bandwidth=bandwidth)
        with torch.no_grad():
            return meta.encode(audio)

    def decode(tokens):
        if codec is not None:
            return codec.decode(tokens)
        with torch.no_grad():
            return meta.decode(tokens)

    warm = support.speech_like(rate, channels, 1.0, seed=6)[None]
    if codec is not None:
        codec.decode(codec.encode(warm, bandwidth=bandwidth))
    else:
        with torch.no_grad():
            meta.decode(meta.encode(warm))
    out = {}
    wall, cpu = time.perf_counter(), time.process_time()
    tokens = encode()
    out["encode"] = (time.perf_counter() - wall, time.process_time() - cpu)
    wall, cpu = time.perf_counter(), time.process_time()
    decode(tokens)
    out["decode"] = (time.perf_counter() - wall, time.process_time() - cpu)
    out["threads"] = torch.get_num_threads()
    print(json.dumps(out))


def run_child(impl: str, args: argparse.Namespace, threads: str | None) -> dict:
    cmd = [sys.executable, __file__, "--child", impl, "--model", args.model, "--seconds", str(args.seconds),
           "--bandwidth", str(args.bandwidth)]
    if threads is not None:
        cmd += ["--threads", threads]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=args.busy_seconds)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["24khz", "48khz"], default="24khz")
    parser.add_argument("--seconds", type=float, default=10.0, help="signal length (s)")
    parser.add_argument("--bandwidth", type=float, default=6.0, help="kbps")
    parser.add_argument("--threads", help=argparse.SUPPRESS)
    parser.add_argument("--busy", type=int, default=len(os.sched_getaffinity(0)), help="competing processes")
    parser.add_argument("--busy-seconds", type=float, default=300.0, help="longest a competing load runs")
    parser.add_argument("--child", choices=["fastencodec", "meta"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        measure(args.child, args.model, args.seconds, args.bandwidth, args.threads)
        return
    print(f"{args.model}, {args.seconds:g} s, {args.bandwidth:g} kbps, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}; seconds wall / CPU (process_time, all threads)")
    for load in ("no extra", f"+{args.busy} busy"):
        spinners = []
        if load != "no extra":
            deadline = time.time() + args.busy_seconds
            spinners = [multiprocessing.Process(target=spin, args=(deadline,), daemon=True) for _ in range(args.busy)]
            for p in spinners:
                p.start()
        try:
            results = {
                "fastencodec": run_child("fastencodec", args, None),
                "fastencodec auto": run_child("fastencodec", args, "auto"),
                "meta": run_child("meta", args, None),
            }
        finally:
            for p in spinners:
                p.terminate()
                p.join()
        for step in ("encode", "decode"):
            meta = results["meta"][step]
            for name in ("fastencodec", "fastencodec auto"):
                ours = results[name][step]
                print(f"{load:>8} {step}: {name} ({results[name]['threads']} threads) {ours[0]:.2f} / {ours[1]:.2f}, "
                      f"meta ({results['meta']['threads']} threads) {meta[0]:.2f} / {meta[1]:.2f}; "
                      f"meta/ours wall {meta[0] / ours[0]:.2f}x, CPU {meta[1] / ours[1]:.2f}x")


if __name__ == "__main__":
    main()
