"""Stateful streaming (24 kHz causal and 32 kHz centred models): chunked streams equal offline encode/decode."""

from dataclasses import replace

import numpy as np
import psutil
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastencodec import EnCodec, EncodecConfig
from fastencodec.nn.config import META_32KHZ
from fastencodec.nn.layers import Conv1d
from fastencodec.nn.model import EncodecModel
from fastencodec.streaming.layers import streamer
from tests.support import assert_audio_close, assert_same_codes, speech_like, tiny_codec

HOP = 320
AUDIO_TOL = 1e-4  # max abs error relative to the offline output's peak


@pytest.fixture(scope="module")
def tiny32():
    """A narrow model of the 32 kHz (MusicGen) architecture: centred convolutions, no segments."""
    cfg = replace(META_32KHZ, n_filters=4, dimension=16, codebook_size=64)
    torch.manual_seed(1)
    model = EncodecModel(cfg)
    with torch.no_grad():
        model.quantizer.embed.normal_(0, 0.3)
    model.quantizer.refresh()
    return EnCodec(model.eval().requires_grad_(False))


def run_stream(codec, audio, sizes, bandwidth):
    """Push ``audio [B, C, n]`` in pieces of ``sizes`` (then the rest) through both streams."""
    enc, dec = codec.stream_encoder(bandwidth), codec.stream_decoder()
    codes, out, pos = [], [], 0
    for size in [*sizes, audio.shape[-1]]:
        piece = enc.push(audio[..., pos : pos + size])
        pos += size
        codes.append(piece)
        out.append(dec.push(piece))
    codes.append(enc.flush())
    out += [dec.push(codes[-1]), dec.flush()]
    assert enc.samples == audio.shape[-1] and enc.frames == dec.frames
    return np.concatenate(codes, axis=-1), np.concatenate(out, axis=-1)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    length=st.one_of(st.integers(1, 3 * HOP), st.integers(3 * HOP, 40_000)),
    batch=st.integers(1, 2),
    bandwidth=st.sampled_from([1.5, 6.0, 24.0]),
    sizes=st.lists(st.one_of(st.integers(1, 400), st.integers(400, 72_000)), min_size=1, max_size=12),
    seed=st.integers(0, 100),
)
def test_random_chunks_equal_offline(codec24, length, batch, bandwidth, sizes, seed):
    audio = torch.stack([speech_like(24_000, 1, length / 24_000 + 0.01, seed + b)[:, :length] for b in range(batch)])
    audio = audio.numpy()
    codes, decoded = run_stream(codec24, audio, sizes, bandwidth)
    offline = codec24.encode(audio, bandwidth=bandwidth)
    assert_same_codes(codec24, codes, offline.codes, audio)
    # the decoder stream gives decode() of the same codes: frames * hop samples
    assert_audio_close(decoded, codec24.decode(codes))
    assert decoded.shape == (batch, 1, -(-length // HOP) * HOP)


@settings(max_examples=12, deadline=None)
@given(
    length=st.one_of(st.integers(1, 2_000), st.integers(2_000, 50_000)),
    batch=st.integers(1, 2),
    sizes=st.lists(st.one_of(st.integers(1, 700), st.integers(700, 40_000)), min_size=1, max_size=10),
    seed=st.integers(0, 100),
)
def test_centred_model_streams_with_look_ahead(tiny32, length, batch, sizes, seed):
    """The 32 kHz architecture looks ahead (centred convolutions); its streams still equal offline."""
    audio = torch.stack([speech_like(32_000, 1, length / 32_000 + 0.01, seed + b)[:, :length] for b in range(batch)])
    audio = audio.numpy()
    codes, decoded = run_stream(tiny32, audio, sizes, 2.2)
    offline = tiny32.encode(audio)
    assert_same_codes(tiny32, codes, offline.codes, audio)
    assert_audio_close(decoded, tiny32.decode(codes))


def test_frame_by_frame_latency(codec24):
    """After the start-up, each frame's token comes with the push of its last sample, and its audio
    with the push of its token."""
    audio = speech_like(24_000, 1, 0.5).numpy()
    enc, dec = codec24.stream_encoder(6.0), codec24.stream_decoder()
    got = [enc.push(audio[:, t * HOP : (t + 1) * HOP]).shape[-1] for t in range(audio.shape[-1] // HOP)]
    assert got[:7] == [0] * 6 + [7] and set(got[7:]) == {1}
    assert enc.push(audio[:, : HOP - 1]).shape[-1] == 0  # a frame short of one sample gives nothing
    samples = [dec.push(np.zeros((1, 8, 1), dtype=np.int64)).shape[-1] for _ in range(12)]
    assert samples == [0] * 6 + [7 * HOP] + [HOP] * 5


def test_torch_in_torch_out_and_layouts(codec24):
    audio = speech_like(24_000, 1, 0.3)[0]
    enc = codec24.stream_encoder(3.0)
    codes = torch.cat([enc.push(audio[:5000]), enc.push(audio[5000:][None])], dim=-1)
    assert isinstance(codes, torch.Tensor) and codes.dtype == torch.int64
    codes = torch.cat([codes, enc.flush()], dim=-1)
    assert torch.equal(codes, codec24.encode(audio[None], bandwidth=3.0).codes)
    dec = codec24.stream_decoder()
    out = torch.cat([dec.push(codes[0]), dec.flush()], dim=-1)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.shape == (1, 1, codes.shape[-1] * HOP)


def test_stereo_input_is_mixed_down_like_encode(codec24):
    stereo = speech_like(24_000, 2, 0.4).numpy()[None]
    enc = codec24.stream_encoder()
    codes = np.concatenate([enc.push(stereo[..., :3000]), enc.push(stereo[..., 3000:]), enc.flush()], axis=-1)
    assert_same_codes(codec24, codes, codec24.encode(stereo).codes, stereo)


def test_bad_input_leaves_stream_usable(codec24):
    audio = speech_like(24_000, 1, 0.4).numpy()
    enc = codec24.stream_encoder(6.0)
    first = enc.push(audio[:, :4000])
    with pytest.raises(ValueError, match="2 channels, but the stream started with batch 1 with 1"):
        enc.push(np.zeros((1, 2, 100), dtype=np.float32))
    with pytest.raises(ValueError, match="batch 3"):
        enc.push(np.zeros((3, 100), dtype=np.float32))
    bad = audio[:, 4000:5000].copy()
    bad[0, 10] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        enc.push(bad)
    with pytest.raises(ValueError, match="floating-point"):
        enc.push(np.zeros(100, dtype=np.int16))
    rest = enc.push(audio[:, 4000:])
    codes = np.concatenate([first, rest, enc.flush()], axis=-1)
    assert np.array_equal(codes, codec24.encode(audio, bandwidth=6.0).codes)
    with pytest.raises(ValueError, match="reset"):
        enc.push(audio)
    with pytest.raises(ValueError, match="reset"):
        enc.flush()
    enc.reset()
    again = np.concatenate([enc.push(audio), enc.flush()], axis=-1)
    assert np.array_equal(again, codes)


def test_decoder_bad_codes(codec24, meta48):
    dec = codec24.stream_decoder()
    good = np.random.default_rng(0).integers(0, 1024, (1, 8, 10))
    out = dec.push(good[..., :4])
    with pytest.raises(ValueError, match="4 codebooks, but the stream started with batch 1 with 8"):
        dec.push(good[:, :4])
    with pytest.raises(ValueError, match="1 to 32"):
        dec.push(np.zeros((1, 33, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="out of range"):
        dec.push(np.full((1, 8, 2), 1024))
    with pytest.raises(ValueError, match="integers"):
        dec.push(good.astype(np.float32))
    other = EnCodec.from_pretrained(meta48[1])
    with pytest.raises(ValueError, match="another model"):
        dec.push(other.encode(np.zeros((1, 2, 4800), dtype=np.float32)))
    out = np.concatenate([out, dec.push(good[..., 4:]), dec.flush()], axis=-1)
    assert_audio_close(out, codec24.decode(good))
    with pytest.raises(ValueError, match="reset"):
        dec.push(good)
    with pytest.raises(ValueError, match="cannot stream"):
        other.stream_encoder()
    with pytest.raises(ValueError, match="cannot stream"):
        other.stream_decoder()


def test_empty_pushes_and_empty_stream(codec24):
    enc = codec24.stream_encoder(1.5)
    assert enc.flush().shape == (0, 2, 0)
    enc.reset()
    assert enc.push(np.zeros(0, dtype=np.float32)).shape == (1, 2, 0)
    audio = speech_like(24_000, 1, 0.1).numpy()
    codes = np.concatenate([enc.push(audio), enc.push(audio[:, :0]), enc.flush()], axis=-1)
    assert np.array_equal(codes, codec24.encode(audio, bandwidth=1.5).codes)
    dec = codec24.stream_decoder()
    assert dec.flush().shape == (0, 1, 0)
    enc.reset()
    enc.push(audio[:, :0])  # a stream of nothing but an empty push ends with no frames
    assert enc.flush().shape == (1, 2, 0)


def test_caller_may_refill_its_buffer_between_pushes(codec24):
    """Audio callbacks reuse one buffer; the stream keeps copies of what it still needs, not views."""
    audio = speech_like(24_000, 1, 0.6).numpy()
    enc, buffer, codes = codec24.stream_encoder(6.0), np.empty((1, 700), dtype=np.float32), []
    bounds = [0, 3, *range(703, audio.shape[-1], 700), audio.shape[-1]]  # 3 samples first: too few to start
    for start, end in zip(bounds, bounds[1:]):
        buffer[:, : end - start] = audio[:, start:end]
        codes.append(enc.push(buffer[:, : end - start]))
        buffer[:] = np.nan  # the caller reuses its buffer
    codes.append(enc.flush())
    assert_same_codes(codec24, np.concatenate(codes, axis=-1), codec24.encode(audio, bandwidth=6.0).codes, audio)


def test_streams_follow_weights_changed_in_place():
    """Short pushes use a cached transposed copy of the LSTM weights; loading new weights into the
    same tensors must not leave a new stream on the old ones."""
    codec = tiny_codec()
    audio = speech_like(24_000, 1, 0.3).numpy()
    first = run_stream(codec, audio[None], [320] * 20, 6.0)[0]
    torch.manual_seed(5)
    new_weights = {name: torch.randn_like(value) * 0.1 for name, value in codec.model.state_dict().items()}
    codec.model.load_state_dict(new_weights)
    codec.model.quantizer.refresh()
    codes = run_stream(codec, audio[None], [320] * 20, 6.0)[0]
    assert_same_codes(codec, codes, codec.encode(audio, bandwidth=6.0).codes, audio)
    assert not np.array_equal(codes, first)


@pytest.mark.parametrize(("kernel", "stride", "pad_mode"), [(1, 2, "reflect"), (3, 4, "reflect"), (4, 2, "circular")])
def test_convs_a_stream_cannot_rebuild_are_refused(kernel, stride, pad_mode):
    conv = Conv1d(EncodecConfig(pad_mode=pad_mode), 1, 1, kernel, stride)
    with pytest.raises(ValueError, match="cannot stream"):
        streamer(conv)


def state_bytes(value, seen=None) -> int:
    """Bytes of memory a stream's state keeps alive (its layers' buffers, tails, LSTM states: the
    whole storage behind each tensor, since a small view can hold a large one), found by walking
    its objects; the model's own modules (weights) are not counted."""
    seen = set() if seen is None else seen
    if isinstance(value, torch.Tensor):
        storage = value.untyped_storage()
        if storage.data_ptr() in seen:
            return 0
        seen.add(storage.data_ptr())
        return storage.nbytes()
    if id(value) in seen or isinstance(value, (torch.nn.Module, EnCodec)):
        return 0
    seen.add(id(value))
    if isinstance(value, (list, tuple, set)):
        return sum(state_bytes(v, seen) for v in value)
    if isinstance(value, dict):
        return sum(state_bytes(v, seen) for v in value.values())
    if hasattr(value, "__dict__"):
        return sum(state_bytes(v, seen) for v in vars(value).values())
    return 0


@pytest.mark.slow
@pytest.mark.parametrize("model", ["causal 24 kHz", "centred 32 kHz"])
def test_ten_minute_stream_memory_is_bounded(model, request):
    """10 minutes pushed in 10 s chunks: the stream's state stays as large as after the first
    minute, and the process's resident memory does not grow with the length.

    A narrow model of the same architecture keeps this quick; streaming state does not depend
    on the width (a few frames per layer). Resident size is a coarse check: the allocator's free
    memory comes and goes (swings of up to 40 MiB between pushes), so the medians of minutes
    1-5 and 6-10 are compared with a generous bound.
    """
    codec = tiny_codec() if model == "causal 24 kHz" else request.getfixturevalue("tiny32")
    rate, enc = codec.sample_rate, codec.stream_encoder()
    chunk = (0.1 * np.random.default_rng(0).standard_normal(10 * rate)).astype(np.float32)
    process = psutil.Process()
    rss, state = [], []
    for _ in range(60):
        enc.push(chunk)
        rss.append(process.memory_info().rss)
        state.append(state_bytes(enc))
    assert enc.samples == 600 * rate and enc.frames >= 600 * codec.frame_rate - 5
    assert 0 < max(state) == max(state[:6]) < 256 << 10, f"stream state grew to {max(state)} bytes"
    growth = np.median(rss[36:]) - np.median(rss[6:36])
    assert growth < 32 << 20, f"resident memory grew {growth / 2**20:.1f} MiB from minutes 1-5 to 6-10"
