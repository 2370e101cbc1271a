"""How often the 24 kHz model's chunked encode of long audio differs from Meta's one-pass encode.

Long audio runs through the exact streaming state chunk by chunk (``chunk_samples``); its
float sums are ordered differently from one pass over the whole signal, so near-tie frames of
the nearest-codebook search may pick the other code. This prints the share of frames (and of
tokens) that differ from Meta's ``encodec`` 0.1.1 on the tests' random-weight model
(seeded codebooks, speech-like audio).

Usage: python benchmarks/chunk_ties.py [--seconds 60] [--bandwidth 24]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fastencodec import EnCodec  # noqa: E402
from tests import support as reference  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--bandwidth", type=float, default=24.0)
    args = parser.parse_args()
    reference.install_torchaudio_standin()
    with tempfile.TemporaryDirectory() as tmp:
        meta, path = reference.meta_model("24khz", Path(tmp))
        codec = EnCodec.from_pretrained(path)
    audio = reference.speech_like(24_000, 1, args.seconds, seed=7)[None]
    meta.set_target_bandwidth(args.bandwidth)
    with torch.no_grad():
        want = torch.cat([codes for codes, _ in meta.encode(audio)], dim=-1)
    got = torch.as_tensor(codec.encode(audio, bandwidth=args.bandwidth).codes)
    differ = got != want
    frames = differ.any(dim=1).sum().item()
    print(
        f"24 kHz, {args.seconds:g} s, {args.bandwidth:g} kbps, chunks of {codec.policy.chunk_samples} samples: "
        f"{frames} of {want.shape[-1]} frames ({frames / want.shape[-1]:.3%}) and {differ.sum().item()} of "
        f"{want.numel()} tokens ({differ.float().mean().item():.3%}) differ from Meta's one pass; "
        f"first codebook: {differ[:, 0].sum().item()}"
    )


if __name__ == "__main__":
    main()
