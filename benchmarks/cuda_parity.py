"""Parity on a CUDA device: ``python benchmarks/cuda_parity.py``.

Encodes and decodes the same audio with fastencodec on ``cuda``, Meta's ``encodec`` on ``cuda``
(TF32 off, as fastencodec runs) and fastencodec on the CPU, for random-weight 24 and 48 kHz
models (codebooks seeded as in the tests), and prints the fraction of equal tokens and the
audio error relative to the peak. Needs ``encodec`` 0.1.1 (``--no-deps``).
"""

import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import benchmarks.suite  # noqa: E402, F401  (lets encodec import without torchaudio)
from fastencodec import EnCodec  # noqa: E402
from tests import support as reference  # noqa: E402


def compare(kind: str, seconds: float, bandwidth: float) -> None:
    model, path = reference.meta_model(kind, Path(tempfile.mkdtemp()))
    rate, channels = model.sample_rate, model.channels
    audio = reference.speech_like(rate, channels, seconds)[None]
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model = model.cuda()
    model.set_target_bandwidth(bandwidth)
    with torch.no_grad():
        frames = model.encode(audio.cuda())
        meta_codes = torch.cat([c for c, _ in frames], dim=-1).cpu()
        meta_audio = model.decode(frames)[..., : audio.shape[-1]].cpu()
    gpu, cpu = EnCodec.from_pretrained(path, device="cuda"), EnCodec.from_pretrained(path)
    tokens = gpu.encode(audio.cuda(), bandwidth=bandwidth)
    gpu_audio = gpu.decode(tokens).cpu()
    codes = tokens.codes.cpu()
    cpu_codes = torch.as_tensor(cpu.encode(audio, bandwidth=bandwidth).codes)
    peak = meta_audio.abs().max().item()
    print(
        f"{kind} {seconds:g} s {bandwidth:g} kbps: tokens equal to Meta on cuda "
        f"{(codes == meta_codes).float().mean().item():.4%}, to fastencodec on cpu "
        f"{(codes == cpu_codes).float().mean().item():.4%}; audio error vs Meta "
        f"{(gpu_audio - meta_audio).abs().max().item() / peak:.1e} of peak"
    )


if __name__ == "__main__":
    if not torch.cuda.is_available():
        sys.exit("needs a CUDA device")
    for kind, seconds, bandwidth in (("24khz", 10.0, 6.0), ("24khz", 10.0, 24.0), ("48khz", 5.0, 24.0)):
        compare(kind, seconds, bandwidth)
