"""Corpus tokenizer throughput: the whole pipeline against its two parts, in hours of audio per hour.

Generates (into a temporary folder, in parallel) real compressed audio: NumPy speech-like voices
(a wobbling pitch through moving formants, syllable envelopes, breath noise) and music-like
signals (notes with harmonics and envelopes, noise drums) of varied lengths, written as mp3,
ogg (Vorbis) and flac at 16-48 kHz, mono and stereo. Then times, on the same items:

- decode: the decoding workers alone (read, resample, mix), ``--workers`` processes;
- engine: ``EnCodec.encode`` on the same audio already in memory, handed over as the pipeline
  hands it (look-ahead windows of ``window_samples``, sorted by length);
- pipeline: ``tokenize_corpus`` end to end (workers feeding the codec, Parquet shards written),

(the engine's stage runs twice, untimed first: kernels are tuned per input length, and the pipeline
after it finds them warm too), checks that the shards hold the engine's codes, and prints each rate and
pipeline / min(decode, engine) (issue 14's target: >= 0.80); ``--json`` writes it all to a file.
Random weights in Meta's 24 kHz architecture by default (speed does not depend on the weights)::

    python benchmarks/corpus.py --quick                              # CPU smoke run, a minute or two
    python benchmarks/corpus.py --device cuda --json corpus.json     # H200: 400 files, 15 workers
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing
import os
import platform
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

import fastencodec
from fastencodec import EnCodec
from fastencodec.bench import random_codec
from fastencodec.corpus import read_shards, tokenize_corpus
from fastencodec.corpus.batching import piece_samples_for, window_samples_for
from fastencodec.corpus.sources import collect_items
from fastencodec.corpus.workers import Piece, Whole, decoded
from fastencodec.engine.policy import RuntimePolicy

FORMATS = (("mp3", "MP3", "MPEG_LAYER_III"), ("ogg", "OGG", "VORBIS"), ("flac", "FLAC", "PCM_16"))
RATES = (16000, 22050, 44100, 48000)


def voice(rate: int, channels: int, seconds: float, seed: int) -> np.ndarray:
    """Speech-like audio ``[samples, channels]``: a glottal pulse train with a wandering pitch,
    shaped by two moving formants, cut into syllables and pauses, plus breath noise."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    pitch = rng.uniform(90, 220) * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.2, 0.6) * t))
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    first = 500 + 250 * np.sin(2 * np.pi * rng.uniform(2, 4) * t)  # formant centres, Hz
    second = 1500 + 600 * np.sin(2 * np.pi * rng.uniform(1, 3) * t + 1.0)
    out = np.zeros(n)
    for k in range(1, 30):
        frequency = k * pitch
        gain = np.exp(-(((frequency - first) / 150) ** 2)) + 0.6 * np.exp(-(((frequency - second) / 250) ** 2))
        out += gain * np.sin(k * phase) * (frequency < rate / 2)
    syllables = np.clip(np.sin(2 * np.pi * rng.uniform(3, 5) * t), 0, None) ** 0.5
    pauses = np.repeat(rng.random(int(seconds) + 1) > 0.2, rate)[:n]
    audio = 0.2 * out * syllables * pauses + 0.005 * rng.standard_normal(n)
    return np.repeat(audio[:, None], channels, axis=1) * np.linspace(1.0, 0.7, channels)


def music(rate: int, channels: int, seconds: float, seed: int) -> np.ndarray:
    """Notes with harmonics, decaying envelopes and a little stereo spread, plus noise drums."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    out = np.zeros((n, channels))
    t = np.arange(n) / rate
    beat = 60 / rng.uniform(80, 140)
    for start in np.arange(0, seconds, beat / 2):
        i = int(start * rate)
        length = min(n - i, int(beat * rate))
        note = 220 * 2 ** (rng.integers(-12, 12) / 12)
        tt = t[:length]
        tone = sum(np.sin(2 * np.pi * note * k * tt) / k**1.5 for k in range(1, 7)) * np.exp(-3 * tt / beat)
        out[i : i + length] += 0.15 * tone[:, None] * rng.uniform(0.3, 1.0, channels)
        hit = min(length, int(0.05 * rate))
        out[i : i + hit] += 0.1 * rng.standard_normal((hit, channels)) * np.linspace(1, 0, hit)[:, None]
    return out


def write_file(folder: Path, i: int, seconds: float) -> None:
    """File ``i``: speech or music, its rate, channels and format picked by ``i``."""
    rate, channels = RATES[i % len(RATES)], 1 + (i // 2) % 2
    audio = (voice if i % 2 == 0 else music)(rate, channels, seconds, i)
    suffix, file_format, subtype = FORMATS[i % len(FORMATS)]
    sf.write(folder / f"{i:05d}.{suffix}", np.clip(audio, -1, 1).astype(np.float32), rate, format=file_format,
             subtype=subtype)


def make_corpus(folder: Path, files: int, shortest: float, longest: float, processes: int) -> None:
    """``files`` files of ``shortest``..``longest`` seconds (uniform), in ``processes`` processes."""
    seconds = np.random.default_rng(0).uniform(shortest, longest, files)
    # spawn: no fork of a process with CUDA or thread pools, and the decoding workers' forkserver
    # is started later with its own preload
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(write_file, [folder] * files, range(files), seconds))


def decode_all(items, codec: EnCodec, workers: int) -> tuple[float, dict[int, np.ndarray]]:
    """Seconds for the workers to decode every item, and each item's audio (kept in memory)."""
    audio: dict[int, list[np.ndarray]] = {}
    start = time.perf_counter()
    for message in decoded(list(enumerate(items)), codec.sample_rate, codec.channels, piece_samples_for(codec),
                           workers):
        if isinstance(message, (Whole, Piece)):
            audio.setdefault(message.index, []).append(message.audio)
    seconds = time.perf_counter() - start
    return seconds, {i: np.concatenate(parts, axis=1) for i, parts in audio.items()}


