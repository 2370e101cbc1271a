"""Corpus tokenizer throughput: the whole pipeline against its two parts, in hours of audio per hour.

Generates (once, into ``--corpus``) real compressed audio: espeak-ng speech (when installed:
``apt-get install -y espeak-ng``) and NumPy music-like signals (notes with harmonics and
envelopes, noise drums), encoded to mp3, ogg (Vorbis) and flac at 16-48 kHz, mono and stereo.
Then times, on the same items:

- decode: the decoding workers alone (read, resample, mix), ``--workers`` processes;
- engine: the codec alone on the same audio already in memory, batched as the pipeline batches it;
- pipeline: ``tokenize_corpus`` end to end (workers feeding the codec, Parquet shards written).

and prints each rate and pipeline / min(decode, engine) (the issue's target: >= 80%).
Random weights in Meta's 24 kHz architecture by default (speed does not depend on the weights)::

    python benchmarks/corpus.py --quick                      # CPU smoke run, about a minute
    python benchmarks/corpus.py --device cuda --workers 15   # H200: 16 cores, one for the GPU feeder
"""

from __future__ import annotations

import argparse
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from fastencodec import EnCodec
from fastencodec.bench import random_codec
from fastencodec.corpus import tokenize_corpus
from fastencodec.corpus.batching import LengthPool, LongItem, piece_samples_for
from fastencodec.corpus.sources import collect_items
from fastencodec.corpus.workers import Failed, Whole, decoded

FORMATS = (("mp3", "MP3", "MPEG_LAYER_III"), ("ogg", "OGG", "VORBIS"), ("flac", "FLAC", "PCM_16"))
RATES = (16000, 22050, 44100, 48000)
SENTENCES = (
    "The quick brown fox jumps over the lazy dog near the quiet river bank.",
    "Tokenizing a large speech corpus should keep every processor busy all the time.",
    "She sells sea shells by the sea shore, and the shells she sells are surely sea shells.",
    "A neural audio codec turns sound into a short sequence of discrete tokens.",
)


def speech(rate: int, seconds: float, seed: int) -> np.ndarray | None:
    """espeak-ng sentences, concatenated to ``seconds``, resampled to ``rate`` (None without espeak-ng)."""
    if shutil.which("espeak-ng") is None:
        return None
    from fastencodec.io.resample import resample

    pieces, total = [], 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(64):
            if total >= seconds:
                break
            path = Path(tmp) / f"{k}.wav"
            voice = ("en", "en-us", "en+f3", "en+m3")[(seed + k) % 4]
            text = SENTENCES[(seed + k) % len(SENTENCES)]
            subprocess.run(["espeak-ng", "-v", voice, "-s", str(140 + 10 * (k % 5)), "-w", str(path), text],
                           check=True, capture_output=True)
            audio, source_rate = sf.read(path, dtype="float32")
            pieces.append(resample(audio, source_rate, rate))
            total += len(pieces[-1]) / rate
    audio = np.concatenate(pieces)[: int(seconds * rate)]
    return audio[:, None]


def music(rate: int, channels: int, seconds: float, seed: int) -> np.ndarray:
    """Notes with harmonics, decaying envelopes and a little stereo spread, plus noise drums."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    out = np.zeros((n, channels), np.float32)
    t = np.arange(n) / rate
    beat = 60 / rng.uniform(80, 140)
    for start in np.arange(0, seconds, beat / 2):
        i = int(start * rate)
        length = min(n - i, int(beat * rate))
        note = 220 * 2 ** (rng.integers(-12, 12) / 12)
        tt = t[:length]
        tone = sum(np.sin(2 * np.pi * note * k * tt) / k**1.5 for k in range(1, 7)) * np.exp(-3 * tt / beat)
        pan = rng.uniform(0.3, 1.0, channels)
        out[i : i + length] += 0.15 * tone[:, None] * pan
        hit = min(length, int(0.05 * rate))
        out[i : i + hit] += 0.1 * rng.standard_normal((hit, channels)) * np.linspace(1, 0, hit)[:, None]
    return out


def make_corpus(folder: Path, files: int, shortest: float, longest: float) -> None:
    """``files`` files of ``shortest``..``longest`` seconds, speech and music, mp3/ogg/flac."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(files):
        rate = int(RATES[i % len(RATES)])
        seconds = float(rng.uniform(shortest, longest))
        audio = speech(rate, seconds, i) if i % 2 == 0 else None
        if audio is None:
            audio = music(rate, 1 + i % 2, seconds, i)
        suffix, file_format, subtype = FORMATS[i % len(FORMATS)]
        sf.write(folder / f"{i:05d}.{suffix}", np.clip(audio, -1, 1), rate, format=file_format, subtype=subtype)


