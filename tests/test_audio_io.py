"""Tests for fastencodec.io.audio."""

import io
import os
import stat
import sys

import av
import numpy as np
import pytest
import soundfile as sf

from fastencodec.io.audio import AudioReader, AudioWriter, read_audio, to_channels, write_audio
from fastencodec.io.errors import AudioFileError

RATE = 44100


def make_signal(channels=2, samples=RATE // 2, rate=RATE):
    """Sine per channel plus a little noise, within [-0.6, 0.6]."""
    rng = np.random.default_rng(channels)
    t = np.arange(samples) / rate
    tones = np.stack([0.5 * np.sin(2 * np.pi * 330 * (c + 1) * t) for c in range(channels)])
    return (tones + 0.05 * rng.uniform(-1, 1, tones.shape)).astype(np.float32)


def write_m4a(path, audio, rate):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=rate, layout="stereo" if audio.shape[0] == 2 else "mono")
        frame = av.AudioFrame.from_ndarray(audio, format="fltp", layout=stream.layout.name)
        frame.sample_rate = rate
        for packet in list(stream.encode(frame)) + list(stream.encode(None)):
            container.mux(packet)


@pytest.mark.parametrize(
    "suffix, subtype, exact",
    [(".wav", "FLOAT", True), (".wav", "PCM_16", False), (".flac", "PCM_24", False)],
)
def test_lossless_round_trip(tmp_path, suffix, subtype, exact):
    audio = make_signal()
    path = tmp_path / f"x{suffix}"
    write_audio(path, audio, RATE, subtype=subtype)
    back, rate = read_audio(path)
    assert rate == RATE and back.dtype == np.float32 and back.shape == audio.shape
    if exact:
        np.testing.assert_array_equal(back, audio)
    else:
        bits = 16 if subtype == "PCM_16" else 24
        np.testing.assert_allclose(back, audio, atol=1.0 / 2 ** (bits - 1))
    # Quantized exactly to the PCM grid, the round trip is exact.
    grid = np.round(audio * 2**23) / 2**23
    write_audio(tmp_path / "grid.flac", grid, RATE)
    np.testing.assert_array_equal(read_audio(tmp_path / "grid.flac")[0], grid)


def test_default_subtypes(tmp_path):
    write_audio(tmp_path / "a.wav", make_signal(1, 100), 8000)
    write_audio(tmp_path / "a.flac", make_signal(1, 100), 8000)
    assert sf.info(tmp_path / "a.wav").subtype == "FLOAT"
    assert sf.info(tmp_path / "a.flac").subtype == "PCM_24"


@pytest.mark.parametrize("kind", ["ogg", "mp3", "m4a"])
def test_lossy_formats(tmp_path, kind):
    audio = make_signal(samples=RATE)
    path = tmp_path / f"x.{kind}"
    if kind == "m4a":
        write_m4a(path, audio, RATE)
    else:
        sf.write(path, audio.T, RATE, format="OGG" if kind == "ogg" else "MP3")
    back, rate = read_audio(path)
    assert rate == RATE and back.shape[0] == 2 and back.dtype == np.float32
    # AAC adds encoder priming and padding (up to two 1,024-sample frames).
    assert abs(back.shape[1] - audio.shape[1]) <= (2048 if kind == "m4a" else 0)
    assert 0.2 < np.abs(back).max() < 1.0


def test_blocks_stream_the_file(tmp_path):
    audio = make_signal(channels=3, samples=10_000)
    write_audio(tmp_path / "x.wav", audio, RATE)
    with AudioReader(tmp_path / "x.wav") as reader:
        assert (reader.sample_rate, reader.channels, reader.frames) == (RATE, 3, 10_000)
        blocks = list(reader.blocks(4096))
    assert [block.shape for block in blocks] == [(3, 4096), (3, 4096), (3, 1808)]
    np.testing.assert_array_equal(np.concatenate(blocks, axis=1), audio)


def test_blocks_through_pyav(tmp_path):
    audio = make_signal(samples=RATE)
    write_m4a(tmp_path / "x.m4a", audio, RATE)
    with AudioReader(tmp_path / "x.m4a") as reader:
        assert (reader.sample_rate, reader.channels, reader.frames) == (RATE, 2, None)
        sizes = [block.shape[1] for block in reader.blocks(5000)]
    assert all(size == 5000 for size in sizes[:-1]) and 0 < sizes[-1] <= 5000


