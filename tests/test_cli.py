"""Tests for the ``fastencodec`` command line: formats, exactness, Meta interop, bad input, pipes."""

import importlib
import io
import json
import math
import os
import struct
import subprocess
import sys
import time

import av
import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import HealthCheck, given, settings

import fastencodec
from fastencodec import cli
from fastencodec.cli import common as cli_common
from fastencodec.codec import EnCodec
from fastencodec.formats.ecdc import EcdcHeader, EcdcReader
from fastencodec.io import conform
from fastencodec.io.audio import read_audio, to_channels
from fastencodec.io.resample import resample
from fastencodec.nn.config import EncodecConfig
from fastencodec.nn.model import EncodecModel
from tests.support import mutated, speech_like

AUDIO_TOL = 1e-4  # max abs difference from Meta's decoder, relative to its peak (as test_parity)


LOADED = {}  # (model, device, dtype) -> EnCodec, shared by the tests of this module


@pytest.fixture(autouse=True)
def load_each_model_once(monkeypatch):
    """The CLI loads its model on every run; the tests reuse one load per (model, device)."""
    load = EnCodec.from_pretrained

    def cached(name_or_path, device=None, dtype=None, **kwargs):
        policy = kwargs.get("policy")
        precision = "exact" if policy is None else policy.precision
        key = (str(name_or_path), str(device), dtype) + (() if precision == "exact" else (precision,))
        if key not in LOADED:
            LOADED[key] = load(name_or_path, device, dtype, **kwargs)
        return LOADED[key]

    monkeypatch.setattr(EnCodec, "from_pretrained", cached)


def run(*argv):
    return cli.main([str(arg) for arg in argv])


def signal(rate, channels, seconds, seed=0):
    return speech_like(rate, channels, seconds, seed).numpy()


def write_audio_file(path, audio, rate):
    """Write ``audio`` [C, n] in the format ``path``'s suffix names (soundfile, or PyAV for .m4a)."""
    formats = {
        ".wav": ("WAV", "PCM_16"),
        ".flac": ("FLAC", "PCM_16"),
        ".ogg": ("OGG", "VORBIS"),
        ".opus": ("OGG", "OPUS"),
        ".mp3": ("MP3", "MPEG_LAYER_III"),
        ".aiff": ("AIFF", "PCM_24"),
    }
    if path.suffix in formats:
        file_format, subtype = formats[path.suffix]
        sf.write(path, audio.T, rate, format=file_format, subtype=subtype)
        return path
    layout = {1: "mono", 2: "stereo"}[audio.shape[0]]
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=rate)
        stream.layout = layout
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio, dtype=np.float32), format="fltp", layout=layout)
        frame.rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return path


def conformed(codec, audio, rate):
    """What the CLI feeds the model: channels by audio_io.to_channels (through mono), soxr resampling."""
    mixed = audio if audio.shape[0] == codec.channels else to_channels(audio, 1)
    return to_channels(resample(mixed, rate, codec.sample_rate), codec.channels)


def read_ecdc(path, codec):
    """Header, codes [K, frames] and scales (or None) of an .ecdc file."""
    with open(path, "rb") as stream:
        reader = EcdcReader(stream)
        segments = list(reader.segments(codec.layout))
    codes = np.concatenate([codes for codes, _ in segments], axis=1)
    scales = None if segments[0][1] is None else np.array([scale for _, scale in segments], dtype=np.float32)
    return reader.header, codes, scales


def assert_matches_encode(path, codec, audio, rate, bandwidth):
    """The file holds exactly the codes (and scales) of ``codec.encode`` of the whole conformed input."""
    tokens = codec.encode(conformed(codec, audio, rate)[None], bandwidth)
    header, codes, scales = read_ecdc(path, codec)
    np.testing.assert_array_equal(codes, np.asarray(tokens.codes)[0])
    if tokens.scales is not None:
        np.testing.assert_array_equal(scales, np.asarray(tokens.scales)[0])
    return header, tokens


def with_metadata(data, **changes):
    """``data`` with its JSON metadata changed (keys set to None are removed)."""
    size = struct.unpack("!I", data[5:9])[0]
    meta = json.loads(data[9 : 9 + size]) | changes
    text = json.dumps({key: value for key, value in meta.items() if value is not None}).encode()
    return data[:5] + struct.pack("!I", len(text)) + text + data[9 + size :]


FORMATS = [".wav", ".flac", ".ogg", ".opus", ".mp3", ".m4a", ".aiff"]


