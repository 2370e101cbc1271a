"""Input types, layouts, channel rules, token objects and the seed's examples."""

import numpy as np
import pytest
import torch

from fastencodec.primitives import resample
from fastencodec.tokens import Tokens
from tests.support import speech_like


class ForeignArray:
    """Stands in for an MLX (or any) array: only convertible through ``__array__``."""

    def __init__(self, data):
        self._data = np.asarray(data)

    def __array__(self, dtype=None, copy=None):
        return self._data if dtype is None else self._data.astype(dtype)


def test_properties(codec24, codec48):
    assert (codec24.sample_rate, codec24.channels, codec24.frame_rate, codec24.hop_length) == (24_000, 1, 75, 320)
    assert codec24.bandwidths == [1.5, 3.0, 6.0, 12.0, 24.0] and codec24.default_bandwidth == 6.0
    assert [codec24.codebooks_for(b) for b in codec24.bandwidths] == [2, 4, 8, 16, 32]
    assert codec24.codebook_size == 1024 and codec24.num_codebooks == 32
    assert (codec48.sample_rate, codec48.channels, codec48.frame_rate, codec48.num_codebooks) == (48_000, 2, 150, 16)


def test_numpy_in_numpy_out(codec24):
    audio = speech_like(24_000, 1, 0.5).numpy()[0]
    tokens = codec24.encode(audio)
    assert isinstance(tokens, Tokens) and isinstance(tokens.codes, np.ndarray)
    assert tokens.codes.dtype == np.int64 and tokens.shape == (1, 8, 38)
    assert tokens.codes.min() >= 0 and tokens.codes.max() < 1024
    out = codec24.decode(tokens)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (1, 1, 12_000)


def test_torch_in_torch_out_and_same_tokens(codec24):
    audio = speech_like(24_000, 1, 0.5)
    tokens = codec24.encode(audio, bandwidth=3.0)
    assert isinstance(tokens.codes, torch.Tensor) and tokens.codes.dtype == torch.long
    out = codec24.decode(tokens)
    assert isinstance(out, torch.Tensor) and out.device == audio.device and out.shape == (1, 1, 12_000)
    np.testing.assert_array_equal(np.asarray(codec24.encode(audio.numpy(), bandwidth=3.0)), tokens.codes.numpy())
    assert codec24.decode(codec24.encode(audio.double(), bandwidth=3.0)).dtype == torch.float32
    assert codec24.encode_continuous(audio.double()).dtype == torch.float64


def test_foreign_array_and_python_lists(codec24):
    audio = speech_like(24_000, 1, 0.3).numpy()
    expected = np.asarray(codec24.encode(audio))
    np.testing.assert_array_equal(np.asarray(codec24.encode(ForeignArray(audio))), expected)
    np.testing.assert_array_equal(np.asarray(codec24.encode(audio.tolist())), expected)
    assert isinstance(codec24.decode(ForeignArray(expected)), np.ndarray)


def test_layouts_1d_2d_3d(codec24):
    a, b = speech_like(24_000, 1, 0.2, seed=1)[0], speech_like(24_000, 1, 0.2, seed=2)[0]
    one = np.asarray(codec24.encode(a))
    batch2d = np.asarray(codec24.encode(torch.stack([a, b])))  # 2-D is [batch, samples]
    batch3d = np.asarray(codec24.encode(torch.stack([a, b])[:, None]))
    assert batch2d.shape[0] == 2
    np.testing.assert_array_equal(batch2d, batch3d)
    np.testing.assert_array_equal(batch2d[:1], one)


def test_channel_rules(codec24, codec48):
    stereo = speech_like(24_000, 2, 0.3)
    np.testing.assert_array_equal(
        np.asarray(codec24.encode(stereo[None])), np.asarray(codec24.encode(stereo.mean(0, keepdim=True)[None]))
    )
    mono = speech_like(48_000, 1, 0.3)
    tokens = codec48.encode(mono)
    np.testing.assert_array_equal(np.asarray(tokens), np.asarray(codec48.encode(mono.expand(2, -1)[None])))
    assert codec48.decode(tokens).shape == (1, 2, mono.shape[-1])
    surround = speech_like(48_000, 3, 0.3)
    np.testing.assert_array_equal(
        np.asarray(codec48.encode(surround[None])), np.asarray(codec48.encode(surround.mean(0)))
    )


