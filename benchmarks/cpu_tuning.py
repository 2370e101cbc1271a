"""CPU work sizes measured, not assumed: ``python benchmarks/cpu_tuning.py [--quick] [--out DIR]``.

Times encode and decode (``exact``, default threads) of the seeded random models while one
runtime-policy size varies, beside Meta's ``encodec`` on the same audio:

- 24 kHz, 60 s mono: ``chunk_samples`` (long audio goes through the stream, one chunk at a time);
- 48 kHz, 10 s stereo: ``batch_samples`` (how many 1 s segments share one call).

The defaults in ``fastencodec/engine/policy.py`` (``CPU_CHUNK_SAMPLES``, ``CPU_BATCH_SAMPLES``)
should be the fastest sizes this prints for the machine that BENCHMARKS.md names. Writes
``cpu_tuning.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fastencodec import EnCodec  # noqa: E402
from fastencodec.bench import median_seconds  # noqa: E402
from fastencodec.engine.policy import CPU_BATCH_SAMPLES, CPU_CHUNK_SAMPLES  # noqa: E402
from tests import support as reference  # noqa: E402

BANDWIDTH = 6.0
CPU = torch.device("cpu")


def time_meta(model: torch.nn.Module, audio: torch.Tensor, repeat: int) -> tuple[float, float]:
    """Median encode and decode seconds of Meta's model on ``audio`` ``[1, C, samples]``."""
    model.set_target_bandwidth(BANDWIDTH)
    with torch.inference_mode():
        frames = model.encode(audio)
        return (
            median_seconds(lambda: model.encode(audio), CPU, repeat, 1),
            median_seconds(lambda: model.decode(frames), CPU, repeat, 1),
        )


def time_ours(path: Path, audio: torch.Tensor, repeat: int, **sizes: int) -> tuple[float, float]:
    """Median encode and decode seconds of fastencodec with policy ``sizes`` on ``audio``."""
    codec = EnCodec.from_pretrained(path, **sizes)
    tokens = codec.encode(audio, BANDWIDTH)
    return (
        median_seconds(lambda: codec.encode(audio, BANDWIDTH), CPU, repeat, 1),
        median_seconds(lambda: codec.decode(tokens), CPU, repeat, 1),
    )


def sweep(name: str, path: Path, meta: torch.nn.Module, audio: torch.Tensor, field: str, sizes: list[int],
          default: int, repeat: int) -> dict:  # fmt: skip
    """Time every size of ``field``; print one table; return the results."""
    meta_enc, meta_dec = time_meta(meta, audio, repeat)
    rows = []
    print(f"\n{name}: {field} (default {default}); Meta encode {meta_enc:.3f} s, decode {meta_dec:.3f} s")
    print(f"| {field} | encode s | decode s | encode vs Meta | decode vs Meta |\n|---:|---:|---:|---:|---:|")
    for size in sizes:
        enc, dec = time_ours(path, audio, repeat, **{field: size})
        rows.append({field: size, "encode_s": enc, "decode_s": dec})
        mark = " (default)" if size == default else ""
        print(f"| {size}{mark} | {enc:.3f} | {dec:.3f} | {meta_enc / enc:.2f}x | {meta_dec / dec:.2f}x |", flush=True)
    best = min(rows, key=lambda r: r["encode_s"] + r["decode_s"])
    print(f"fastest {field}: {best[field]}")
    return {"meta_encode_s": meta_enc, "meta_decode_s": meta_dec, "rows": rows, "fastest": best[field]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short audio, two sizes each (smoke test)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per size (median)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    reference.install_torchaudio_standin()
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        meta24, path24 = reference.meta_model("24khz", Path(tmp))
        seconds = 4.0 if args.quick else 60.0
        chunks = [1 << 15, 1 << 16] if args.quick else [1 << 14, 1 << 15, 1 << 16, 1 << 17, 1 << 18]
        audio = reference.speech_like(24_000, 1, seconds)[None]
        results["24khz"] = sweep(f"24 kHz, {seconds:g} s", path24, meta24, audio, "chunk_samples", chunks,
                                 CPU_CHUNK_SAMPLES, args.repeat)  # fmt: skip
        meta48, path48 = reference.meta_model("48khz", Path(tmp))
        seconds = 2.0 if args.quick else 10.0
        batches = [48_000, 1 << 17] if args.quick else [48_000, 1 << 17, 1 << 18, 1 << 20]
        audio = reference.speech_like(48_000, 2, seconds)[None]
        results["48khz"] = sweep(f"48 kHz stereo, {seconds:g} s", path48, meta48, audio, "batch_samples", batches,
                                 CPU_BATCH_SAMPLES, args.repeat)  # fmt: skip
    (args.out / "cpu_tuning.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
