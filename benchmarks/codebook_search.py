"""Residual vector quantization on a CUDA GPU: fastencodec's one-launch kernels (the CUDA C++ IEEE
float32 one of ``exact``, and Triton's per block choice) against Meta's ``encodec`` quantizer on the
same embeddings.

``python benchmarks/codebook_search.py`` on one CUDA GPU. Embeddings of 64 x 10 s at 24 kHz
(48,000 frames of 128 values), 8 and 32 codebooks of 1024 (6 and 24 kbps); prints milliseconds
(median of CUDA-event-timed calls), the speed-up over Meta's, and per codebook the fraction of
codes equal to the default's (IEEE float32: :mod:`~fastencodec.kernels.rvq_search` where it fits) for
the Triton kernel in each product precision and block choice.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from triton.runtime.errors import OutOfResources  # noqa: E402

from benchmarks.throughput import cuda_ms  # noqa: E402
from fastencodec.kernels import rvq_search  # noqa: E402
from fastencodec.kernels.cuda import CODE_BLOCKS, residual_codes  # noqa: E402
from tests import support as reference  # noqa: E402

BLOCKS = [CODE_BLOCKS, (32, 64, 4), (64, 32, 2)]
"""Triton block choices timed (others ran 15x slower or did not fit on an H200: BENCHMARKS.md)."""
PRECISIONS = ("ieee", "tf32x3", "tf32")


@torch.inference_mode()
def main() -> None:
    reference.install_torchaudio_standin()
    torch.manual_seed(0)
    for n_q in (8, 32):
        compare(n_q, 64 * 750)


def compare(n_q: int, frames: int) -> None:
    """Time Meta's quantizer and each block choice on ``frames`` random embeddings."""
    from encodec.quantization.core_vq import ResidualVectorQuantization

    meta = ResidualVectorQuantization(num_quantizers=n_q, dim=128, codebook_size=1024).cuda().eval()
    for layer in meta.layers:
        layer._codebook.embed.normal_()
        layer._codebook.inited.fill_(1)
    embed = torch.stack([layer._codebook.embed for layer in meta.layers]).contiguous()
    embed_sq = embed.pow(2).sum(-1).contiguous()
    x = torch.randn(1, 128, frames, device="cuda") * 2
    rows = x[0].t().contiguous()
    theirs = cuda_ms(lambda: meta.encode(x, n_q=n_q), 10)
    print(f"n_q {n_q}, {frames} frames: Meta's quantizer {theirs:.2f} ms")
    default = residual_codes(rows, embed, embed_sq)
    agree = (default.t()[None] == meta.encode(x, n_q=n_q).transpose(0, 1)).double().mean()
    print(f"  codes equal to Meta's (float32 torch on the GPU): {agree:.4f}")
    ms = cuda_ms(lambda: residual_codes(rows, embed, embed_sq), 10)
    print(f"  default, IEEE float32 ({'CUDA C++' if rvq_search.fits(rows.device, 128, 1024) else 'Triton'}): "
          f"{ms:.2f} ms ({theirs / ms:.1f}x Meta's)")  # fmt: skip
    for prec in PRECISIONS:
        for blocks in BLOCKS if prec == "ieee" else BLOCKS[:3]:
            try:
                ms = cuda_ms(lambda prec=prec, blocks=blocks: residual_codes(rows, embed, embed_sq, prec, blocks), 10)
            except OutOfResources as error:
                print(f"  {prec} blocks {blocks}: does not run here ({error})")
                continue
            codes = residual_codes(rows, embed, embed_sq, prec, blocks)
            same = (codes == default).double().mean(0).tolist()
            print(
                f"  {prec} blocks {blocks}: {ms:.2f} ms ({theirs / ms:.1f}x Meta's), codes equal to the default's "
                f"per codebook: {' '.join(f'{v:.4f}' for v in same)}"
            )


if __name__ == "__main__":
    main()
