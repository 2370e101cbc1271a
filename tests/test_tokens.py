"""Tokens survive use: immutable, validated, indexed, sliced, concatenated, moved, compared, saved."""

import json
import os

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from fastencodec import Tokens
from fastencodec.tokens import _FORMAT, PAD
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


@pytest.mark.slow  # 23 s: CI runs it, the developer loop does not
def test_many_short_items_encode_in_linear_time(codec24):
    import time

    items = [np.full(1, 0.1, np.float32)] * 400
    start = time.perf_counter()
    tokens = codec24.encode(items)
    small = time.perf_counter() - start
    start = time.perf_counter()
    codec24.encode(items * 4)
    assert tokens.shape == (400, 8, 1)
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


def test_tokens_own_their_codes_and_scales(codec24, codec48):
    """The caller's arrays stay the caller's; writing into a torch Tokens' codes is caught, not decoded."""
    audio = speech_like(24_000, 1, 0.3)
    codes = np.asarray(codec24.encode(audio.numpy())).copy()
    tokens = Tokens(codes, (7_200,), None, codec24.model_id, layout=codec24.layout)
    codes[0, 0, 0] = PAD
    assert tokens.codes[0, 0, 0] != PAD and not np.asarray(tokens).flags.writeable
    torch_tokens = codec24.encode(audio)
    assert not torch_tokens.numpy().flags.writeable  # a CPU tensor's numpy() shares its memory
    decoded = codec24.decode(torch_tokens)
    torch_tokens.codes[0, 0, 0] = (torch_tokens.codes[0, 0, 0] + 1) % 1024
    with pytest.raises(ValueError, match="in place"):
        codec24.decode(torch_tokens)
    scaled = codec48.encode(speech_like(48_000, 2, 0.2)[None])
    scaled.scales.mul_(2)
    with pytest.raises(ValueError, match="in place"):
        scaled[0]
    assert codec24.decode(codec24.encode(audio)).equal(decoded)


def test_integer_and_array_indexes(batch24):
    _, tokens = batch24
    assert tokens[np.int64(1)] == tokens[1] and tokens[np.int64(0), :, :2 ** 30] == tokens[0]
    np.testing.assert_array_equal(tokens[np.array([0, 1]), ...], np.asarray(tokens))
    np.testing.assert_array_equal(tokens[[1, 0]], np.asarray(tokens)[[1, 0]])
    for out_of_range in (2, -3, np.int64(5)):
        with pytest.raises(IndexError, match="out of range"):
            tokens[out_of_range]
    assert tokens[-2] == tokens[0]


def test_torch_scales_stay_float32_and_move(codec48):
    audio = speech_like(48_000, 2, 0.3)[None]
    exact = codec48.encode(audio)
    half = codec48.encode(audio.to(torch.bfloat16))
    assert exact.scales.dtype == half.scales.dtype == torch.float32
    moved = Tokens(exact.numpy(), exact.lengths, exact.scales, exact.model_id, layout=exact.layout).to("cpu")
    assert moved == exact and moved.scales.dtype == torch.float32


def test_load_refuses_incomplete_metadata_and_save_is_atomic(tmp_path, monkeypatch, batch24):
    path = tmp_path / "t.safetensors"
    save_file({"codes": np.zeros((1, 2, 3), np.int64)}, path, metadata={"tokens": json.dumps({"format": _FORMAT})})
    with pytest.raises(ValueError, match="metadata"):
        Tokens.load(path)
    malformed = {"format": _FORMAT, "lengths": 5, "pieces": None, "model_id": "m"}
    save_file({"codes": np.zeros((1, 2, 3), np.int64)}, path, metadata={"tokens": json.dumps(malformed)})
    with pytest.raises(ValueError, match="metadata"):
        Tokens.load(path)
    _, tokens = batch24
    tokens.save(path)

    def crash(*args):  # dies just before the new file would replace the old one
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(ValueError, match="disk full"):
        tokens[1].save(path)
    assert Tokens.load(path) == tokens and [p.name for p in tmp_path.iterdir()] == ["t.safetensors"]