def engine_codes(audio: dict[int, np.ndarray], codec: EnCodec, bandwidth: float,
                 window: int) -> tuple[float, dict[int, np.ndarray]]:
    """Seconds ``EnCodec.encode`` takes on in-memory audio handed over in windows of ``window``
    samples sorted by length (as the pipeline's pool hands it), and each item's codes."""
    sync = torch.cuda.synchronize if codec.device.type == "cuda" else (lambda: None)
    groups, group, held = [], [], 0
    for index, signal in audio.items():
        group.append(index)
        held += signal.shape[1]
        if held >= window:
            groups.append(group)
            group, held = [], 0
    groups += [group] if group else []
    codes: dict[int, np.ndarray] = {}
    sync()
    start = time.perf_counter()
    for group in groups:
        group.sort(key=lambda i: audio[i].shape[1])
        tokens = codec.encode([audio[i] for i in group], bandwidth)
        for i, item_codes, length in zip(group, np.asarray(tokens.codes), tokens.lengths):
            codes[i] = item_codes[:, : codec.layout.total_frames(length)]
    sync()
    return time.perf_counter() - start, codes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, help="files to generate (default 400; --quick: 8)")
    parser.add_argument("--seconds", type=float, nargs=2, metavar=("SHORTEST", "LONGEST"),
                        help="file lengths, uniform (default 4 30; --quick: 1 3)")
    parser.add_argument("--quick", action="store_true", help="a small corpus of short files (CPU smoke run)")
    parser.add_argument("--model", help="model name or checkpoint (default: random 24 kHz weights)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="exact", help="exact (default), tf32, fp16 or bf16")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1),
                        help="decoding processes (default: the cores less one)")
    parser.add_argument("-b", "--bandwidth", type=float, default=6.0)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    files = args.files or (8 if args.quick else 400)
    shortest, longest = args.seconds or ((1.0, 3.0) if args.quick else (4.0, 30.0))
    if args.model:
        codec = EnCodec.from_pretrained(args.model, device=args.device, precision=args.precision)
    else:
        codec = random_codec(args.device)
        if args.precision != "exact":
            codec = EnCodec(codec.model, args.device, policy=RuntimePolicy(args.precision))
    window = window_samples_for(codec)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "corpus"
        folder.mkdir()
        start = time.perf_counter()
        make_corpus(folder, files, shortest, longest, max(1, os.cpu_count() or 1))
        print(f"generated {files} files ({shortest:g}-{longest:g} s) in {time.perf_counter() - start:.1f} s",
              flush=True)
        items = collect_items([folder])
        decode_all(items[:1], codec, 1)  # starts the forkserver, which the later stages reuse
        decode_s, audio = decode_all(items, codec, args.workers)
        hours = sum(a.shape[1] for a in audio.values()) / codec.sample_rate / 3600
        # warm-up on every item: kernels are compiled and tuned per input length (oneDNN, cuDNN,
        # Triton), so the stage run first would pay for it; the pipeline after finds them warm too
        engine_codes(audio, codec, args.bandwidth, window)
        engine_s, reference = engine_codes(audio, codec, args.bandwidth, window)
        del audio
        summary = tokenize_corpus(folder, Path(tmp) / "tokens", codec, args.bandwidth, workers=args.workers)
        rows = {row.path: row.codes for row in read_shards(Path(tmp) / "tokens")}
        same = len(rows) == len(reference) and all(
            np.array_equal(rows[items[i].path], codes) for i, codes in reference.items())
    rates = {"decode": hours * 3600 / decode_s, "engine": hours * 3600 / engine_s, "pipeline": summary.rate}
    device = torch.cuda.get_device_name(codec.device) if codec.device.type == "cuda" else platform.processor() or "cpu"
    ratio = rates["pipeline"] / min(rates["decode"], rates["engine"])
    limit = "decoding" if rates["decode"] < rates["engine"] else "the codec"
    print(f"{len(items)} files, {hours:.3f} h of audio; {codec.name} at {args.bandwidth} kbps "
          f"({codec.policy.precision}) on {device}, {args.workers} decoding workers, window {window} samples, "
          f"torch {torch.__version__}")
    for name, rate in rates.items():
        print(f"  {name:9s} {rate:12,.1f} h of audio per hour ({hours * 3600 / rate:.1f} s)")
    print(f"  pipeline: coding {summary.coding_seconds:.1f} s of {summary.seconds:.1f} s; "
          f"shards hold the engine's codes: {same}")
    print(f"  pipeline / min(decode, engine) = {ratio:.2f} (target >= 0.80); the smaller part is {limit}")
    if args.json:
        record = {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "device": device, "torch": torch.__version__, "fastencodec": fastencodec.__version__,
            "cpu_count": os.cpu_count(), "model": codec.name, "precision": codec.policy.precision,
            "bandwidth": args.bandwidth, "files": len(items), "seconds": [shortest, longest],
            "hours_of_audio": hours, "workers": args.workers, "window_samples": window,
            "batch_samples": codec.policy.batch_samples,
            "seconds_taken": {"decode": decode_s, "engine": engine_s, "pipeline": summary.seconds,
                              "pipeline_coding": summary.coding_seconds},
            "hours_per_hour": rates, "ratio": ratio, "limit": limit, "codes_equal": same,
        }
        args.json.write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