@pytest.mark.parametrize("suffix", FORMATS)
def test_round_trip_every_input_format(tmp_path, meta24, codec24, suffix):
    rate = 48000 if suffix == ".opus" else 44100
    source = write_audio_file(tmp_path / f"in{suffix}", signal(rate, 2, 1.0), rate)
    audio, read_rate = read_audio(source)  # what the decoder library gives is the input
    assert read_rate == rate
    assert run("compress", source, "--model", meta24[1], "-b", "3") == 0
    header, codes, _ = read_ecdc(tmp_path / "in.ecdc", codec24)
    length = resample(audio, rate, 24000).shape[-1]
    assert header == EcdcHeader("encodec_24khz", length, 4, rate, 2, True, codec24.fingerprint)
    # Audio this short goes through EnCodec.encode's offline path, the CLI through the stream
    # encoder: the codes agree up to distance ties (exactly equal for long audio, see below).
    tokens = codec24.encode(conformed(codec24, audio, rate)[None], 3.0)
    assert (codes != np.asarray(tokens.codes)[0]).mean() <= 0.01
    assert run("decompress", tmp_path / "in.ecdc", "--model", meta24[1], "--rate") == 0
    out, out_rate = read_audio(tmp_path / "in_decompressed.wav")
    assert out_rate == rate
    expected = resample(codec24.decode(codes[None], lengths=[length])[0], 24000, rate)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


@pytest.mark.slow
def test_48khz_segments_and_batches_match_whole_file(tmp_path, monkeypatch, meta48, codec48):
    # Batches of 2 segments and small read blocks, in the CLI and in EnCodec alike: the rolling
    # buffer, the batch boundaries and the cross-fade across them must reproduce encode/decode.
    codec48 = EnCodec.from_pretrained(meta48[1], batch_samples=2 * 48000)
    monkeypatch.setitem(LOADED, (str(meta48[1]), "cpu", None), codec48)
    monkeypatch.setattr(conform, "BLOCK_SAMPLES", 7000)
    source = write_audio_file(tmp_path / "mono.flac", signal(32000, 1, 3.3), 32000)
    audio, _ = read_audio(source)
    ecdc = tmp_path / "x.ecdc"
    assert run("compress", source, ecdc, "--model", meta48[1], "-b", "12") == 0
    header, tokens = assert_matches_encode(ecdc, codec48, audio, 32000, 12.0)
    assert header.audio_length == 158400 and header.num_codebooks == 8  # segments: 3 of 48000, 1 of 15840
    assert run("decompress", ecdc, tmp_path / "x.wav", "--model", meta48[1]) == 0
    out, rate = sf.read(tmp_path / "x.wav", dtype="float32", always_2d=True)
    assert rate == 48000
    np.testing.assert_array_equal(out.T, codec48.decode(tokens)[0])


def test_short_48khz_file_is_one_cross_faded_segment(tmp_path, meta48, codec48):
    source = write_audio_file(tmp_path / "short.wav", signal(48000, 2, 0.3), 48000)
    audio, _ = read_audio(source)
    assert run("compress", source, "--model", meta48[1]) == 0
    _, tokens = assert_matches_encode(tmp_path / "short.ecdc", codec48, audio, 48000, 6.0)
    assert run("decompress", tmp_path / "short.ecdc", tmp_path / "short.wav", "-f", "--model", meta48[1]) == 0
    np.testing.assert_array_equal(read_audio(tmp_path / "short.wav")[0], codec48.decode(tokens)[0])


def test_unsegmented_non_causal_model_is_coded_whole(tmp_path, capsys):
    """A model like encodec_32khz (no segments, not causal, 2,048-entry codebooks) is coded as one segment."""
    config = EncodecConfig(
        sample_rate=32000,
        n_filters=4,
        ratios=(8, 5, 4, 4),
        causal=False,
        codebook_size=2048,
        target_bandwidths=(2.2,),
        name="encodec_32khz",
    )
    torch.manual_seed(0)
    model = EncodecModel(config).eval()
    with torch.no_grad():
        model.quantizer.embed.normal_()
    model.quantizer.refresh()
    codec = LOADED[("tiny-32khz", "cpu", None)] = EnCodec(model)
    source = write_audio_file(tmp_path / "in.wav", signal(44100, 1, 1.1), 44100)
    assert run("compress", source, "--model", "tiny-32khz") == 0
    _, tokens = assert_matches_encode(tmp_path / "in.ecdc", codec, *read_audio(source), 2.2)
    assert run("decompress", tmp_path / "in.ecdc", "--model", "tiny-32khz") == 0
    # decoded through the exact stream: its centred convolutions end the signal in a separate
    # call at flush, so the audio equals decode() up to float rounding
    expected = codec.decode(tokens)[0]
    decoded = read_audio(tmp_path / "in_decompressed.wav")[0]
    np.testing.assert_allclose(decoded, expected, rtol=0, atol=1e-6 * np.abs(expected).max())
    assert run("info", tmp_path / "in.ecdc") == 0  # info knows the published 32 kHz layout
    assert "2.2 kbps (4 codebooks)" in capsys.readouterr().out
    assert run("info", tmp_path / "in.ecdc", "--model", "tiny-32khz") == 0
    assert "2.2 kbps (4 codebooks)" in capsys.readouterr().out


