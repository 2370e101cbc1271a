"""Precision modes on CPU: names and refusals, token tags, quality figures on fixed inputs,
bitwise batch invariance per mode (alone, in a batch of 64, beside items of other lengths)."""

import copy
import math

import numpy as np
import pytest
import torch

from fastencodec import EnCodec, RuntimePolicy
from fastencodec.kernels import Networks, check_precision
from fastencodec.kernels import precision as modes
from fastencodec.kernels.precision import cpu_has_bf16, cpu_has_fp16
from fastencodec.nn.config import EncodecConfig
from fastencodec.nn.model import EncodecModel
from fastencodec.quality import compare
from fastencodec.tokens import concatenate
from tests import support

CPU_MODES = ["exact", pytest.param("bf16", marks=pytest.mark.skipif(not cpu_has_bf16(), reason="no CPU bf16"))]


@pytest.fixture(scope="module")
def narrow():
    """A narrow model of the 24 kHz architecture (random weights): batch-of-64 runs stay cheap."""
    torch.manual_seed(5)
    return EncodecModel(EncodecConfig(n_filters=2, dimension=8, name="encodec_24khz")).eval().requires_grad_(False)


@pytest.fixture(scope="module")
def speech():
    """Two fixed 0.5 s speech-like items ``[2, 1, 12000]``."""
    return torch.stack([support.speech_like(24_000, 1, 0.5, 7 + i) for i in range(2)])


def codec_in(model, precision):
    return EnCodec(model, policy=RuntimePolicy(precision=precision))


def test_unknown_and_unsupported_precisions_are_refused(narrow):
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        codec_in(narrow, "fp8")
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        EnCodec.from_pretrained("/nonexistent", precision="fp8")
    with pytest.raises(ValueError, match="'tf32' needs a CUDA GPU"):
        codec_in(narrow, "tf32")
    with pytest.raises(ValueError, match="CPU and CUDA"):
        check_precision("exact", "meta")


@pytest.mark.skipif(cpu_has_fp16(), reason="this CPU has float16 instructions")
def test_fp16_is_refused_on_a_cpu_without_float16_instructions(narrow):
    with pytest.raises(ValueError, match="'fp16' on CPU needs AVX512-FP16 or AMX-FP16"):
        codec_in(narrow, "fp16")


@pytest.fixture
def fp16_cpu(monkeypatch):
    """CPU fp16 allowed as on a CPU with float16 instructions (torch's portable float16 kernels
    compute it here): the fp16 runner's arithmetic is tested on every CPU."""
    monkeypatch.setattr(modes, "cpu_has_fp16", lambda: True)


def test_quality_of_fp16_meets_the_bar_on_fixed_inputs(codec24, speech, fp16_cpu):
    """float16's 11-bit significand (bf16: 8) keeps the tokens: the mode qualifies on the seeded
    random model (excess distortion <= 0.5%, decoder SNR >= 45 dB)."""
    q = compare(Networks(codec24.model, "exact"), Networks(codec24.model, "fp16"), speech, 8)
    assert q.qualifies, q.as_dict()
    assert q.agreement[0] > 0.9


def test_fp16_overflow_raises_instead_of_giving_tokens(narrow, fp16_cpu):
    model = copy.deepcopy(narrow)
    with torch.no_grad():
        first = model.encoder.layers[0].conv
        first.weight.mul_(1e6)
    codec = codec_in(model, "fp16")
    audio = support.speech_like(24_000, 1, 0.3)[None]
    with pytest.raises(ValueError, match="overflowed float16"):
        codec.encode(audio)
    assert codec_in(model, "exact").encode(audio).codes is not None  # float32 holds the same input


@pytest.mark.skipif(not cpu_has_bf16(), reason="no CPU bf16")
def test_dtype_and_precision_are_not_combined():
    torch.manual_seed(0)
    codec = codec_in(EncodecModel(EncodecConfig(n_filters=4, dimension=16)).eval(), "bf16")
    with pytest.raises(ValueError, match="choose one of the two"):
        codec.to(dtype=torch.bfloat16)


@pytest.mark.parametrize("precision", CPU_MODES)
def test_tokens_carry_their_mode_and_decode_in_any_mode(narrow, precision, tmp_path):
    codec = codec_in(narrow, precision)
    audio = support.speech_like(24_000, 1, 0.3)[None]
    tokens = codec.encode(audio)
    assert tokens.precision == precision and f"precision={precision}" in repr(tokens)
    assert tokens[0].precision == precision and tokens.to("cpu").precision == precision
    tokens.save(tmp_path / "t.safetensors")
    assert type(tokens).load(tmp_path / "t.safetensors") == tokens
    assert codec_in(narrow, "exact").decode(tokens).shape == (1, 1, audio.shape[-1])
    exact = codec_in(narrow, "exact").encode(audio)
    joined = concatenate([exact, tokens], axis=0)
    assert joined.precision == ("exact" if precision == "exact" else "mixed")


def test_quality_of_exact_against_itself_is_perfect(codec24, speech):
    exact = Networks(codec24.model, "exact")
    q = compare(exact, exact, speech, 8)
    assert q.agreement == [1.0] * 8 and q.excess_distortion == 0.0 and math.isinf(q.decoder_snr_db)
    assert q.qualifies


@pytest.mark.skipif(not cpu_has_bf16(), reason="no CPU bf16")
def test_quality_of_bf16_on_fixed_inputs(codec24, speech):
    """On the seeded random model (BENCHMARKS.md) bf16 moves tokens (excess distortion a few %,
    decoder SNR near 38 dB) but stays far from garbage."""
    q = compare(Networks(codec24.model, "exact"), Networks(codec24.model, "bf16"), speech, 8)
    assert 0 < q.excess_distortion < 0.15
    assert 30 < q.decoder_snr_db < 60
    assert q.agreement[0] > 0.25
    assert not q.qualifies


@pytest.mark.parametrize("precision", CPU_MODES)
def test_cpu_batch_invariance_bitwise(narrow, precision):
    codec = codec_in(narrow, precision)
    rng = np.random.default_rng(3)
    batch = torch.stack([support.speech_like(24_000, 1, 0.08, 20 + i) for i in range(64)])
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


def test_exact_networks_are_the_modules_on_cpu(codec24, speech):
    """exact on CPU runs the reference arithmetic (parity tests cover the whole codec)."""
    with torch.inference_mode():
        assert torch.equal(Networks(codec24.model, "exact").encode(speech[:1]), codec24.model.encoder(speech[:1]))
