"""Quality of a precision mode against a reference (normally ``exact``): the numbers a user
needs to pick a mode.

- **token agreement** per codebook: the fraction of codes equal to the reference's;
- **excess quantization distortion**: ``||e - q(codes)||^2 / ||e - q(codes_ref)||^2 - 1`` in
  float64, with ``e`` the reference's embeddings and ``q`` the sum of the chosen code
  vectors. A flip between near-tied codes costs almost nothing, a wrong code a lot;
- **decoder SNR** in dB of the candidate's decoder against the reference's on the
  reference's tokens: ``10 log10(||a_ref||^2 / ||a - a_ref||^2)``.

A mode qualifies as a GPU default when excess distortion <= :data:`MAX_EXCESS` and the
decoder SNR >= :data:`MIN_DECODER_SNR_DB`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from fastencodec.kernels import Networks

MAX_EXCESS = 0.005
"""Largest excess quantization distortion (0.5%) of a mode fit to be a default."""

MIN_DECODER_SNR_DB = 45.0
"""Smallest decoder SNR (dB) of a mode fit to be a default."""


@dataclass
class Quality:
    """One candidate against one reference on one batch of audio.

    Attributes:
        agreement: per codebook, the fraction of codes equal to the reference's.
        excess_distortion: ``||e - q(codes)||^2 / ||e - q(codes_ref)||^2 - 1`` (float64).
        decoder_snr_db: SNR in dB of the candidate's decoder output against the reference's,
            on the reference's tokens.
    """

    agreement: list[float]
    excess_distortion: float
    decoder_snr_db: float

    @property
    def qualifies(self) -> bool:
        """Whether the candidate meets the bar for a default mode."""
        return self.excess_distortion <= MAX_EXCESS and self.decoder_snr_db >= MIN_DECODER_SNR_DB

    def as_dict(self) -> dict:
        """The figures and ``qualifies`` as a JSON-ready dict."""
        return {**asdict(self), "qualifies": self.qualifies}


@torch.inference_mode()
def compare(reference: Networks, candidate: Networks, audio: torch.Tensor, n_q: int) -> Quality:
    """Measure ``candidate`` against ``reference`` on ``audio``.

    Args:
        reference: the networks defining the truth (usually precision ``exact``).
        candidate: the networks under test (same weights; any device).
        audio: ``[batch, channels, samples]`` float32 at the model's rate (already normalised
            for normalising models).
        n_q: codebooks to compare (e.g. 8 for 6 kbps at 24 kHz).

    Returns:
        The :class:`Quality` figures.
    """
    emb_ref = reference.encode(audio.to(reference.device))
    codes_ref = reference.quantize(emb_ref, n_q).cpu()
    emb_cand = candidate.encode(audio.to(candidate.device))
    codes_cand = candidate.quantize(emb_cand, n_q).cpu()
    agreement = [float((codes_ref[:, k] == codes_cand[:, k]).double().mean()) for k in range(n_q)]
    embed = reference.model.quantizer.embed.detach().double().cpu()
    e = emb_ref.double().cpu()
    err_ref = _quantization_error(e, codes_ref, embed)
    err_cand = _quantization_error(e, codes_cand, embed)
    excess = err_cand / err_ref - 1.0 if err_ref > 0 else (0.0 if err_cand == 0 else math.inf)
    q_ref = reference.dequantize(codes_ref.to(reference.device))
    audio_ref = reference.decode(q_ref).double().cpu()
    audio_cand = candidate.decode(q_ref.to(candidate.device)).double().cpu()
    noise = float((audio_cand - audio_ref).pow(2).sum())
    signal = float(audio_ref.pow(2).sum())
    snr = math.inf if noise == 0 else 10 * math.log10(signal / noise)
    return Quality(agreement, float(excess), snr)


def _quantization_error(e: torch.Tensor, codes: torch.Tensor, embed: torch.Tensor) -> float:
    """``||e - sum_k embed[k][codes[:, k]]||^2`` in float64 (``e`` ``[B, D, T]``, codes ``[B, K, T]``)."""
    q = torch.zeros_like(e)
    for k in range(codes.shape[1]):
        q += embed[k][codes[:, k]].transpose(1, 2)
    return float((e - q).pow(2).sum())
