"""Entropy coding: time and size of ours (Meta-compatible "lm", portable "lmp1") against Meta's encodec.

Run from the repository root (CPU, one thread by default)::

    python benchmarks/entropy.py [--seconds 5] [--bandwidth 6] [--threads 1] [--json out.json]

Audio: espeak-ng speech (when ``espeak-ng`` is installed) and a NumPy music-like signal
(chords, bass and percussion). Models: Meta's 24 kHz EnCodec and LM with *random* weights
(the published ones are not reachable offline), so the sizes measure the coders on these
codes, not the savings real LM weights give (Meta's docstring expects 20-30% smaller files). Times are
of the entropy coding alone: Meta's ``compress(use_lm=True)`` minus its ``use_lm=False``
run, and Meta's LM ``decompress`` minus its plain one, against our coders on the same codes.
Sizes are payload bytes (the codes as coded; lmp1's include its 12-byte segment header).
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests import support as reference  # noqa: E402

reference.install_torchaudio_standin()

from encodec.model import EncodecModel, LMModel  # noqa: E402

from fastencodec.entropy import MetaLMCoder, PortableCoder  # noqa: E402
from fastencodec.io.resample import resample  # noqa: E402

meta_compress = importlib.import_module("encodec.compress")

TEXT = (
    "The quick brown fox jumps over the lazy dog. Speech codecs squeeze voices into a few kilobits per "
    "second, and an entropy coder driven by a small language model squeezes the tokens further still."
)


def speech(rate: int, seconds: float) -> np.ndarray | None:
    """espeak-ng speech at ``rate`` Hz, looped to ``seconds``, or None when espeak-ng is missing."""
    if shutil.which("espeak-ng") is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-w", str(path), TEXT], check=True, capture_output=True)
        audio, sr = sf.read(path, dtype="float32", always_2d=True)
    audio = resample(torch.from_numpy(audio.T.copy()), sr, rate).numpy()[0]
    reps = int(np.ceil(seconds * rate / audio.size))
    return 0.8 * np.tile(audio, reps)[: int(seconds * rate)]


def music(rate: int, seconds: float, seed: int = 0) -> np.ndarray:
    """Chords with a bass line and noise-burst percussion, 120 bpm."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    out = np.zeros_like(t)
    chords = [[261.6, 329.6, 392.0], [220.0, 261.6, 329.6], [174.6, 220.0, 261.6], [196.0, 246.9, 293.7]]
    for i, start in enumerate(np.arange(0, seconds, 2.0)):
        sl = (t >= start) & (t < start + 2.0)
        for f in chords[i % 4]:
            out[sl] += 0.1 * np.sin(2 * np.pi * f * t[sl]) * np.exp(-(t[sl] - start))
        out[sl] += 0.15 * np.sin(2 * np.pi * chords[i % 4][0] / 2 * t[sl])
    for beat in np.arange(0, seconds, 0.5):
        n = int(0.05 * rate)
        s = int(beat * rate)
        burst = rng.standard_normal(min(n, t.size - s)) * np.exp(-np.arange(min(n, t.size - s)) / (0.01 * rate))
        out[s : s + burst.size] += 0.3 * burst
    return out.astype(np.float32)