# -- interop with Meta's encodec 0.1.1 ------------------------------------------------------------

INTEROP = [("24khz", 1.5, 30001), ("48khz", 6.0, 60000)]  # lengths Meta's own reader handles


@pytest.fixture
def meta_codec(request, monkeypatch):
    """Meta's compress module with the fixture model registered under its published name."""
    kind, bandwidth, length = request.param
    model, path = request.getfixturevalue(f"meta{kind[:2]}")
    name = f"encodec_{kind}"
    monkeypatch.setattr(model, "name", name)
    monkeypatch.setattr(model, "bandwidth", model.bandwidth)
    model.set_target_bandwidth(bandwidth)
    module = importlib.import_module("encodec.compress")
    monkeypatch.setitem(module.MODELS, name, lambda: model)
    segment = model.segment_length or length
    for offset in range(0, length, model.segment_stride or length):  # avoid Meta's float frame-count bug
        n = min(segment, length - offset)
        assert math.ceil(n / model.sample_rate * model.frame_rate) == -(-n * model.frame_rate // model.sample_rate)
    wav = torch.from_numpy(signal(model.sample_rate, model.channels, length / model.sample_rate + 0.01))
    return module, model, path, wav[:, :length]


def assert_close_to(ours, reference):
    ours, reference = np.asarray(ours), np.asarray(reference)
    assert ours.shape == reference.shape
    assert np.abs(ours - reference).max() <= AUDIO_TOL * np.abs(reference).max()


def payload(data):
    """The bytes after an .ecdc stream's metadata (codes, scales, and our CRC trailer if any)."""
    return data[9 + struct.unpack("!I", data[5:9])[0] :]


@pytest.mark.interop
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("meta_codec", INTEROP, indirect=True, ids=["24khz", "48khz"])
def test_interop_with_metas_compress_and_decompress(tmp_path, meta_codec):
    module, model, path, wav = meta_codec
    # Meta's file -> fastencodec decompress: Meta's decompress's audio.
    meta_bytes = module.compress(model, wav, use_lm=False)
    (tmp_path / "meta.ecdc").write_bytes(meta_bytes)
    expected, rate = module.decompress(meta_bytes)
    assert run("decompress", tmp_path / "meta.ecdc", tmp_path / "from_meta.wav", "--model", path) == 0
    audio, our_rate = read_audio(tmp_path / "from_meta.wav")
    assert our_rate == rate == model.sample_rate
    assert_close_to(audio, expected)
    # fastencodec compress -> Meta's decompress: our decompress's audio.
    source = tmp_path / "in.wav"
    sf.write(source, wav.numpy().T, model.sample_rate, subtype="FLOAT")
    assert run("compress", source, "--model", path, "-b", model.bandwidth) == 0
    ours = (tmp_path / "in.ecdc").read_bytes()
    meta_audio, rate = module.decompress(ours)
    assert rate == model.sample_rate and meta_audio.shape == wav.shape
    assert run("decompress", tmp_path / "in.ecdc", tmp_path / "ours.wav", "--model", path) == 0
    assert_close_to(read_audio(tmp_path / "ours.wav")[0], meta_audio)
    # Both encoders wrote the same codes (up to distance ties); ours adds a CRC-32 trailer.
    theirs, mine = np.frombuffer(payload(meta_bytes), np.uint8), np.frombuffer(payload(ours)[:-4], np.uint8)
    assert mine.shape == theirs.shape and (mine != theirs).mean() < 0.01


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_length_that_trips_metas_reader_still_decodes(tmp_path, monkeypatch, meta24):
    """Meta computes frame counts in floating point: for 6,720 samples at 24 kHz it wants 22
    frames of a file that has 21, and fails on its own file; we read it exactly."""
    model, path = meta24
    monkeypatch.setattr(model, "name", "encodec_24khz")
    module = importlib.import_module("encodec.compress")
    monkeypatch.setitem(module.MODELS, "encodec_24khz", lambda: model)
    data = module.compress(model, torch.from_numpy(signal(24000, 1, 0.28)), use_lm=False)
    with pytest.raises(EOFError):
        module.decompress(data)
    (tmp_path / "meta.ecdc").write_bytes(data)
    assert run("decompress", tmp_path / "meta.ecdc", "--model", path) == 0
    assert read_audio(tmp_path / "meta_decompressed.wav")[0].shape == (1, 6720)


def test_rate_option(tmp_path, capsys, meta24, codec24):
    source = write_audio_file(tmp_path / "in.wav", signal(16000, 1, 0.5), 16000)
    assert run("compress", source, "--model", meta24[1]) == 0
    assert run("decompress", tmp_path / "in.ecdc", tmp_path / "a.wav", "--model", meta24[1], "--rate", "8000") == 0
    assert sf.info(tmp_path / "a.wav").samplerate == 8000
    # A file without the original rate (as Meta writes them): a note, then the model's rate.
    meta_style = with_metadata((tmp_path / "in.ecdc").read_bytes(), sr=None, crc=None)[:-4]  # no checksum either
    (tmp_path / "meta.ecdc").write_bytes(meta_style)
    assert run("decompress", tmp_path / "meta.ecdc", tmp_path / "b.wav", "--model", meta24[1], "--rate") == 0
    assert "does not record the original rate" in capsys.readouterr().err
    assert sf.info(tmp_path / "b.wav").samplerate == 24000


# -- info ------------------------------------------------------------------------------------------


def test_info(tmp_path, capsys, meta24):
    source = write_audio_file(tmp_path / "in.wav", signal(44100, 2, 1.5), 44100)
    assert run("compress", source, "--model", meta24[1], "-b", "3") == 0
    capsys.readouterr()
    assert run("info", tmp_path / "in.ecdc") == 0
    text = capsys.readouterr().out
    size = (tmp_path / "in.ecdc").stat().st_size
    for expected in ("encodec_24khz", "3 kbps (4 codebooks)", "1.500 s", "44100 Hz, 2 channels", f"{size:,} bytes"):
        assert expected in text
    assert run("info", tmp_path / "in.ecdc", "--json") == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["bytes"] == size and facts["samples"] == 36000 and facts["checksum"] == "crc32 ok"
    assert facts["compression_ratio"] == pytest.approx(2 * 2 * 66150 / size)


# -- pipes -----------------------------------------------------------------------------------------


def feed_stdin(monkeypatch, data):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))


