"""Precision modes on CPU: names and refusals, token tags, quality figures on fixed inputs,
bitwise batch invariance per mode (alone, in a batch of 64, beside items of other lengths)."""

import math

import numpy as np
import pytest
import torch

from fastencodec import EnCodec
from fastencodec.kernels import Networks, check_precision
from fastencodec.kernels.precision import cpu_has_bf16
from fastencodec.quality import compare
from tests import reference

CPU_MODES = ["exact", pytest.param("bf16", marks=pytest.mark.skipif(not cpu_has_bf16(), reason="no CPU bf16"))]


def test_unknown_and_unsupported_precisions_are_refused(codec24):
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        EnCodec(codec24.model, precision="fp8")
    with pytest.raises(ValueError, match="'tf32' needs a CUDA GPU"):
        EnCodec(codec24.model, precision="tf32")
    with pytest.raises(ValueError, match="CPU and CUDA"):
        check_precision("exact", "meta")


@pytest.mark.parametrize("precision", CPU_MODES)
def test_tokens_carry_their_mode_and_decode_in_any_mode(codec24, precision):
    codec = EnCodec(codec24.model, precision=precision)
    audio = reference.speech_like(24_000, 1, 0.5)[None]
    tokens = codec.encode(audio)
    assert tokens.precision == precision and f"precision={precision}" in repr(tokens)
    assert codec24.decode(tokens).shape == (1, 1, audio.shape[-1])


def test_quality_of_exact_against_itself_is_perfect(codec24):
    audio = torch.stack([reference.speech_like(24_000, 1, 1.0, 7 + i) for i in range(2)])
    exact = Networks(codec24.model, "exact")
    q = compare(exact, exact, audio, 8)
    assert q.agreement == [1.0] * 8 and q.excess_distortion == 0.0 and math.isinf(q.decoder_snr_db)
    assert q.qualifies


@pytest.mark.skipif(not cpu_has_bf16(), reason="no CPU bf16")
def test_quality_of_bf16_on_fixed_inputs(codec24):
    """Figures measured on the seeded random model (BENCHMARKS.md): bf16 moves tokens
    (excess distortion a few %, decoder SNR near 38 dB) but stays far from garbage."""
    audio = torch.stack([reference.speech_like(24_000, 1, 1.0, 7 + i) for i in range(2)])
    q = compare(Networks(codec24.model, "exact"), Networks(codec24.model, "bf16"), audio, 8)
    assert 0 < q.excess_distortion < 0.15
    assert 30 < q.decoder_snr_db < 60
    assert q.agreement[0] > 0.25
    assert not q.qualifies


@pytest.mark.parametrize("precision", CPU_MODES)
def test_cpu_batch_invariance_bitwise(codec24, precision):
    codec = EnCodec(codec24.model, precision=precision)
    rng = np.random.default_rng(3)
    batch = torch.stack([reference.speech_like(24_000, 1, 0.1, 20 + i) for i in range(64)])
    batch[1:] += torch.from_numpy(rng.standard_normal(batch[1:].shape).astype(np.float32)) * 0.01
    item = batch[0]
    alone = codec.encode(item[None])
    in_batch = codec.encode(batch)
    mixed = codec.encode([item[:, : 1200 + 320 * k] for k in range(3)] + [item])
    assert torch.equal(torch.as_tensor(in_batch.codes[:1]), torch.as_tensor(alone.codes))
    assert torch.equal(torch.as_tensor(mixed.codes[3:4]), torch.as_tensor(alone.codes))
    audio_alone = codec.decode(alone)
    assert torch.equal(torch.as_tensor(codec.decode(in_batch)[:1]), torch.as_tensor(audio_alone))
    assert torch.equal(torch.as_tensor(codec.decode(mixed)[3]), torch.as_tensor(audio_alone[0]))


def test_exact_networks_are_the_modules_on_cpu(codec24):
    """exact on CPU runs the reference arithmetic (parity tests cover the whole codec)."""
    audio = reference.speech_like(24_000, 1, 0.5)[None]
    with torch.inference_mode():
        assert torch.equal(Networks(codec24.model, "exact").encode(audio), codec24.model.encoder(audio))
