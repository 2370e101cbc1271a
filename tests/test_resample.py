"""Tests for fastencodec.io.resample."""

import numpy as np
import pytest
import torch

from fastencodec.io.resample import output_length
from fastencodec.primitives import StreamResampler, resample


def sine(freq, sample_rate, samples, channels=1):
    t = np.arange(samples) / sample_rate
    return np.stack([np.sin(2 * np.pi * freq * (c + 1) * t) for c in range(channels)]).astype(np.float32) * 0.5


@pytest.mark.parametrize("orig, target", [(44100, 24000), (16000, 48000), (48000, 24000), (22050, 44100)])
def test_sine_is_preserved(orig, target):
    audio = sine(440, orig, orig // 2)
    out = resample(audio, orig, target)
    assert out.shape == (1, output_length(audio.shape[-1], orig, target)) and out.dtype == np.float32
    expected = sine(440, target, out.shape[-1])
    middle = slice(100, -100)  # away from the edges, which see the implicit zero padding
    np.testing.assert_allclose(out[:, middle], expected[:, middle], atol=1e-3)


@pytest.mark.parametrize("samples", [1, 2, 3, 7, 441, 1000, 44101])
def test_output_length_rule(samples):
    for orig, target in [(44100, 24000), (16000, 8000), (8000, 44100), (3, 2)]:
        out = resample(np.zeros(samples, dtype=np.float32), orig, target)
        assert out.shape == (output_length(samples, orig, target),)
        assert output_length(samples, orig, target) == int(np.floor(samples * target / orig + 0.5))


def test_layouts_batch_rows_independently():
    audio = np.random.default_rng(0).standard_normal((2, 3, 1000))
    out = resample(audio, 16000, 24000)
    assert out.shape == (2, 3, 1500) and out.dtype == np.float64
    np.testing.assert_allclose(out[1, 2], resample(audio[1, 2], 16000, 24000), atol=1e-12)
    # Other inputs go through numpy.asarray: Python floats are float64, integers become float32.
    assert resample(audio[0, 0].tolist(), 16000, 24000).dtype == np.float64
    assert resample([0, 1, 2, 3] * 10, 16000, 24000).dtype == np.float32


def test_torch_in_torch_out_with_dtype():
    audio = torch.randn(2, 4800, dtype=torch.float64)
    out = resample(audio, 48000, 16000)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64 and out.shape == (2, 1600)
    np.testing.assert_allclose(out.numpy(), resample(audio.numpy(), 48000, 16000))
    half = resample(audio.to(torch.float16), 48000, 16000)
    assert half.dtype == torch.float16 and half.device == audio.device
    assert resample(torch.ones(100, dtype=torch.int16), 100, 50).dtype == torch.float32


def test_same_rate_returns_a_copy():
    audio = np.ones((1, 10), dtype=np.int16)
    out = resample(audio, 24000, 24000)
    assert out is not audio and out.dtype == np.int16
    np.testing.assert_array_equal(out, audio)
    tensor = torch.ones(10)
    copied = resample(tensor, 8000, 8000.0)
    assert copied is not tensor and torch.equal(copied, tensor)


@pytest.mark.parametrize(
    "audio, orig, target, message",
    [
        (np.zeros(10), 0, 16000, "orig_sr"),
        (np.zeros(10), 16000, -1, "target_sr"),
        (np.zeros(10), 44100.5, 16000, "orig_sr"),
        (np.zeros(10), True, 16000, "orig_sr"),
        (np.zeros(10), 16000, float("nan"), "target_sr"),
        (np.array([0.0, np.nan]), 16000, 8000, "NaN"),
        (torch.tensor([0.0, float("inf")]), 16000, 8000, "NaN"),
        (np.zeros((2, 0)), 16000, 8000, "samples"),
        (np.float32(1.0), 16000, 8000, "samples"),
        (np.zeros(4, dtype=complex), 16000, 8000, "real"),
    ],
)
def test_rejects_bad_input(audio, orig, target, message):
    with pytest.raises(ValueError, match=message):
        resample(audio, orig, target)


@pytest.mark.parametrize("orig, target", [(44100, 24000), (16000, 48000), (48000, 48000)])
def test_stream_matches_one_shot(orig, target):
    rng = np.random.default_rng(1)
    audio = (rng.standard_normal((2, orig)) * 0.3).astype(np.float32)
    stream = StreamResampler(orig, target, channels=2)
    cuts = np.sort(rng.integers(0, audio.shape[1], 12))
    outputs = [stream.push(piece) for piece in np.split(audio, cuts, axis=1)] + [stream.flush()]
    streamed = np.concatenate(outputs, axis=1)
    one_shot = resample(audio, orig, target)
    assert streamed.shape == one_shot.shape
    # Measured: soxr's stream and one-shot paths give identical samples.
    assert np.abs(streamed - one_shot).max() <= 1e-6


def test_stream_validation():
    stream = StreamResampler(16000, 8000, channels=1)
    with pytest.raises(ValueError, match="shape"):
        stream.push(np.zeros((2, 10)))
    with pytest.raises(ValueError, match="NaN"):
        stream.push(np.array([[np.inf]]))
    stream.flush()
    with pytest.raises(ValueError, match="after flush"):
        stream.push(np.zeros((1, 10)))
    with pytest.raises(ValueError, match="channels"):
        StreamResampler(16000, 8000, channels=0)