def test_stdin_and_stdout_in_process(tmp_path, monkeypatch, capfdbinary, meta24, codec24):
    source = write_audio_file(tmp_path / "in.flac", signal(22050, 1, 6.0), 22050)
    assert run("compress", source, "--model", meta24[1], "-q") == 0
    # Longer than CHUNK_SAMPLES at 24 kHz: EnCodec.encode/decode run the stream encoder/decoder
    # in the same chunks as the CLI, so codes and audio are identical.
    _, tokens = assert_matches_encode(tmp_path / "in.ecdc", codec24, *read_audio(source), 6.0)
    feed_stdin(monkeypatch, source.read_bytes())
    assert run("compress", "-", "--model", meta24[1]) == 0  # OUTPUT defaults to stdout for stdin
    captured = capfdbinary.readouterr()
    assert captured.out == (tmp_path / "in.ecdc").read_bytes()
    assert b"compress: 100%" in captured.err  # 6 s of audio: a progress bar, on stderr only
    feed_stdin(monkeypatch, captured.out)
    assert run("decompress", "-", "-", "--model", meta24[1], "-q") == 0
    captured = capfdbinary.readouterr()
    assert captured.err == b""
    audio, rate = sf.read(io.BytesIO(captured.out), dtype="float32")
    assert rate == 24000
    np.testing.assert_array_equal(audio, codec24.decode(tokens)[0, 0])
    feed_stdin(monkeypatch, (tmp_path / "in.ecdc").read_bytes())
    assert run("info", "-", "--json") == 0
    facts = json.loads(capfdbinary.readouterr().out)
    assert facts["file"] == "<stdin>" and facts["bytes"] == (tmp_path / "in.ecdc").stat().st_size


@pytest.mark.parametrize("pcm_format", ["s16le", "f32le"])
def test_stream_raw_pcm_matches_file(tmp_path, monkeypatch, meta24, codec24, pcm_format):
    audio = signal(8000, 2, 1.1)
    wav = tmp_path / "in.wav"
    sf.write(wav, audio.T, 8000, subtype="PCM_16" if pcm_format == "s16le" else "FLOAT")
    samples, _ = sf.read(wav, dtype="int16" if pcm_format == "s16le" else "float32")
    feed_stdin(monkeypatch, samples.tobytes())
    argv = ["compress", "--stream", "--pcm-format", pcm_format, "--pcm-rate", "8000", "--pcm-channels", "2"]
    assert run(*argv, "-", tmp_path / "stream.ecdc", "--model", meta24[1]) == 0
    assert run("compress", wav, "--model", meta24[1]) == 0
    header, codes, _ = read_ecdc(tmp_path / "stream.ecdc", codec24)
    file_header, file_codes, _ = read_ecdc(tmp_path / "in.ecdc", codec24)
    assert header == file_header
    np.testing.assert_array_equal(codes, file_codes)


