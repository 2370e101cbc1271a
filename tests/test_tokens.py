"""Tokens survive use: immutable, validated, indexed, sliced, concatenated, moved, compared, saved."""

import numpy as np
import pytest
import torch

from fastencodec import Tokens
from tests.support import speech_like


@pytest.fixture(scope="module")
def batch24(codec24):
    items = [speech_like(24_000, 1, s, seed=i)[0].numpy() for i, s in enumerate((0.5, 0.3))]
    return items, codec24.encode(items, bandwidth=3.0)


def test_immutable_and_validated(codec24, batch24):
    _, tokens = batch24
    with pytest.raises(AttributeError):
        tokens.lengths = (1, 2)
    with pytest.raises(ValueError):
        tokens.codes[0, 0, 0] = 5  # the NumPy codes are read-only
    with pytest.raises(ValueError, match="frames"):
        Tokens(tokens.codes, (12_000, 10**12), None, tokens.model_id, layout=codec24.layout)
    with pytest.raises(ValueError, match="lengths"):
        Tokens(tokens.codes, (12_000,), None, tokens.model_id)


def test_index_items_and_codebooks(codec24, batch24):
    items, tokens = batch24
    first = tokens[0]
    assert isinstance(first, Tokens) and first.shape == tokens.shape[1:] and first.lengths == (12_000,)
    np.testing.assert_array_equal(codec24.decode(first)[0], codec24.decode(tokens)[0])
    second = tokens[1:]
    assert second.lengths == (7_200,) and second.frames == (23,)
    coarse = tokens[:, :1]
    assert coarse.shape[1] == 1 and codec24.decode(coarse)[1].shape == (1, 7_200)
    assert tokens.mask.shape == (2, 38) and tokens.mask[1].sum() == 23


def test_slice_frames_and_concatenate_along_time(codec24):
    audio = speech_like(24_000, 1, 1.0).numpy()
    tokens = codec24.encode(audio)
    head, tail = tokens[..., :30], tokens[..., 30:]
    assert head.lengths == (9_600,) and tail.lengths == (14_400,)
    joined = np.concatenate([head, tail], axis=-1)
    assert isinstance(joined, Tokens) and joined.lengths == (24_000,)
    np.testing.assert_array_equal(joined.codes, tokens.codes)
    assert codec24.decode(joined).shape == (1, 1, 24_000)


def test_concatenate_along_batch_pads(codec24, batch24):
    _, tokens = batch24
    both = torch.cat([tokens[1:], tokens[:1]], dim=0)
    assert both.lengths == (7_200, 12_000) and both.shape == (2, 4, 38)
    assert (np.asarray(both)[0, :, 23:] == -1).all()
    np.testing.assert_array_equal(codec24.decode(both)[1], codec24.decode(tokens)[0])


def test_seed_chunk_loop_on_48khz_still_decodes(codec48):
    """The seed's recipe (encode chunks, concatenate along time) keeps each chunk's segments and scales."""
    audio = speech_like(48_000, 2, 2.5)[None].numpy()
    chunks = [codec48.encode(audio[..., i : i + 48_000]) for i in range(0, audio.shape[-1], 48_000)]
    joined = np.concatenate(chunks, axis=-1)
    assert joined.pieces == ((48_000, 48_000, 24_000),)
    decoded = codec48.decode(joined)
    assert decoded.shape == (1, 2, 120_000)
    np.testing.assert_allclose(decoded[..., 48_000:96_000], codec48.decode(chunks[1]), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="segment boundary"):
        codec48.encode(audio)[..., 10:]


def test_to_device_equality_and_save_load(tmp_path, codec48):
    tokens = codec48.encode(speech_like(48_000, 2, 1.1)[None])
    moved = tokens.to("cpu")
    assert isinstance(moved.codes, torch.Tensor) and moved == tokens and moved != tokens[..., 150:]
    tokens.save(tmp_path / "t.safetensors")
    loaded = Tokens.load(tmp_path / "t.safetensors")
    assert loaded == tokens
    np.testing.assert_array_equal(codec48.decode(loaded), codec48.decode(tokens))
    (tmp_path / "bad.safetensors").write_bytes(b"not a tokens file")
    with pytest.raises(ValueError, match="not a"):
        Tokens.load(tmp_path / "bad.safetensors")


def test_forged_lengths_fail_fast(codec48):
    """A length of 10**12 samples (21 million segments) is refused before anything is allocated."""
    import time

    tokens = codec48.encode(speech_like(48_000, 2, 0.5)[None])
    start = time.perf_counter()
    with pytest.raises(ValueError, match="frames"):
        codec48.decode(np.asarray(tokens), scales=tokens.scales, lengths=[10**12])
    assert time.perf_counter() - start < 1.0


def test_many_short_items_encode_in_linear_time(codec24):
    import time

    items = [np.full(1, 0.1, np.float32)] * 4_000
    start = time.perf_counter()
    tokens = codec24.encode(items)
    small = time.perf_counter() - start
    start = time.perf_counter()
    codec24.encode(items * 4)
    assert tokens.shape == (4_000, 8, 1)
    assert time.perf_counter() - start < 4 * small * 2.5 + 1.0  # linear, with room for a noisy machine


def test_layout_rule_refuses_ambiguous_stereo(codec48, codec24):
    stereo = speech_like(48_000, 2, 0.2).numpy()
    with pytest.raises(ValueError, match="layout='channels' or layout='batch'"):
        codec48.encode(stereo)
    one = codec48.encode(stereo, layout="channels")
    assert one.shape[0] == 1 and codec48.decode(one).shape == (1, 2, 9_600)
    two = codec48.encode(stereo, layout="batch")
    assert two.shape[0] == 2
    np.testing.assert_array_equal(codec48.encode(stereo[None]).codes, one.codes)
    assert codec48.encode(stereo[:1]).shape[0] == 1  # [1, samples] reads the same either way
    assert codec24.encode(np.stack([stereo[0], stereo[1]])).shape[0] == 2  # mono model: [batch, samples]
