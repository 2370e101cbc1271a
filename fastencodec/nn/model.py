"""``EncodecModel``: encoder, quantizer and decoder of one checkpoint, coding one segment at a time."""

from __future__ import annotations

import torch
from torch import nn

from fastencodec.nn.config import EncodecConfig
from fastencodec.nn.quantizer import ResidualVectorQuantizer
from fastencodec.nn.seanet import Decoder, Encoder


def segment_scale(x: torch.Tensor) -> torch.Tensor:
    """The scale of one segment ``[1, channels, samples]`` as ``[1, 1, 1]``: its mono RMS plus 1e-8.

    Computed on the segment alone, exactly as Meta's reference does: torch splits a reduction
    to one value across its threads but a batched reduction by rows, and the two summation
    orders round differently, so a batch's scales computed in one call would not be bit-exact.
    """
    return x.mean(dim=1, keepdim=True).pow(2).mean(dim=2, keepdim=True).sqrt() + 1e-8


class EncodecModel(nn.Module):
    """Encoder, residual vector quantizer and decoder of one EnCodec checkpoint.

    Codes one segment at a time (:meth:`encode`, :meth:`decode`): what export, compilation
    and generation code needs. Splitting signals into segments, batching, streaming and the
    runtime policy live in :mod:`fastencodec.engine`.

    Args:
        cfg: the architecture; the weights are left at their initial values (see
            :func:`fastencodec.weights.loading.build_model` to load a checkpoint).
    """

    def __init__(self, cfg: EncodecConfig):
        super().__init__()
        self.config = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quantizer = ResidualVectorQuantizer(cfg.num_quantizers, cfg.codebook_size, cfg.dimension)

    @property
    def hop_length(self) -> int:
        """Audio samples per token frame."""
        return self.config.hop_length

    def normalize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Segments as the encoder takes them.

        Args:
            x: float audio ``[batch, channels, samples]``, one segment per item.

        Returns:
            float32 audio ``[batch, channels, samples]`` (for normalising models divided by its
            scale) and each segment's scale ``[batch]`` (its RMS plus 1e-8), else None.
        """
        x = x.float()
        if not self.config.normalize:
            return x, None
        volume = torch.cat([segment_scale(x[i : i + 1]) for i in range(x.shape[0])])
        return x / volume, volume.view(-1)

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Segments to embeddings.

        Args:
            x: float audio ``[batch, channels, samples]`` at ``config.sample_rate`` Hz, one
                segment per item.

        Returns:
            Embeddings ``[batch, dimension, ceil(samples / hop_length)]`` (float32) and, for
            normalising models, each segment's scale ``[batch]`` (its RMS plus 1e-8), else None.
        """
        x, scale = self.normalize(x)
        dtype = next(self.encoder.parameters()).dtype
        return self.encoder(x.to(dtype)).float(), scale

    def encode(self, x: torch.Tensor, num_codebooks: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Segments to codes.

        Args:
            x: float audio ``[batch, channels, samples]``, one segment per item.
            num_codebooks: codebooks per frame, 1 to ``quantizer.num_quantizers``.

        Returns:
            int64 codes ``[batch, num_codebooks, frames]`` and the scales ``[batch]`` (or None),
            as :meth:`embed`.
        """
        emb, scale = self.embed(x)
        return self.quantizer.encode(emb, num_codebooks), scale

    def decode(self, codes: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        """Codes of segments to their audio.

        Args:
            codes: int64 codes ``[batch, codebooks, frames]`` on the model's device.
            scale: each segment's scale ``[batch]`` (normalising models), or None.

        Returns:
            float32 audio ``[batch, channels, frames * hop_length]``.
        """
        emb = self.quantizer.decode(codes)
        dtype = next(self.decoder.parameters()).dtype
        audio = self.decoder(emb.to(dtype)).float()
        if scale is not None:
            audio = audio * scale.to(audio.device).view(-1, 1, 1)
        return audio