def test_stream_rejects_partial_frames(tmp_path, monkeypatch, capsys, meta24):
    feed_stdin(monkeypatch, b"\0" * 4001)
    assert run("compress", "--stream", "-", tmp_path / "x.ecdc", "--model", meta24[1]) == 1
    assert "<stdin>: raw PCM ends inside a sample frame (1 stray bytes)" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def run_module(*argv, data):
    command = [sys.executable, "-m", "fastencodec", *[str(arg) for arg in argv]]
    return subprocess.run(command, input=data, capture_output=True, check=False, timeout=120)


@pytest.mark.slow
def test_python_m_in_a_pipe(tmp_path, meta24):
    """Real processes: raw PCM | compress --stream - - | decompress - - (nothing but data on stdout)."""
    pcm = (signal(24000, 1, 0.7)[0] * 2**15).astype("<i2").tobytes()
    compressed = run_module("compress", "--stream", "-", "-", "--model", meta24[1], data=pcm)
    assert compressed.returncode == 0, compressed.stderr
    assert compressed.stdout.startswith(b"ECDC")
    decompressed = run_module("decompress", "-", "-", "--model", meta24[1], data=compressed.stdout)
    assert decompressed.returncode == 0, decompressed.stderr
    audio, rate = sf.read(io.BytesIO(decompressed.stdout), dtype="float32")  # stdout is the WAV, whole
    assert rate == 24000 and audio.shape == (16800,)


def test_progress_only_for_long_audio_and_never_with_quiet(tmp_path, capsys, monkeypatch, meta24):
    source = write_audio_file(tmp_path / "in.wav", signal(24000, 1, 0.5), 24000)
    assert run("compress", source, "--model", meta24[1]) == 0
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(cli_common, "PROGRESS_MIN_SECONDS", 0.1)
    assert run("compress", source, "--model", meta24[1], "-f") == 0
    assert "compress: 100%" in capsys.readouterr().err
    assert run("compress", source, "--model", meta24[1], "-f", "--quiet") == 0
    assert capsys.readouterr().err == ""


def test_bench(capsys, meta24):
    assert run("bench", "--seconds", "0.1", "--repeat", "1", "--device", "cpu") == 0
    table = capsys.readouterr().out
    assert "random-weight encodec_24khz" in table and "encode+decode" in table and "x real time" in table
    assert run("bench", "--model", meta24[1], "-b", "7", "--seconds", "0.1", "--device", "cpu") == 2
    assert "bandwidth 7.0 kbps is not supported" in capsys.readouterr().err


# -- bad input -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_ecdc(tmp_path_factory, meta24):
    directory = tmp_path_factory.mktemp("good")
    source = write_audio_file(directory / "good.wav", signal(24000, 1, 0.4), 24000)
    assert run("compress", source, "--model", meta24[1], "-b", "1.5") == 0
    return (directory / "good.ecdc").read_bytes()


