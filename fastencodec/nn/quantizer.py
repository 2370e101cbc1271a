"""Residual vector quantizer: embeddings to codebook indices and back."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class ResidualVectorQuantizer(nn.Module):
    """``num_quantizers`` codebooks of ``bins`` vectors of size ``dim``, applied residually.

    Nearest neighbours use the reference's expression
    ``-(|x|^2 - 2 x.e + |e|^2)`` so that near-ties resolve the same way. On a CPU it runs in
    float32, as the reference. On CUDA it runs in float64, so that no global matmul setting
    (``torch.backends.cuda.matmul.allow_tf32``, ``torch.set_float32_matmul_precision``) can
    move a token.

    Args:
        num_quantizers: codebooks.
        bins: entries per codebook.
        dim: size of one vector (the embedding dimension).
    """

    def __init__(self, num_quantizers: int, bins: int, dim: int):
        super().__init__()
        self.bins = bins
        self.register_buffer("embed", torch.zeros(num_quantizers, bins, dim))
        self.register_buffer("embed_sq", torch.zeros(num_quantizers, 1, bins), persistent=False)

    @property
    def num_quantizers(self) -> int:
        """Codebooks held."""
        return self.embed.shape[0]

    def refresh(self) -> None:
        """Recompute cached codebook norms; call after loading ``embed``."""
        self.embed_sq = self.embed.pow(2).sum(-1).unsqueeze(1)

    def encode(self, x: torch.Tensor, n_q: int) -> torch.Tensor:
        """Nearest codes, codebook after codebook on the residual.

        Args:
            x: embeddings ``[B, dim, frames]``.
            n_q: codebooks to use (the first ``n_q``).

        Returns:
            int64 codes ``[B, n_q, frames]``.
        """
        batch, dim, frames = x.shape
        wide = torch.float64 if x.is_cuda else torch.float32
        residual = x.transpose(1, 2).reshape(-1, dim).to(wide)
        codes = []
        for k in range(n_q):
            embed = self.embed[k].to(wide)
            embed_sq = embed.pow(2).sum(-1)[None] if x.is_cuda else self.embed_sq[k]
            dist = -(residual.pow(2).sum(1, keepdim=True) - 2 * residual @ embed.t() + embed_sq)
            index = dist.max(dim=-1).indices
            residual = residual - F.embedding(index, embed)
            codes.append(index)
        return torch.stack(codes, 1).view(batch, frames, n_q).transpose(1, 2)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes ``[B, K, frames]`` to the summed quantized embeddings ``[B, dim, frames]``."""
        out = F.embedding(codes[:, 0], self.embed[0])
        for k in range(1, codes.shape[1]):
            out = out + F.embedding(codes[:, k], self.embed[k])
        return out.transpose(1, 2)