def build_models(home: Path):
    """Meta's 24 kHz codec (random weights, random codebooks) and a random LM saved in torch hub's cache."""
    torch.manual_seed(0)
    model = EncodecModel.encodec_model_24khz(pretrained=False).eval()
    model.name = "encodec_24khz"
    with torch.no_grad():
        emb = model.encoder(torch.from_numpy(music(24000, 1.0))[None, None])
        spread = emb.std()
        for layer in model.quantizer.vq.layers:
            layer._codebook.embed.copy_(emb.mean() + spread * torch.randn(layer._codebook.embed.shape))
            spread = spread * 0.7
    lm = LMModel(32, 1024, num_layers=5, dim=200, past_context=262)
    (home / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(lm.state_dict(), home / "hub" / "checkpoints" / "encodec_lm_24khz-1608e3c0.th")
    return model


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def ours_encode(coder, codes: np.ndarray) -> bytes:
    out = io.BytesIO()
    enc = coder.encoder(out, codes.shape[0])
    enc.push(codes)
    enc.finish()
    return out.getvalue()


def ours_decode(coder, data: bytes, k: int, frames: int) -> np.ndarray:
    return coder.decoder(io.BytesIO(data), k, frames).read(frames)


def run_signal(name: str, audio: np.ndarray, model, coders: dict, bandwidth: float) -> dict:
    model.set_target_bandwidth(bandwidth)
    wav = torch.from_numpy(audio)[None]
    seconds = audio.size / model.sample_rate
    plain, t_plain = timed(meta_compress.compress, model, wav, False)
    meta_lm, t_meta_lm = timed(meta_compress.compress, model, wav, True)
    meta_compress.MODELS[model.name] = lambda: model  # Meta's decompress would fetch pretrained weights
    _, t_dplain = timed(meta_compress.decompress, plain)
    _, t_dmeta = timed(meta_compress.decompress, meta_lm)
    with torch.no_grad():
        codes = model.encode(wav[None])[0][0][0].numpy()
    k, frames = codes.shape
    lm_header = 9 + int.from_bytes(meta_lm[5:9], "big")  # one segment, no scale: the rest is the coded codes
    result = {
        "signal": name,
        "seconds": seconds,
        "codebooks": k,
        "bytes_bits": -(-codes.size * 10 // 8),
        "bytes_meta_lm": len(meta_lm) - lm_header,
        "meta_encode_s": t_meta_lm - t_plain,
        "meta_decode_s": t_dmeta - t_dplain,
    }
    for tag, coder in coders.items():
        data, t_enc = timed(ours_encode, coder, codes)
        decoded, t_dec = timed(ours_decode, coder, data, k, frames)
        assert np.array_equal(decoded, codes), f"{tag} round trip failed"
        result[f"bytes_{tag}"] = len(data)
        result[f"{tag}_encode_s"] = t_enc
        result[f"{tag}_decode_s"] = t_dec
    ours_lm = ours_encode(coders["lm"], codes)
    result["lm_bytes_identical_to_meta"] = meta_lm[lm_header:] == ours_lm
    return result


def report(results: list[dict]) -> None:
    print("random LM weights: sizes show the coders work, not what Meta's trained LM saves")
    for r in results:
        s = r["seconds"]
        print(f"\n{r['signal']}: {s:.1f} s, {r['codebooks']} codebooks")
        print(f"  payload bytes: bits {r['bytes_bits']}  meta lm {r['bytes_meta_lm']}  ours lm {r['bytes_lm']}"
              f"  lmp1 {r['bytes_lmp1']}  (ours lm byte-identical to Meta: {r['lm_bytes_identical_to_meta']})")
        for direction in ("encode", "decode"):
            meta = r[f"meta_{direction}_s"]
            print(f"  {direction}: meta {meta:.2f} s ({s / meta:.1f}x real time)", end="")
            for tag in ("lm", "lmp1"):
                ours = r[f"{tag}_{direction}_s"]
                print(f" | {tag} {ours:.2f} s ({s / ours:.1f}x real time, {meta / ours:.1f}x Meta)", end="")
            print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--bandwidth", type=float, default=6.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["TORCH_HOME"] = tmp
        model = build_models(Path(tmp))
        coders = {"lm": MetaLMCoder.for_model(model.name), "lmp1": PortableCoder.for_model(model.name)}
        warm = np.zeros((2, 3), dtype=np.int64)  # numba compiles (or loads its cache) here, not in the timings
        for coder in coders.values():
            ours_decode(coder, ours_encode(coder, warm), 2, 3)
        signals = {"music": music(24000, args.seconds)}
        voice = speech(24000, args.seconds)
        if voice is not None:
            signals["speech (espeak-ng)"] = voice
        results = [run_signal(name, audio, model, coders, args.bandwidth) for name, audio in signals.items()]
    report(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