BAD_ECDC = {
    "truncated": (lambda d: d[: len(d) // 2], "truncated stream"),
    "codes run short": (lambda d: with_metadata(d, al=10 * 24000), "truncated stream: codes"),
    "wrong magic": (lambda d: b"RIFF" + d[4:], "not an ECDC stream"),
    "corrupt JSON": (lambda d: d[:9] + b"[" + d[10:], "corrupt metadata JSON"),
    "bad checksum": (lambda d: d[:-1] + bytes([d[-1] ^ 1]), "checksum mismatch"),
    "empty": (lambda d: b"", "truncated stream: header"),
}


@pytest.mark.parametrize("case", list(BAD_ECDC))
def test_bad_ecdc_files(tmp_path, capsys, meta24, good_ecdc, case):
    mutate, message = BAD_ECDC[case]
    path = tmp_path / "bad.ecdc"
    path.write_bytes(mutate(good_ecdc))
    for argv in (["decompress", "-q"], ["info"]):
        assert run(*argv, path, "--model", meta24[1]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"fastencodec: {path}: ") and message in err and err.count("\n") == 1
    assert os.listdir(tmp_path) == ["bad.ecdc"]


def test_unknown_or_mismatched_model(tmp_path, capsys, meta24, meta48, good_ecdc):
    path = tmp_path / "x.ecdc"
    path.write_bytes(with_metadata(good_ecdc, m="encodec_96khz"))
    assert run("decompress", path) == 1
    assert f"{path}: unknown model 'encodec_96khz'" in capsys.readouterr().err
    assert run("info", path) == 1
    assert "unknown model 'encodec_96khz'" in capsys.readouterr().err
    path.write_bytes(good_ecdc)
    assert run("decompress", path, "--model", meta48[1]) == 1
    assert f"{path}: coded with encodec_24khz, but the model given is encodec_48khz" in capsys.readouterr().err
    path.write_bytes(with_metadata(good_ecdc, nc=32))
    assert run("info", path) == 1  # 32 codebooks do not fit the payload
    assert "truncated stream" in capsys.readouterr().err


def junk(directory):
    (directory / "junk.wav").write_bytes(b"this is not audio " * 100)
    return directory / "junk.wav"


def empty(directory):
    (directory / "empty.flac").write_bytes(b"")
    return directory / "empty.flac"


def silent(directory):
    sf.write(directory / "silent.wav", np.zeros((0, 1), np.float32), 16000)
    return directory / "silent.wav"


def truncated_flac(directory):
    write_audio_file(directory / "whole.flac", signal(44100, 2, 3.0), 44100)
    (directory / "cut.flac").write_bytes((directory / "whole.flac").read_bytes()[:60000])
    (directory / "whole.flac").unlink()
    return directory / "cut.flac"


BAD_AUDIO = [
    (lambda d: d / "missing.wav", "no such file"),
    (lambda d: d, "is a directory"),
    (junk, "unsupported or corrupt audio file"),
    (empty, "file is empty"),
    (silent, "contains no audio samples"),
    (truncated_flac, "corrupt audio"),
]


@pytest.mark.parametrize("make, message", BAD_AUDIO, ids=[m for _, m in BAD_AUDIO])
def test_bad_audio_inputs_leave_no_output(tmp_path, capsys, meta24, make, message):
    source = make(tmp_path)
    before = sorted(os.listdir(tmp_path))
    assert run("compress", source, tmp_path / "out.ecdc", "--model", meta24[1]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"fastencodec: {source}: {message}") and err.count("\n") == 1
    assert sorted(os.listdir(tmp_path)) == before  # no output, no temporary file


def test_decompress_input_errors(tmp_path, capsys):
    assert run("decompress", tmp_path / "missing.ecdc") == 1
    assert f"{tmp_path / 'missing.ecdc'}: cannot read (No such file or directory)" in capsys.readouterr().err
    assert run("info", tmp_path) == 1
    assert f"{tmp_path}: cannot read (Is a directory)" in capsys.readouterr().err


def test_precision_option(tmp_path, capsys, meta24):
    from fastencodec.kernels.precision import cpu_has_bf16, cpu_has_fp16

    source = write_audio_file(tmp_path / "in.wav", signal(24000, 1, 0.3), 24000)
    assert run("compress", source, tmp_path / "a.ecdc", "--model", meta24[1], "--precision", "tf32") == 1
    assert "'tf32' needs a CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "a.ecdc").exists()
    if not cpu_has_fp16():
        assert run("compress", source, tmp_path / "a.ecdc", "--model", meta24[1], "--precision", "fp16") == 1
        assert "'fp16' on CPU needs AVX512-FP16" in capsys.readouterr().err
        assert not (tmp_path / "a.ecdc").exists()
    if cpu_has_bf16():
        assert run("compress", source, tmp_path / "b.ecdc", "--model", meta24[1], "--precision", "bf16") == 0
        out = tmp_path / "b.wav"
        assert run("decompress", tmp_path / "b.ecdc", out, "--model", meta24[1], "--precision", "bf16") == 0
        assert out.stat().st_size > 0


def test_existing_output_needs_force(tmp_path, capsys, meta24):
    source = write_audio_file(tmp_path / "in.wav", signal(24000, 1, 0.3), 24000)
    (tmp_path / "in.ecdc").write_bytes(b"keep me")
    assert run("compress", source, "--model", meta24[1]) == 1
    assert f"{tmp_path / 'in.ecdc'}: already exists (use -f/--force to overwrite)" in capsys.readouterr().err
    assert (tmp_path / "in.ecdc").read_bytes() == b"keep me"
    assert run("compress", source, "--model", meta24[1], "--force") == 0
    assert (tmp_path / "in.ecdc").read_bytes().startswith(b"ECDC")
    disguised = tmp_path / "audio.ecdc"  # audio named like an .ecdc: OUTPUT would replace INPUT
    disguised.write_bytes(source.read_bytes())
    assert run("compress", disguised, disguised, "--model", meta24[1], "-f") == 1
    assert f"{disguised}: is the input file" in capsys.readouterr().err
    (tmp_path / "sub.ecdc").mkdir()
    assert run("compress", source, tmp_path / "sub.ecdc", "--model", meta24[1], "-f") == 1
    assert "sub.ecdc: is a directory" in capsys.readouterr().err
    assert run("compress", source, tmp_path / "missing" / "x.ecdc", "--model", meta24[1]) == 1
    assert "x.ecdc: cannot write" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "required: COMMAND"),
        (["frobnicate"], "invalid choice"),
        (["compress"], "required: INPUT"),
        (["compress", "IN", "-b", "5"], "bandwidth 5.0 kbps is not supported by encodec_24khz"),
        (["compress", "IN", "out.wav"], "OUTPUT must end in .ecdc"),
        (["compress", "IN", "--pcm-rate", "0"], "expected a positive integer"),
        (["compress", "IN", "--device", "nonsense"], "not a torch device"),
        (["decompress", "X.ecdc", "--rate", "fast"], "expected a positive integer"),
        (["decompress", "X.ecdc", "out.mp3"], "OUTPUT must end in .wav or .flac"),
        (["decompress", "X.ecdc", "out.flac", "--subtype", "FLOAT"], "FLOAT is not available for FLAC"),
    ],
)
def test_bad_usage_exits_2(tmp_path, capsys, meta24, good_ecdc, argv, message):
    (tmp_path / "X.ecdc").write_bytes(good_ecdc)
    sf.write(tmp_path / "IN", signal(24000, 1, 0.2).T, 24000, format="WAV")
    argv = [str(tmp_path / a) if a in ("IN", "X.ecdc", "out.wav", "out.mp3", "out.flac") else a for a in argv]
    extra = ["--model", str(meta24[1])] if argv[:1] in (["compress"], ["decompress"]) and len(argv) > 1 else []
    assert run(*argv, *extra) == 2
    err = capsys.readouterr().err
    assert message in err
    assert not (tmp_path / "IN.ecdc").exists() and not (tmp_path / "out.flac").exists()