def test_stdin_and_stdout(tmp_path, monkeypatch, capfdbinary):
    audio = make_signal(1, 1000)
    write_audio(tmp_path / "x.flac", audio, 16000)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO((tmp_path / "x.flac").read_bytes())))
    back, rate = read_audio("-")
    assert rate == 16000
    np.testing.assert_allclose(back, audio, atol=2**-23)
    write_audio("-", audio, 16000)
    data, rate = sf.read(io.BytesIO(capfdbinary.readouterr().out), dtype="float32")
    assert rate == 16000
    np.testing.assert_array_equal(data, audio[0])


def write_file(path, data):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing.wav", "no such file"),
        (lambda d: d, "is a directory"),
        (lambda d: write_file(d / "empty.wav", b""), "empty"),
        (lambda d: write_file(d / "junk.wav", b"not audio at all " * 50), "corrupt"),
    ],
)
def test_read_errors(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(AudioFileError, match=message) as info:
        read_audio(path)
    assert str(path) in str(info.value)


def test_zero_sample_file(tmp_path):
    sf.write(tmp_path / "silent.wav", np.zeros((0, 1), dtype=np.float32), 8000)
    with pytest.raises(AudioFileError, match="no audio samples"):
        read_audio(tmp_path / "silent.wav")


def test_non_finite_samples(tmp_path):
    sf.write(tmp_path / "nan.wav", np.array([[0.0], [np.nan]], dtype=np.float32), 8000, subtype="FLOAT")
    with pytest.raises(AudioFileError, match="NaN"):
        read_audio(tmp_path / "nan.wav")


def test_truncated_flac(tmp_path):
    write_audio(tmp_path / "x.flac", make_signal(2, RATE), RATE)
    data = (tmp_path / "x.flac").read_bytes()
    (tmp_path / "cut.flac").write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioFileError, match="corrupt"):
        read_audio(tmp_path / "cut.flac")


def test_writes_atomically(tmp_path):
    path = tmp_path / "out.wav"
    path.write_bytes(b"previous")
    with pytest.raises(RuntimeError), AudioWriter(path, 8000, 1) as writer:
        writer.write(np.zeros((1, 100)))
        raise RuntimeError("interrupted")
    assert path.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["out.wav"]
    with pytest.raises(ValueError, match="NaN"):
        write_audio(path, np.full((1, 10), np.nan), 8000)
    assert os.listdir(tmp_path) == ["out.wav"]
    write_audio(path, np.zeros((1, 10)), 8000)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_write_errors(tmp_path):
    with pytest.raises(AudioFileError, match=r"\.wav or \.flac"):
        write_audio(tmp_path / "x.mp4", np.zeros((1, 10)), 8000)
    with pytest.raises(AudioFileError, match="cannot write"):
        write_audio(tmp_path / "missing" / "x.wav", np.zeros((1, 10)), 8000)
    with pytest.raises(ValueError, match="shape"):
        write_audio(tmp_path / "x.wav", np.zeros(10), 8000)


def test_pcm_output_clips(tmp_path):
    write_audio(tmp_path / "x.flac", np.array([[2.0, -2.0, 0.5]]), 8000)
    np.testing.assert_allclose(read_audio(tmp_path / "x.flac")[0], [[1 - 2**-23, -1.0, 0.5]])


def test_to_channels():
    stereo = np.array([[1.0, 2.0], [3.0, 6.0]], dtype=np.float32)
    np.testing.assert_array_equal(to_channels(stereo, 1), [[2.0, 4.0]])
    np.testing.assert_array_equal(to_channels(stereo[:1], 2), [[1.0, 2.0], [1.0, 2.0]])
    surround = np.arange(12, dtype=np.float32).reshape(6, 2)
    np.testing.assert_array_equal(to_channels(surround, 2), [[5.0, 6.0], [5.0, 6.0]])
    assert to_channels(stereo, 2) is stereo
    assert to_channels(stereo, 1).dtype == np.float32