def decode_rate(items, codec: EnCodec, workers: int) -> tuple[float, list]:
    """Seconds to decode everything with the workers, and the decoded messages (kept in memory)."""
    start = time.perf_counter()
    messages = [m for m in decoded(list(enumerate(items)), codec.sample_rate, codec.channels,
                                   piece_samples_for(codec), workers) if not isinstance(m, Failed)]
    return time.perf_counter() - start, messages


def engine_seconds(messages: list, codec: EnCodec, bandwidth: float) -> float:
    """Seconds the codec takes on the decoded audio, batched as the pipeline batches it."""
    sync = torch.cuda.synchronize if codec.device.type == "cuda" else (lambda: None)
    pool, streams = LengthPool(codec, bandwidth), {}
    sync()
    start = time.perf_counter()
    for message in messages:
        if isinstance(message, Whole):
            pool.add(message.index, message.audio)
        else:
            stream = streams.setdefault(message.index, LongItem(codec, bandwidth, message.index))
            stream.push(message.audio)
            if message.last:
                streams.pop(message.index).finish()
    pool.flush()
    sync()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=Path(tempfile.gettempdir()) / "fastencodec-bench-corpus")
    parser.add_argument("--files", type=int, help="files to generate (default 400; --quick: 16)")
    parser.add_argument("--quick", action="store_true", help="a small corpus of short files (CPU smoke run)")
    parser.add_argument("--model", help="model name or checkpoint (default: random 24 kHz weights)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--workers", type=int, default=max(1, (torch.multiprocessing.cpu_count() or 2) - 1))
    parser.add_argument("-b", "--bandwidth", type=float, default=6.0)
    args = parser.parse_args()
    files = args.files or (16 if args.quick else 400)
    shortest, longest = (2.0, 6.0) if args.quick else (4.0, 30.0)
    if not any(args.corpus.glob("*.*")):
        print(f"generating {files} files into {args.corpus} ...", flush=True)
        make_corpus(args.corpus, files, shortest, longest)
    codec = EnCodec.from_pretrained(args.model, device=args.device) if args.model else random_codec(args.device)
    items = collect_items([args.corpus])
    decode_s, messages = decode_rate(items, codec, args.workers)
    hours = sum(m.audio.shape[1] for m in messages) / codec.sample_rate / 3600
    engine_seconds(messages[:2], codec, args.bandwidth)  # warm-up (cuDNN, allocator)
    engine_s = engine_seconds(messages, codec, args.bandwidth)
    del messages
    with tempfile.TemporaryDirectory() as out:
        summary = tokenize_corpus(args.corpus, out, codec, args.bandwidth, workers=args.workers)
    rates = {"decode": hours * 3600 / decode_s, "engine": hours * 3600 / engine_s, "pipeline": summary.rate}
    device = torch.cuda.get_device_name(codec.device) if codec.device.type == "cuda" else platform.processor() or "cpu"
    print(f"{len(items)} files, {hours:.3f} h of audio; {codec.name} at {args.bandwidth} kbps on {device}, "
          f"{args.workers} decoding workers, torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name, rate in rates.items():
        print(f"  {name:9s} {rate:12,.1f} h of audio per hour ({hours * 3600 / rate:.1f} s)")
    ratio = rates["pipeline"] / min(rates["decode"], rates["engine"])
    limit = "decoding" if rates["decode"] < rates["engine"] else "the codec"
    print(f"  pipeline / min(decode, engine) = {ratio:.2f} (target >= 0.80); the smaller part is {limit}")


if __name__ == "__main__":
    main()