def test_cuda_unavailable_is_a_failure(tmp_path, capsys, meta24):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    source = write_audio_file(tmp_path / "in.wav", signal(24000, 1, 0.2), 24000)
    assert run("compress", source, "--model", meta24[1], "--device", "cuda") == 1
    assert "--device cuda: CUDA is not available" in capsys.readouterr().err


# -- fuzz ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_fuzzed_ecdc_files_decode_or_fail_cleanly(tmp_path_factory, meta24, good_ecdc):
    """Mutated files either decode or end with exit status 1 and one line on stderr: any other
    exception escapes ``main`` and fails the test."""
    directory = tmp_path_factory.mktemp("fuzz")
    path, output = directory / "fuzz.ecdc", directory / "out.wav"

    @settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(mutated(good_ecdc))
    def check(data):
        path.write_bytes(data)
        status = run("decompress", path, output, "--model", meta24[1], "-f", "-q")
        assert status in (0, 1)
        assert sorted(os.listdir(directory)) == (["fuzz.ecdc", "out.wav"] if status == 0 else ["fuzz.ecdc"])
        output.unlink(missing_ok=True)

    check()


# -- usability -------------------------------------------------------------------------------------


def test_version_and_bandwidths_in_help(capsys):
    assert run("--version") == 0
    assert capsys.readouterr().out.strip() == f"fastencodec {fastencodec.__version__}"
    assert run("compress", "--help") == 0
    assert "1.5/3/6/12/24" in " ".join(capsys.readouterr().out.split())


def test_several_files_and_folders_like_gzip(tmp_path, capsys, meta24, codec24):
    (tmp_path / "sub").mkdir()
    for name in ("a.wav", "sub/b.flac", "sub/c.wav"):
        write_audio_file(tmp_path / name, signal(24000, 1, 0.3, seed=len(name)), 24000)
    (tmp_path / "sub" / "notes.txt").write_text("not audio")
    assert run("compress", tmp_path / "a.wav", tmp_path / "sub", "--model", meta24[1]) == 0
    assert sorted(p.name for p in tmp_path.rglob("*.ecdc")) == ["a.ecdc", "b.ecdc", "c.ecdc"]
    assert run("decompress", tmp_path / "sub", "--model", meta24[1]) == 0
    assert sorted(p.name for p in (tmp_path / "sub").glob("*.wav")) == [
        "b_decompressed.wav",
        "c.wav",
        "c_decompressed.wav",
    ]
    # one bad file among good ones: the others are still done, the exit status says a file failed
    (tmp_path / "bad.wav").write_bytes(b"junk" * 100)
    assert run("compress", tmp_path / "bad.wav", tmp_path / "a.wav", "-f", "--model", meta24[1]) == 1
    err = capsys.readouterr().err
    assert "bad.wav" in err and err.count("\n") == 1 and (tmp_path / "a.ecdc").exists()


def test_missing_output_folder_fails_alike(tmp_path, capsys, meta24, good_ecdc):
    source = write_audio_file(tmp_path / "in.wav", signal(24000, 1, 0.2), 24000)
    (tmp_path / "in.ecdc").write_bytes(good_ecdc)
    assert run("compress", source, tmp_path / "no" / "out.ecdc", "--model", meta24[1]) == 1
    assert "no folder" in capsys.readouterr().err
    assert run("decompress", tmp_path / "in.ecdc", tmp_path / "no" / "out.wav", "--model", meta24[1]) == 1
    assert "no folder" in capsys.readouterr().err


