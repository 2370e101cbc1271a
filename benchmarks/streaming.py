"""Streaming real-time factor and latency of the causal 24 kHz model on CPU.

Pushes a speech-like signal through ``EnCodec.stream_encoder`` and ``stream_decoder`` in
chunks of ``--chunk`` samples (default: one frame, 320 samples) and prints:

- the real-time factor (compute time / audio duration) of encode, decode and both;
- compute time per push (mean, median, 99th percentile) against the chunk's duration;
- the algorithmic latency, measured: samples pushed after a frame's last sample before its
  token comes back, and frames pushed after a token before its audio comes back (steady state
  and at the stream's start).

Random weights by default (the compute is the same as with the published weights)::

    python benchmarks/streaming.py --threads 1 --seconds 20
    python benchmarks/streaming.py --model encodec-24khz --chunk 960
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from fastencodec import EnCodec
from fastencodec.nn.config import META_24KHZ
from fastencodec.nn.model import EncodecModel


def test_signal(sample_rate: int, seconds: float) -> np.ndarray:
    """Harmonic tone with vibrato plus noise, ``[1, samples]`` float32."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    phase = 2 * np.pi * np.cumsum(150 * (1 + 0.05 * np.sin(2 * np.pi * 4 * t))) / sample_rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 8))
    noise = np.random.default_rng(0).standard_normal(t.shape)
    return (0.15 * voice + 0.02 * noise).astype(np.float32)[None]


def measure_latency(codec: EnCodec, audio: np.ndarray) -> dict[str, int]:
    """Algorithmic latency, pushing one sample (encoder) or one frame (decoder) at a time."""
    hop = codec.hop_length
    enc = codec.stream_encoder()
    ready_at = []  # sample count pushed when each frame's token came back
    for i in range(12 * hop):
        ready_at += [i + 1] * enc.push(audio[:, i : i + 1]).shape[-1]
    last_sample = [(t + 1) * hop for t in range(len(ready_at))]
    dec = codec.stream_decoder()
    codes = np.zeros((1, codec.codebooks_for(None), 1), dtype=np.int64)
    audio_at = []  # frames pushed when each frame's audio was complete
    samples = 0
    for f in range(12):
        samples += dec.push(codes).shape[-1]
        audio_at += [f + 1] * (samples // hop - len(audio_at))
    return {
        "first_token_after_samples": ready_at[0],
        "steady_state_token_delay_samples": ready_at[-1] - last_sample[-1],
        "first_audio_after_frames": audio_at[0],
        "steady_state_audio_delay_frames": audio_at[-1] - len(audio_at),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="checkpoint name or path (default: random 24 kHz weights)")
    parser.add_argument("--seconds", type=float, default=20.0, help="stream length in seconds")
    parser.add_argument("--chunk", type=int, default=320, help="samples per push")
    parser.add_argument("--bandwidth", type=float, default=6.0, help="kbps")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    codec = EnCodec(EncodecModel(META_24KHZ)) if args.model is None else EnCodec.from_pretrained(args.model)
    rate, hop = codec.sample_rate, codec.hop_length
    audio = test_signal(rate, args.seconds)
    enc, dec = codec.stream_encoder(args.bandwidth), codec.stream_decoder()
    warm = audio[:, : 20 * hop]  # the start-up pushes and first calls are not steady state
    dec.push(enc.push(warm))
    enc_times, dec_times = [], []
    for start in range(warm.shape[-1], audio.shape[-1], args.chunk):
        t0 = time.perf_counter()
        codes = enc.push(audio[:, start : start + args.chunk])
        t1 = time.perf_counter()
        dec.push(codes)
        t2 = time.perf_counter()
        enc_times.append(t1 - t0)
        dec_times.append(t2 - t1)
    enc_ms, dec_ms = np.array(enc_times) * 1e3, np.array(dec_times) * 1e3
    both = enc_ms + dec_ms
    duration = (audio.shape[-1] - warm.shape[-1]) / rate
    chunk_ms = 1e3 * args.chunk / rate
    print(
        f"{codec.name}, {args.bandwidth} kbps, {args.threads} thread(s), pushes of {args.chunk} samples "
        f"({chunk_ms:.2f} ms), frame period {1e3 * hop / rate:.2f} ms"
    )
    print(
        f"real-time factor: encode {enc_ms.sum() / 1e3 / duration:.3f}, decode {dec_ms.sum() / 1e3 / duration:.3f}, "
        f"both {both.sum() / 1e3 / duration:.3f}"
    )
    for name, ms in (("encode", enc_ms), ("decode", dec_ms), ("both", both)):
        print(
            f"compute per push, {name:6s}: mean {ms.mean():.2f} ms, median {np.median(ms):.2f} ms, "
            f"p99 {np.percentile(ms, 99):.2f} ms (of {chunk_ms:.2f} ms of audio)"
        )
    latency = measure_latency(codec, audio)
    first = latency["first_token_after_samples"]
    print(
        f"encoder: a frame's token comes back {latency['steady_state_token_delay_samples']} samples after its last "
        f"sample (algorithmic latency = the frame, {hop} samples = {1e3 * hop / rate:.2f} ms); the first token "
        f"after {first} samples ({1e3 * first / rate:.1f} ms)"
    )
    print(
        f"decoder: a frame's audio comes back {latency['steady_state_audio_delay_frames']} frames after its token; "
        f"the first audio after {latency['first_audio_after_frames']} frames"
    )
    print(
        f"round trip: {hop} samples ({1e3 * hop / rate:.2f} ms) of buffering + {np.median(both):.2f} ms compute "
        f"(median, p99 {np.percentile(both, 99):.2f} ms)"
    )


if __name__ == "__main__":
    main()
