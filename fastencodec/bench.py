"""Quick self-benchmark (``fastencodec bench``): encode/decode speed on this machine.

Times one model alone (no reference implementations; ``benchmarks/`` compares against
those). Without a model name it uses random weights in Meta's 24 kHz architecture, so it
needs no download; speed does not depend on the weights' values.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable

import torch

from fastencodec.codec import EnCodec
from fastencodec.nn.config import META_24KHZ
from fastencodec.nn.model import EncodecModel


def random_codec(device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> EnCodec:
    """Meta's 24 kHz architecture with random weights and random codebooks (seeded; the caller's
    global RNG state is restored afterwards)."""
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(0)
        model = EncodecModel(META_24KHZ)
        model.quantizer.embed.normal_()
    model.quantizer.refresh()
    return EnCodec(model.eval().requires_grad_(False), device, dtype)


def median_seconds(fn: Callable[[], object], device: torch.device, repeat: int, warmup: int) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeat`` runs after ``warmup`` runs."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_bench(
    device: str | torch.device | None = None,
    seconds: float = 10.0,
    *,
    model: str | None = None,
    batch: int = 1,
    bandwidth: float | None = None,
    dtype: torch.dtype | None = None,
    repeat: int = 5,
) -> str:
    """Time encode and decode of ``batch`` signals of ``seconds`` s; return a printable table.

    ``device`` defaults to CUDA when available, else CPU. ``model`` is anything
    :meth:`EnCodec.from_pretrained` accepts (default: random 24 kHz weights, no download).
    ``bandwidth`` in kbps defaults to the model's default; ``dtype`` to float32. Each time
    is the median of ``repeat`` runs after warm-up runs. Real-time factor = seconds of audio
    coded per second of wall-clock time.
    """
    if seconds <= 0 or batch < 1 or repeat < 1:
        raise ValueError("seconds must be > 0, batch and repeat >= 1")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    codec = random_codec(device, dtype) if model is None else EnCodec.from_pretrained(model, device, dtype)
    gen = torch.Generator().manual_seed(0)
    n = round(seconds * codec.sample_rate)
    audio = (0.1 * torch.randn(batch, codec.channels, n, generator=gen)).to(device)
    bandwidth = codec.default_bandwidth if bandwidth is None else bandwidth
    tokens = codec.encode(audio, bandwidth)
    warmup = 2 if device.type == "cuda" else 1  # CUDA graphs are captured on the second sight of a shape
    enc = median_seconds(lambda: codec.encode(audio, bandwidth), device, repeat, warmup)
    dec = median_seconds(lambda: codec.decode(tokens), device, repeat, warmup)
    audio_s = batch * seconds
    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    else:
        where = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    name = model or "random-weight encodec_24khz"
    lines = [
        f"fastencodec bench: {name}, {bandwidth:g} kbps, {codec.dtype}, batch {batch} x {seconds:g} s",
        f"device: {device} ({where}), torch {torch.__version__}, median of {repeat}",
        "",
        f"{'step':<16}{'time (ms)':>12}{'x real time':>14}",
    ]
    for step, t in (("encode", enc), ("decode", dec), ("encode+decode", enc + dec)):
        lines.append(f"{step:<16}{t * 1e3:>12.1f}{audio_s / t:>14.1f}")
    return "\n".join(lines)