def test_model_that_is_not_a_checkpoint(tmp_path, capsys):
    source = write_audio_file(tmp_path / "in.wav", signal(24000, 1, 0.2), 24000)
    assert run("compress", source, "--model", source) == 1
    err = capsys.readouterr().err
    assert "not a checkpoint" in err and "weights_only" not in err and err.count("\n") == 1


def test_offline_hub_fails_fast_and_suggests_a_path(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")
    source = write_audio_file(tmp_path / "in.wav", signal(24000, 1, 0.2), 24000)
    start = time.perf_counter()
    assert run("compress", source, "--model", "encodec-24khz") == 1
    assert time.perf_counter() - start < 10
    assert "--model PATH" in capsys.readouterr().err


def test_decompress_warns_about_clipping_and_rescales(tmp_path, capsys, monkeypatch, meta48, codec48):
    source = write_audio_file(tmp_path / "in.wav", signal(48000, 2, 0.5), 48000)
    assert run("compress", source, "--model", meta48[1]) == 0
    loud = EnCodec(codec48.model)  # the same model, its decoded audio scaled to peak at 3
    decode_batch = loud.engine.decode_batch
    loud.engine.decode_batch = lambda *args, **kwargs: decode_batch(*args, **kwargs) * 30
    monkeypatch.setitem(LOADED, (str(meta48[1]), "cpu", None), loud)
    out = tmp_path / "out.wav"
    assert run("decompress", tmp_path / "in.ecdc", out, "--subtype", "PCM_16", "--model", meta48[1]) == 0
    err = capsys.readouterr().err
    assert "samples exceeded full scale" in err and "--rescale" in err and err.count("\n") == 1
    assert run("decompress", tmp_path / "in.ecdc", out, "-f", "--subtype", "PCM_16", "-r", "--model", meta48[1]) == 0
    assert capsys.readouterr().err == ""
    assert 0.98 < np.abs(read_audio(out)[0]).max() <= 0.99 + 1e-4


def test_two_inputs_with_one_output_are_refused_before_starting(tmp_path, capsys, meta24):
    for name in ("a.wav", "a.flac"):
        write_audio_file(tmp_path / name, signal(24000, 1, 0.2), 24000)
    for argv in ([tmp_path / "a.wav", tmp_path / "a.flac"], [tmp_path]):
        assert run("compress", *argv, "-f", "--model", meta24[1]) == 2
        err = capsys.readouterr().err
        assert "a.wav" in err and "a.flac" in err and "a.ecdc" in err and err.count("\n") == 1
        assert not (tmp_path / "a.ecdc").exists()
    assert run("compress", tmp_path / "a.wav", "--model", meta24[1]) == 0  # Meta's naming
    assert (tmp_path / "a.ecdc").exists()


def test_ctrl_c_stops_a_many_file_command(tmp_path, capsys, monkeypatch):
    sources = [write_audio_file(tmp_path / f"{n}.wav", signal(24000, 1, 0.1), 24000) for n in "ab"]
    calls = []

    def interrupted(args, source, output, models):
        calls.append(source)
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.compress, "run", interrupted)
    assert run("compress", *sources) == 130
    assert len(calls) == 1 and "interrupted" in capsys.readouterr().err


def test_a_model_that_fails_to_load_skips_only_its_files(tmp_path, capsys, monkeypatch, meta24, codec24):
    """Without --model each file names its model: the others are still done (exit 1)."""
    data = fastencodec.compress(signal(24000, 1, 0.1), model=codec24, sample_rate=24_000)
    files = [tmp_path / f"{name}.ecdc" for name in ("a48", "b24", "c48")]
    for path in files:
        path.write_bytes(with_metadata(data, m="encodec_48khz") if "48" in path.name else data)
    tried = []

    def load(name, *args, **kwargs):
        tried.append(name)
        if "48" in name:
            raise cli_common.ModelLoadError(f"{name}: cannot load the model (offline)")
        return codec24

    monkeypatch.setattr(cli_common, "load_codec", load)
    assert run("decompress", *files) == 1
    err = capsys.readouterr().err.splitlines()
    assert tried == ["encodec_48khz", "encodec_24khz"] and len(err) == 2
    assert "a48.ecdc" in err[0] and "offline" in err[0] and "c48.ecdc: skipped" in err[1]
    assert sorted(p.name for p in tmp_path.glob("*.wav")) == ["b24_decompressed.wav"]
    assert run("decompress", *files, "--model", "encodec_48khz") == 1  # one model for all: stop at once
    assert len(capsys.readouterr().err.splitlines()) == 1 and tried[-1] == "encodec_48khz"