def test_seed_chunking_example_numpy_and_torch(codec24):
    """The seed's manual chunking loop, unchanged but for the imports (numpy or torch as ``mx``)."""
    for mx, audio in ((np, speech_like(24_000, 1, 2.5).numpy()), (torch, speech_like(24_000, 1, 2.5))):
        chunk_size = 24000 * 1  # the seed uses 10 s chunks; 1 s keeps the test short
        all_tokens = []

        for i in range(0, audio.shape[-1], chunk_size):
            chunk = audio[:, i : i + chunk_size]
            tokens = codec24.encode(chunk)
            all_tokens.append(tokens)

        all_tokens = mx.concatenate(all_tokens, axis=-1)
        assert all_tokens.shape == (1, 8, 75 + 75 + 38)
        reconstructed = codec24.decode(all_tokens)
        # the concatenation keeps each chunk's length: the decoded signal is exactly as long as the input
        assert type(reconstructed) is type(audio) and reconstructed.shape == (1, 1, audio.shape[-1])


def test_seed_quick_start_and_features(codec24):
    audio = np.random.default_rng(0).normal(size=(1, 24000 * 2)).astype(np.float32) * 0.1
    tokens = codec24.encode(audio)
    assert tokens.shape == (1, 8, 150)
    assert codec24.decode(tokens).shape == (1, 1, 48_000)
    tokens_low, tokens_high = codec24.encode(audio, bandwidth=1.5), codec24.encode(audio, bandwidth=24.0)
    assert tokens_low.shape[1] == 2 and tokens_high.shape[1] == 32
    np.testing.assert_array_equal(np.asarray(tokens_high)[:, :2], np.asarray(tokens_low))
    embeddings = codec24.encode_continuous(audio)
    assert embeddings.shape == (1, 128, 150) and isinstance(embeddings, np.ndarray)
    audio_24k = resample(np.random.default_rng(1).normal(size=(1, 16000)).astype(np.float32), 16000, 24000)
    assert codec24.encode(audio_24k).shape == (1, 8, 75)


def test_decode_fewer_codebooks_and_plain_codes(codec24):
    audio = speech_like(24_000, 1, 0.4)
    codes = np.asarray(codec24.encode(audio, bandwidth=6.0))
    coarse = codec24.decode(codes[:, :2])
    expected = codec24.decode(codec24.encode(audio, bandwidth=1.5)).numpy()[..., :9600]
    np.testing.assert_allclose(coarse, expected, atol=1e-6)
    assert codec24.decode(codes[0]).shape == (1, 1, codes.shape[-1] * 320)


def test_plain_codes_of_unequal_batch_decode_by_padding(codec24):
    items = [speech_like(24_000, 1, s, seed=i)[0].numpy() for i, s in enumerate((0.2, 0.35))]
    tokens = codec24.encode(items)
    plain = np.asarray(tokens)
    assert (plain[0, :, 15:] == -1).all() and (plain[1] >= 0).all()
    decoded = codec24.decode(plain)
    via_tokens = codec24.decode(tokens)
    np.testing.assert_allclose(decoded[0, :, : items[0].shape[-1]], via_tokens[0], atol=1e-6)
    assert (decoded[0, :, 15 * 320 :] == 0).all()


def test_48khz_plain_codes_need_scales_and_lengths(codec48):
    audio = speech_like(48_000, 2, 1.3)[None]
    tokens = codec48.encode(audio, bandwidth=6.0)
    plain = np.asarray(tokens)
    with pytest.raises(ValueError, match="lengths="):
        codec48.decode(plain)
    with pytest.raises(ValueError, match="scales="):
        codec48.decode(plain, lengths=tokens.lengths)
    np.testing.assert_allclose(
        codec48.decode(plain, scales=tokens.scales, lengths=tokens.lengths), codec48.decode(tokens).numpy(), atol=1e-6
    )


def test_tokens_behave_as_codes(codec24):
    tokens = codec24.encode(speech_like(24_000, 1, 0.2))
    assert len(tokens) == 1 and tokens.ndim == 3 and tokens.dtype == torch.long
    assert torch.equal(tokens[0], tokens.codes[0])
    assert torch.equal(torch.cat([tokens, tokens], dim=-1), torch.cat([tokens.codes, tokens.codes], dim=-1))
    assert "encodec_24khz" in repr(tokens)
