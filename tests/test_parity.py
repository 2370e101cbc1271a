"""Numerical parity with Meta's ``encodec`` 0.1.1 and with ``transformers.EncodecModel``."""

import pytest
import torch

from fastencodec.models import EnCodec
from tests.support import assert_audio_close, assert_codes_match, hf_run, meta_run, speech_like

pytestmark = pytest.mark.interop


@pytest.mark.parametrize("bandwidth", [1.5, 3.0, 6.0, 12.0, 24.0])
def test_meta_24khz_every_bandwidth(meta24, codec24, bandwidth):
    audio = speech_like(24_000, 1, 1.7)[None, :, : 24_000 + 11_117]  # not a multiple of the hop
    codes, _, ref_audio = meta_run(meta24[0], audio, bandwidth)
    tokens = codec24.encode(audio, bandwidth=bandwidth)
    assert tokens.shape == (1, codec24.codebooks_for(bandwidth), 110)
    assert_codes_match(tokens.codes, codes)
    assert_audio_close(codec24.decode(tokens), ref_audio)


@pytest.mark.parametrize("bandwidth", [3.0, 6.0, 12.0, 24.0])
def test_meta_48khz_every_bandwidth_three_segments(meta48, codec48, bandwidth):
    audio = speech_like(48_000, 2, 2.5)[None]  # segments of 48000, 48000 and 24960 samples
    codes, scales, ref_audio = meta_run(meta48[0], audio, bandwidth)
    tokens = codec48.encode(audio, bandwidth=bandwidth)
    assert tokens.shape == (1, bandwidth * 1000 // 1500, 150 + 150 + 78)
    assert_codes_match(tokens.codes, codes)
    torch.testing.assert_close(torch.as_tensor(tokens.scales), scales, rtol=1e-6, atol=0)
    assert_audio_close(codec48.decode(tokens), ref_audio)


def test_encode_continuous_matches_reference_encoder(meta24, codec24, meta48, codec48):
    audio = speech_like(24_000, 1, 0.9)[None]
    with torch.no_grad():
        ref = meta24[0].encoder(audio)
    assert_audio_close(codec24.encode_continuous(audio), ref)
    stereo = speech_like(48_000, 2, 0.7)[None]
    with torch.no_grad():
        scale = stereo.mean(1, keepdim=True).pow(2).mean(2, keepdim=True).sqrt() + 1e-8
        ref = meta48[0].encoder(stereo / scale)
    assert_audio_close(codec48.encode_continuous(stereo), ref)


def test_unequal_batch_matches_each_item_alone_24khz(meta24, codec24):
    items = [speech_like(24_000, 1, s, seed=i) for i, s in enumerate((0.5, 1.23, 0.81))]
    tokens = codec24.encode(items, bandwidth=6.0)
    decoded = codec24.decode(tokens)
    assert isinstance(decoded, list) and len(decoded) == 3
    for i, item in enumerate(items):
        codes, _, ref_audio = meta_run(meta24[0], item[None], 6.0)
        frames = codes.shape[-1]
        assert_codes_match(tokens.codes[i : i + 1, :, :frames], codes)
        assert (tokens.codes[i, :, frames:] == -1).all()
        assert decoded[i].shape == item.shape
        assert_audio_close(decoded[i][None], ref_audio)


def test_padded_batch_with_lengths_48khz(meta48, codec48):
    lengths = [50_000, 100_500, 30_000]
    padded = torch.zeros(3, 2, max(lengths))
    for i, n in enumerate(lengths):
        padded[i, :, :n] = speech_like(48_000, 2, n / 48_000, seed=10 + i)
    tokens = codec48.encode(padded, bandwidth=12.0, lengths=lengths)
    decoded = codec48.decode(tokens)
    assert decoded.shape == padded.shape
    for i, n in enumerate(lengths):
        codes, scales, ref_audio = meta_run(meta48[0], padded[i : i + 1, :, :n], 12.0)
        assert_codes_match(tokens.codes[i : i + 1, :, : codes.shape[-1]], codes)
        torch.testing.assert_close(tokens.scales[i : i + 1, : scales.shape[-1]], scales, rtol=1e-6, atol=0)
        assert_audio_close(decoded[i : i + 1, :, :n], ref_audio)
        assert (decoded[i, :, n:] == 0).all()


@pytest.mark.parametrize("bandwidth", [1.5, 3.0, 6.0, 12.0, 24.0])
def test_transformers_24khz(hf24, bandwidth):
    model, path = hf24
    codec = EnCodec.from_pretrained(path)
    audio = speech_like(24_000, 1, 1.1)[None, :, :26_001]
    codes, _, ref_audio = hf_run(model, audio, bandwidth)
    tokens = codec.encode(audio, bandwidth=bandwidth)
    assert_codes_match(tokens.codes, codes)
    assert_audio_close(codec.decode(tokens), ref_audio)


@pytest.mark.parametrize("bandwidth", [3.0, 6.0, 12.0, 24.0])
def test_transformers_48khz(hf48, bandwidth):
    model, path = hf48
    codec = EnCodec.from_pretrained(path)
    audio = speech_like(48_000, 2, 2.2)[None]
    codes, scales, ref_audio = hf_run(model, audio, bandwidth)
    tokens = codec.encode(audio, bandwidth=bandwidth)
    assert_codes_match(tokens.codes, codes)
    torch.testing.assert_close(torch.as_tensor(tokens.scales), scales, rtol=1e-5, atol=0)
    assert_audio_close(codec.decode(tokens), ref_audio)


@pytest.mark.slow
def test_transformers_32khz_musicgen_config(hf32):
    model, path = hf32
    codec = EnCodec.from_pretrained(path)
    assert (codec.sample_rate, codec.frame_rate, codec.codebook_size, codec.bandwidths) == (32_000, 50, 2048, [2.2])
    assert codec.default_bandwidth == 2.2 and codec.codebooks_for() == 4
    audio = speech_like(32_000, 1, 1.3)[None, :, :41_234]
    codes, _, ref_audio = hf_run(model, audio, 2.2)
    tokens = codec.encode(audio)
    assert tokens.shape == (1, 4, 65)
    assert_codes_match(tokens.codes, codes)
    assert_audio_close(codec.decode(tokens), ref_audio)
