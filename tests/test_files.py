"""The Python file API (compress/decompress, EcdcFile) and self-identifying .ecdc files."""

import copy
import dataclasses
import io
import warnings

import numpy as np
import pytest
import soundfile as sf
import torch

import fastencodec
from fastencodec import EcdcFile, EnCodec, ModelMismatchError, compress, decompress, read_ecdc
from fastencodec.formats.files import ClippingWarning
from fastencodec.io import load_audio
from tests.support import speech_like


def test_compress_accepts_arrays_paths_and_bytes(tmp_path, codec24):
    audio = speech_like(16_000, 2, 0.7).numpy()
    sf.write(tmp_path / "in.flac", audio.T, 16_000)
    from_array = compress(audio, model=codec24, sample_rate=16_000)
    from_path = compress(tmp_path / "in.flac", model=codec24)
    from_bytes = compress((tmp_path / "in.flac").read_bytes(), model=codec24)
    assert from_path == from_bytes
    assert len(from_array) == len(from_path)  # same length and header; FLAC rounds the samples to 16 bits
    compress(tmp_path / "in.flac", tmp_path / "out.ecdc", model=codec24)
    assert (tmp_path / "out.ecdc").read_bytes() == from_path
    expected = codec24.encode(load_audio(tmp_path / "in.flac", 24_000, 1)[None])
    np.testing.assert_array_equal(read_ecdc(from_path, codec24).tokens(codec24).codes, expected.codes)


def test_decompress_to_array_and_file(tmp_path, codec48):
    audio = speech_like(48_000, 2, 1.2).numpy()
    data = compress(audio, model=codec48, sample_rate=48_000, bandwidth=12.0)
    tokens = read_ecdc(data, codec48).tokens(codec48)
    out, rate = decompress(data, model=codec48)
    assert rate == 48_000
    np.testing.assert_array_equal(out, codec48.decode(tokens)[0])
    decompress(io.BytesIO(data), tmp_path / "x.wav", model=codec48, rate=16_000)
    assert sf.info(tmp_path / "x.wav").samplerate == 16_000
    resampled, rate = decompress(data, model=codec48, rate="original")
    assert rate == 48_000 and resampled.shape == out.shape


def test_ecdc_file_round_trip(codec48):
    tokens = codec48.encode(speech_like(48_000, 2, 1.1)[None], bandwidth=6.0)
    file = EcdcFile.from_tokens(tokens, codec48)
    assert file.header.fingerprint == codec48.fingerprint and len(file.segments) == 2
    again = read_ecdc(file.to_bytes(), codec48)
    assert again.tokens(codec48) == tokens


def test_foreign_fingerprint_refused_unless_forced(codec24):
    """A checkpoint of the same architecture and name but other weights (a fine-tune, say) is refused."""
    data = compress(speech_like(24_000, 1, 0.5).numpy(), model=codec24, sample_rate=24_000)
    other = EnCodec(copy.deepcopy(codec24.model))
    with torch.no_grad():
        other.model.quantizer.embed.mul_(1.01)
    other = EnCodec(other.model)  # a new fingerprint
    assert other.name == codec24.name and other.fingerprint != codec24.fingerprint
    with pytest.raises(ModelMismatchError, match=f"{codec24.fingerprint}.*{other.fingerprint}"):
        decompress(data, model=other)
    audio, _ = decompress(data, model=other, force_model=True)
    assert audio.shape == (1, 12_000)


def test_another_models_file_is_refused(codec24, codec48):
    data = compress(speech_like(24_000, 1, 0.3).numpy(), model=codec24, sample_rate=24_000)
    with pytest.raises(ModelMismatchError, match="coded with encodec_24khz, but the model given is encodec_48khz"):
        decompress(data, model=codec48)


def test_files_without_fingerprint_read_with_any_model_of_their_name(codec24):
    """Meta's files carry no fingerprint: they decode with whichever model of that name is given."""
    data = compress(speech_like(24_000, 1, 0.3).numpy(), model=codec24, sample_rate=24_000)
    file = read_ecdc(data, codec24)
    assert file.header.fingerprint == codec24.fingerprint
    plain = EcdcFile(dataclasses.replace(file.header, fingerprint=None), file.segments, file.bits_per_codebook)
    other = EnCodec(copy.deepcopy(codec24.model))
    with torch.no_grad():
        other.model.quantizer.embed.mul_(1.01)
    other = EnCodec(other.model)
    audio, _ = decompress(plain.to_bytes(), model=other)
    assert audio.shape == (1, 7_200)


def test_clipping_warns_with_count_and_rescale_avoids_it(tmp_path, codec48):
    data = compress(speech_like(48_000, 2, 0.5).numpy(), model=codec48, sample_rate=48_000)
    decoded, _ = decompress(data, model=codec48)
    loud = EnCodec(codec48.model)  # the same model, its decoder's output scaled to peak at 3 (a loud decode)
    decode_batch, gain = loud.engine.decode_batch, 3.0 / np.abs(decoded).max()
    loud.engine.decode_batch = lambda *args, **kwargs: decode_batch(*args, **kwargs) * gain
    with pytest.warns(ClippingWarning, match=r"^\d+ samples exceeded full scale"):
        decompress(data, tmp_path / "a.wav", model=loud, subtype="PCM_16")
    assert np.abs(sf.read(tmp_path / "a.wav", dtype="float32")[0]).max() == 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error", ClippingWarning)
        decompress(data, tmp_path / "b.wav", model=loud, subtype="PCM_16", rescale=True)
    rescaled = sf.read(tmp_path / "b.wav", dtype="float32")[0]
    assert 0.98 < np.abs(rescaled).max() <= 0.99 + 1e-4


def test_top_level_api_and_typed_marker():
    assert {"compress", "decompress", "EnCodec", "Tokens", "RuntimePolicy", "load_audio"} <= set(fastencodec.__all__)
    from importlib.resources import files

    assert files("fastencodec").joinpath("py.typed").is_file()


def test_load_audio_offset_duration_and_channels(tmp_path):
    audio = speech_like(16_000, 2, 1.0).numpy()
    sf.write(tmp_path / "in.wav", audio.T, 16_000, subtype="FLOAT")
    whole = load_audio(tmp_path / "in.wav", 16_000, 2)
    np.testing.assert_array_equal(whole, audio)
    part = load_audio(tmp_path / "in.wav", 16_000, 1, offset=0.25, duration=0.5)
    np.testing.assert_allclose(part, audio.mean(0, keepdims=True)[:, 4000:12000], atol=1e-7)
    assert load_audio(tmp_path / "in.wav", 24_000, 2).shape == (2, 24_000)
