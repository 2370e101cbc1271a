"""Real recordings for the quality measurements as 24 kHz mono float32 ``.npy`` files.

``python benchmarks/real_audio.py OUT_DIR [--seconds S]`` after ``scripts/real_audio.sh``:
espeak-ng speech (generated), read speech from ``pocketsphinx-testdata`` (LibriVox) and music
from ``colobot-common-sounds``, each cut to ``S`` seconds (default 20) and peak-normalised
to 0.5. Files that are missing are skipped with a note.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastencodec.io.audio import read_audio  # noqa: E402
from fastencodec.io.resample import resample  # noqa: E402

TEXT = (
    "The quick brown fox jumps over the lazy dog. Neural audio codecs turn speech and music into "
    "a few discrete tokens per frame, and a decoder turns the tokens back into sound."
)
SPEECH = sorted(Path("/usr/share/pocketsphinx/test/data/librivox").glob("*.wav"))
MUSIC = [Path("/usr/share/games/colobot/music") / n for n in ("Constructive.ogg", "Infinite.ogg", "Proton.ogg")]


def load(path: Path, seconds: float) -> np.ndarray:
    audio, rate = read_audio(path)  # [channels, samples]
    mono = audio.mean(axis=0)
    mono = resample(mono[None], rate, 24_000)[0][: int(seconds * 24_000)]
    return (0.5 * mono / max(1e-9, float(np.abs(mono).max()))).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "espeak.wav"
        subprocess.run(["espeak-ng", "-w", str(wav), TEXT], check=True)
        np.save(args.out / "espeak_speech.npy", load(wav, args.seconds))
    speech = [load(p, args.seconds) for p in SPEECH]
    if speech:
        np.save(args.out / "librivox_speech.npy", np.concatenate(speech)[: int(args.seconds * 24_000)])
    else:
        print("pocketsphinx-testdata not installed: no real speech", file=sys.stderr)
    for path in MUSIC:
        if path.exists():
            np.save(args.out / f"music_{path.stem.lower()}.npy", load(path, args.seconds))
        else:
            print(f"{path} missing: run scripts/real_audio.sh", file=sys.stderr)
    for f in sorted(args.out.glob("*.npy")):
        print(f.name, np.load(f).shape[-1] / 24_000, "s")


if __name__ == "__main__":
    main()
