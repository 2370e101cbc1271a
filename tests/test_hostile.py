"""Hostile inputs (issue 12): crafted configs, checkpoints, files, names, paths and signals end in
the library's own one-line errors, within bounded time and memory, and never swap the model or
leave partial outputs. Driven through the public API and the command line only."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import stat
import struct
import subprocess
import sys
import textwrap
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import fastencodec
from fastencodec import cli
from tests.support import speech_like

ROOT = Path(__file__).resolve().parents[1]
CHILD_PATH = os.pathsep.join(dict.fromkeys([str(Path(fastencodec.__file__).resolve().parents[1]), str(ROOT)]))
"""PYTHONPATH of child processes: the fastencodec these tests imported, and the tests' root."""


def run(*argv):
    return cli.main([str(a) for a in argv])


def one_line_error(capsys) -> str:
    """The CLI's stderr, asserted to be exactly one line (no traceback)."""
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err, err
    return err


def bounded(code: str, *, warmup: str = "", timeout: float = 60) -> dict:
    """Run ``code`` in a fresh interpreter, after ``warmup`` (lazy imports, first allocations);
    ``code`` sets ``result`` (a dict). Returns it plus the growth of peak memory (MB) over the
    memory in use just before ``code`` ran, and the seconds it took."""
    script = (
        textwrap.dedent(
            """
        import json, sys, time
        import torch, fastencodec
        from fastencodec import EnCodec
        def status_mb(field):
            with open("/proc/self/status") as f:
                line = next(line for line in f if line.startswith(field + ":"))
            return int(line.split()[1]) / 1024
        """
        )
        + textwrap.dedent(warmup)
        + textwrap.dedent(
            """
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets the peak (VmHWM) to the memory in use now
        before = status_mb("VmRSS")
        start = time.perf_counter()
        result = {}
        """
        )
        + textwrap.dedent(code)
        + textwrap.dedent(
            """
        result["seconds"] = time.perf_counter() - start
        result["peak_growth_mb"] = status_mb("VmHWM") - before
        print("RESULT " + json.dumps(result))
        """
        )
    )
    env = dict(os.environ, PYTHONPATH=CHILD_PATH)
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, proc.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT ") :])


def hf_dir_with_config(source: Path, target: Path, **changes) -> Path:
    """A copy of the HF checkpoint directory ``source`` whose config.json has ``changes``
    (a value of ``...`` removes the key)."""
    target.mkdir(parents=True, exist_ok=True)
    for name in os.listdir(source):
        if name != "config.json":
            (target / name).unlink(missing_ok=True)
            os.symlink(source / name, target / name)
    config = json.loads((source / "config.json").read_text())
    for key, value in changes.items():
        if value is ...:
            config.pop(key, None)
        else:
            config[key] = value
    (target / "config.json").write_text(json.dumps(config))
    return target


def write_wav(path: Path, rate: int, channels: int, seconds: float) -> Path:
    sf.write(path, speech_like(rate, channels, seconds).numpy().T, rate, subtype="FLOAT")
    return path


def ecdc_parts(data: bytes) -> tuple[dict, bytes]:
    size = struct.unpack("!I", data[5:9])[0]
    return json.loads(data[9 : 9 + size]), data[9 + size :]


def ecdc_file(meta: dict, payload: bytes, fix_crc: bool = True) -> bytes:
    """An .ecdc stream of ``meta`` and ``payload`` (codes and CRC trailer), the trailer
    recomputed as the format defines it (payload, then metadata) when ``fix_crc``."""
    text = json.dumps(meta).encode()
    if fix_crc:
        payload = payload[:-4] + struct.pack("!I", zlib.crc32(text, zlib.crc32(payload[:-4])))
    return b"ECDC\0" + struct.pack("!I", len(text)) + text + payload


# -- 1, 2: configs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"chunk_length_s": -1}, "chunk_length_s"),
        ({"chunk_length_s": 0.0}, "chunk_length_s"),
        ({"overlap": 2.0}, "overlap"),
        ({"overlap": -0.5}, "overlap"),
        ({"overlap": 1.0}, "overlap"),
    ],
)
def test_segment_length_and_overlap_checked_at_load(tmp_path, tiny48, changes, message):
    assert fastencodec.EnCodec.from_pretrained(tiny48).config.segment == 1.0
    directory = hf_dir_with_config(tiny48, tmp_path / "model", **changes)
    start = time.perf_counter()
    with pytest.raises(ValueError, match=message):
        fastencodec.EnCodec.from_pretrained(directory)
    assert time.perf_counter() - start < 10


@pytest.mark.slow
def test_negative_segment_length_fails_on_the_command_line(tmp_path, tiny48):
    directory = hf_dir_with_config(tiny48, tmp_path / "model", chunk_length_s=-1)
    source = write_wav(tmp_path / "in.wav", 48_000, 2, 0.1)
    proc = subprocess.run(  # in a child: this looped until memory ran out
        [sys.executable, "-m", "fastencodec", "compress", str(source), "out.ecdc", "--model", str(directory), "-q"],
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=CHILD_PATH),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1 and "chunk_length_s" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "out.ecdc").exists()


def test_config_fields_range_checked_before_allocating(tmp_path, tiny24):
    """Each config made the network allocate gigabytes (or loop for a minute) before failing."""
    cases = {
        "num_filters": {"num_filters": 256},
        "num_residual_layers": {"num_residual_layers": 100_000},
        "upsampling_ratios": {"upsampling_ratios": [2] * 40},
        "target_bandwidths": {"target_bandwidths": [3000.0]},
        "lstm": {"num_lstm_layers": 64},
        "dilation": {"dilation_growth_rate": 16, "num_residual_layers": 16},
    }
    dirs = {name: str(hf_dir_with_config(tiny24, tmp_path / name, **c)) for name, c in cases.items()}
    result = bounded(
        f"""
        for name, path in {dirs!r}.items():
            t = time.perf_counter()
            try:
                EnCodec.from_pretrained(path)
                result[name] = "loaded"
            except ValueError as exc:
                result[name] = "ValueError: " + str(exc)
            except BaseException as exc:
                result[name] = f"{{type(exc).__name__}}: {{exc}}"
            result[name + ".s"] = time.perf_counter() - t
        """,
        warmup=f"EnCodec.from_pretrained({str(tiny24)!r}).encode(torch.zeros(320))",
        timeout=120,
    )
    for name in cases:
        assert result[name].startswith("ValueError"), (name, result[name])
        assert result[name + ".s"] < 5, (name, result[name + ".s"])
    assert result["peak_growth_mb"] < 150, result


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"upsampling_ratios": [0]}, "ratios"),
        ({"compress": 0}, "compress"),
        ({"sampling_rate": 0}, "sample_rate"),
        ({"num_filters": None}, "num_filters"),
        ({"upsampling_ratios": None}, "upsampling_ratios"),
        ({"audio_channels": 0}, "channels"),
        ({"kernel_size": 7.5}, "kernel_size"),
        ({"use_causal_conv": "false"}, "use_causal_conv"),
        ({"target_bandwidths": [float("nan")]}, "target_bandwidths"),
        ({"trim_right_ratio": 2.0}, "trim_right_ratio"),
    ],
)
def test_config_values_that_divide_by_zero_or_are_null_give_one_line(tmp_path, capsys, tiny24, changes, message):
    directory = hf_dir_with_config(tiny24, tmp_path / "model", **changes)
    with pytest.raises(ValueError, match=message):
        fastencodec.EnCodec.from_pretrained(directory)
    source = write_wav(tmp_path / "in.wav", 24_000, 1, 0.1)
    assert run("compress", source, tmp_path / "out.ecdc", "--model", directory, "-q") == 1
    assert message in one_line_error(capsys)


# -- 4, 9: checkpoints --------------------------------------------------------------------------


def _deflate_bomb(tmp_path):
    """A ~1 MB .th whose zip entries expand to over 1 GB (1.17 GB of zeros)."""
    small = tmp_path / "small.th"
    torch.save({"encoder.model.0.conv.conv.weight": torch.zeros(1)}, small)
    bomb = tmp_path / "bomb.th"
    with zipfile.ZipFile(small) as src, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as dst:
        for entry in src.infolist():
            dst.writestr(entry.filename, src.read(entry.filename))
        prefix = src.infolist()[0].filename.split("/")[0]
        with dst.open(f"{prefix}/data/padding", "w", force_zip64=True) as out:
            block = bytes(1 << 24)
            for _ in range(70):
                out.write(block)
    assert bomb.stat().st_size < 8 << 20
    return bomb, small


def _expanded_view(tmp_path):
    """A torch.save-d view of one float expanded to 2**29 elements: 2 GiB once converted."""
    path = tmp_path / "expanded.th"
    torch.save({"encoder.model.0.conv.conv.weight": torch.zeros(1).expand(1 << 29)}, path)
    assert path.stat().st_size < 10_000
    return path, path


@pytest.mark.slow
@pytest.mark.parametrize(
    "make, message",
    [(_deflate_bomb, "expands to"), (_expanded_view, "bytes as float32")],
    ids=["deflate-bomb", "stride-zero-view"],
)
def test_checkpoint_claiming_gigabytes_is_refused_before_expanding(tmp_path, make, message):
    """A small checkpoint that expands to over 1 GiB is refused (ValueError) before torch.load
    inflates it or the tensors are converted: the process grows by less than 200 MB."""
    path, warm = make(tmp_path)
    result = bounded(
        f"""
        try:
            EnCodec.from_pretrained({str(path)!r})
            result["outcome"] = "loaded"
        except BaseException as exc:
            result["outcome"] = f"{{type(exc).__name__}}: {{exc}}"
        """,
        warmup=f"torch.load({str(warm)!r}, weights_only=True)",
    )
    assert result["outcome"].startswith("ValueError") and message in result["outcome"], result
    assert result["peak_growth_mb"] < 200, result


@pytest.mark.parametrize("weight", [torch.zeros(()), torch.zeros(7)], ids=["0-d", "1-D"])
def test_meta_first_conv_weight_of_wrong_rank(tmp_path, capsys, weight):
    path = tmp_path / "bad.th"
    torch.save({"encoder.model.0.conv.conv.weight_v": weight}, path)
    with pytest.raises(ValueError, match="first conv weight has shape"):
        fastencodec.EnCodec.from_pretrained(path)
    source = write_wav(tmp_path / "in.wav", 24_000, 1, 0.1)
    assert run("compress", source, tmp_path / "out.ecdc", "--model", path, "-q") == 1
    assert "first conv weight has shape" in one_line_error(capsys)


@pytest.fixture(scope="module")
def meta24_state(meta24):
    return torch.load(meta24[1], weights_only=True)


@pytest.mark.parametrize(
    "kind, message",
    [("bool", "dtype torch.bool"), ("int8", "dtype torch.int8"), ("nan", "NaN or infinite"), ("inf", "NaN")],
)
def test_checkpoints_with_bool_int8_or_nan_weights_are_refused(tmp_path, meta24_state, kind, message):
    state = dict(meta24_state)
    key = "decoder.model.0.conv.conv.bias"
    value = state[key]
    state[key] = {
        "bool": value > 0,
        "int8": value.to(torch.int8),
        "nan": value.clone().index_fill_(0, torch.tensor([3]), float("nan")),
        "inf": value.clone().index_fill_(0, torch.tensor([3]), float("inf")),
    }[kind]
    path = tmp_path / "encodec_24khz.th"
    torch.save(state, path)
    with pytest.raises(ValueError, match=message):
        fastencodec.EnCodec.from_pretrained(path)


# -- 6: the original rate in .ecdc files --------------------------------------------------------


@pytest.fixture(scope="module")
def ecdc24(tmp_path_factory, meta24):
    directory = tmp_path_factory.mktemp("ecdc24")
    source = write_wav(directory / "in.wav", 16_000, 1, 0.3)
    assert run("compress", source, directory / "x.ecdc", "--model", meta24[1], "-q") == 0
    return (directory / "x.ecdc").read_bytes()


def test_recorded_rate_is_bounded(tmp_path, capsys, meta24, ecdc24):
    meta, payload = ecdc_parts(ecdc24)
    assert meta["sr"] == 16_000
    path, output = tmp_path / "x.ecdc", tmp_path / "out.wav"
    path.write_bytes(ecdc_file(meta | {"sr": 1 << 24}, payload))  # a consistent checksum
    assert run("decompress", path, output, "--rate", "--model", meta24[1], "-q") == 1
    assert "source sample rate" in one_line_error(capsys)
    assert not output.exists()


def test_checksum_covers_the_recorded_rate(tmp_path, capsys, meta24, ecdc24):
    meta, payload = ecdc_parts(ecdc24)
    path, output = tmp_path / "x.ecdc", tmp_path / "out.wav"
    path.write_bytes(ecdc_file(meta | {"sr": 48_000}, payload, fix_crc=False))
    assert run("decompress", path, output, "--rate", "--model", meta24[1], "-q") == 1
    assert "checksum mismatch" in one_line_error(capsys)
    assert os.listdir(tmp_path) == ["x.ecdc"]
    path.write_bytes(ecdc_file(meta | {"sr": 48_000}, payload))  # the same change, checksum redone: fine
    assert run("decompress", path, output, "--rate", "--model", meta24[1], "-q") == 0
    assert sf.info(output).samplerate == 48_000


def test_files_of_the_payload_only_checksum_still_read(tmp_path, meta24, ecdc24):
    """fastencodec 0.1.0 wrote ``"crc": "crc32"``, a CRC of the codes only (a compatibility guard)."""
    meta, payload = ecdc_parts(ecdc24)
    old = payload[:-4] + struct.pack("!I", zlib.crc32(payload[:-4]))
    path = tmp_path / "old.ecdc"
    path.write_bytes(ecdc_file(meta | {"crc": "crc32"}, old, fix_crc=False))
    assert run("decompress", path, tmp_path / "out.wav", "--model", meta24[1], "-q") == 0
    path.write_bytes(ecdc_file(meta | {"crc": "crc32", "sr": 8000}, old, fix_crc=False))  # not covered there
    assert run("decompress", path, tmp_path / "out.wav", "--model", meta24[1], "-q", "-f") == 0


def test_metas_reader_still_reads_our_files(meta24, ecdc24):
    """Meta's ``encodec.compress.decompress`` reads our files (its model from our checkpoint)."""
    meta_compress = importlib.import_module("encodec.compress")
    model = meta24[0]
    original = meta_compress.MODELS["encodec_24khz"]
    meta_compress.MODELS["encodec_24khz"] = lambda: model
    try:
        audio, rate = meta_compress.decompress(ecdc24)
    finally:
        meta_compress.MODELS["encodec_24khz"] = original
    assert rate == 24_000 and audio.shape[-1] == round(0.3 * 24_000)


def test_file_api_checks_the_checksum_over_the_header(meta24, ecdc24):
    """``fastencodec.decompress`` verifies ``crc32+meta`` as the CLI does."""
    meta, payload = ecdc_parts(ecdc24)
    assert meta["crc"] == "crc32+meta"
    with pytest.raises(fastencodec.EcdcError, match="checksum mismatch"):
        tampered = ecdc_file(meta | {"sr": 48_000}, payload, fix_crc=False)
        fastencodec.decompress(tampered, model=meta24[1], rate="original")
    audio, rate = fastencodec.decompress(ecdc_file(meta | {"sr": 48_000}, payload), model=meta24[1], rate="original")
    assert rate == 48_000 and audio.shape == (1, round(0.3 * 48_000))


def test_file_api_bounds_the_output_rate(meta24, ecdc24):
    with pytest.raises(ValueError, match="above 768000 Hz"):
        fastencodec.decompress(ecdc24, model=meta24[1], rate=10**11)


def test_file_api_without_overwrite_refuses_an_output_that_appeared(tmp_path, meta24, ecdc24):
    output = tmp_path / "out.wav"
    output.write_bytes(b"someone else's")
    with pytest.raises(ValueError, match="already exists"):
        fastencodec.decompress(ecdc24, output, model=meta24[1], overwrite=False)
    assert output.read_bytes() == b"someone else's" and os.listdir(tmp_path) == ["out.wav"]
    source = write_wav(tmp_path / "in.wav", 24_000, 1, 0.1)
    with pytest.raises(ValueError, match="already exists"):
        fastencodec.compress(source, output, model=meta24[1], overwrite=False)
    fastencodec.decompress(ecdc24, output, model=meta24[1])  # the default replaces it
    assert sf.info(output).samplerate == 24_000


# -- 7: the model a name resolves to ------------------------------------------------------------


def test_name_from_an_ecdc_header_never_resolves_to_a_local_directory(tmp_path, hf24, ecdc24):
    """With ./encodec_24khz/ present and the hub offline, the file's name does not pick those weights."""
    shutil.copytree(hf24[1], tmp_path / "encodec_24khz", symlinks=True)
    (tmp_path / "x.ecdc").write_bytes(ecdc24)
    env = dict(os.environ, PYTHONPATH=CHILD_PATH, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf-home"))
    proc = subprocess.run(
        [sys.executable, "-m", "fastencodec", "decompress", "x.ecdc", "out.wav", "-q"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    assert "Hugging Face cache" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "out.wav").exists()


def test_file_api_name_from_an_ecdc_header_never_resolves_to_a_local_directory(tmp_path, hf24, ecdc24):
    """``fastencodec.decompress`` without ``model=``: the header's name means the published model only."""
    shutil.copytree(hf24[1], tmp_path / "encodec_24khz", symlinks=True)
    (tmp_path / "x.ecdc").write_bytes(ecdc24)
    code = "import fastencodec\ntry:\n    fastencodec.decompress('x.ecdc')\n    print('DECODED')\n"
    code += "except FileNotFoundError as exc:\n    print('REFUSED', exc)\n"
    env = dict(os.environ, PYTHONPATH=CHILD_PATH, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf-home"))
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.stdout.startswith("REFUSED") and "Hugging Face cache" in proc.stdout, proc.stdout + proc.stderr


def test_local_paths_only_when_passed_as_paths(tmp_path, monkeypatch, hf24):
    shutil.copytree(hf24[1], tmp_path / "encodec_24khz", symlinks=True)
    monkeypatch.chdir(tmp_path)
    codec = fastencodec.EnCodec.from_pretrained("./encodec_24khz")  # a path: the user's choice
    assert codec.name == "encodec_24khz"
    assert fastencodec.EnCodec.from_pretrained(Path("encodec_24khz")).model_id == codec.model_id
    with pytest.raises(FileNotFoundError, match="not a published model name"):
        fastencodec.EnCodec.from_pretrained("./encodec_24khz", local=False)
    with pytest.raises(FileNotFoundError, match="not a published model name"):
        fastencodec.EnCodec.from_pretrained(str(tmp_path / "encodec_24khz"), local=False)


# -- 8: tracebacks -------------------------------------------------------------------------------


def test_huge_48khz_segment_scale_is_one_line(tmp_path, capsys, meta48):
    source = write_wav(tmp_path / "in.wav", 48_000, 2, 0.2)
    assert run("compress", source, tmp_path / "x.ecdc", "--model", meta48[1], "-q") == 0
    meta, payload = ecdc_parts((tmp_path / "x.ecdc").read_bytes())
    payload = struct.pack("!f", 3.4e38) + payload[4:]
    (tmp_path / "x.ecdc").write_bytes(ecdc_file(meta, payload))
    assert run("decompress", tmp_path / "x.ecdc", tmp_path / "out.wav", "--model", meta48[1], "-q") == 1
    assert "overflows" in one_line_error(capsys)
    assert not (tmp_path / "out.wav").exists()


@pytest.mark.parametrize("command", ["compress", "decompress"])
@pytest.mark.parametrize("path", ["/", ".", ""])
def test_paths_that_name_no_file(tmp_path, monkeypatch, capsys, command, path):
    monkeypatch.chdir(tmp_path)
    assert run(command, path) == 1
    one_line_error(capsys)
    assert os.listdir(tmp_path) == []


def test_one_hz_flac_longer_than_an_ecdc_holds(tmp_path, capsys, meta24):
    """A FLAC at 1 Hz announcing 2**36 - 1 samples: 1.6e15 samples at 24 kHz."""
    path = tmp_path / "slow.flac"
    sf.write(path, np.zeros(100, np.float32), 1, format="FLAC")
    data = bytearray(path.read_bytes())
    field = int.from_bytes(data[18:26], "big") | ((1 << 36) - 1)  # STREAMINFO's total-samples field
    data[18:26] = field.to_bytes(8, "big")
    path.write_bytes(bytes(data))
    assert sf.info(path).frames == (1 << 36) - 1
    assert run("compress", path, tmp_path / "out.ecdc", "--model", meta24[1], "-q") == 1
    assert "more than an .ecdc file holds" in one_line_error(capsys)
    assert sorted(os.listdir(tmp_path)) == ["slow.flac"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["decompress", "x.ecdc", "--rate", "100000000000"], "above 768000 Hz"),
        (["compress", "-", "x.ecdc", "--stream", "--pcm-rate", "100000000000"], "above 768000 Hz"),
        (["compress", "-", "x.ecdc", "--stream", "--pcm-channels", "1000000"], "above 256"),
    ],
)
def test_out_of_range_rates_and_channel_counts_are_usage_errors(tmp_path, monkeypatch, capsys, argv, message):
    """Rates and channel counts the user gives are bounded as the file's are (a block of 10**6
    channels of raw PCM alone would be a 262 GB read)."""
    monkeypatch.chdir(tmp_path)
    assert run(*argv) == 2
    assert message in capsys.readouterr().err


# -- 9: silent bad output ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "audio",
    [np.zeros((1, 0, 100), np.float32), [np.zeros((0, 100), np.float32)], np.zeros((2, 0, 50), np.float32)],
    ids=["batch", "list", "batch2"],
)
def test_zero_channel_audio_is_refused(codec24, codec48, audio):
    for codec in (codec24, codec48):
        with pytest.raises(ValueError, match="0 channels"):
            codec.encode(audio)
        with pytest.raises(ValueError, match="0 channels"):
            codec.encode_continuous(audio)
    with pytest.raises(ValueError, match="0 channels"):
        codec24.stream_encoder().push(np.zeros((1, 0, 100), np.float32))


def test_48khz_scales_that_overflow_are_refused(codec48):
    tokens = codec48.encode(speech_like(48_000, 2, 0.2)[None], bandwidth=3.0)
    codes = np.asarray(tokens.codes)
    with pytest.raises(ValueError, match="overflows"):
        codec48.decode(codes, scales=np.array([[1e38]], np.float32), lengths=list(tokens.lengths))


def test_uint64_tokens_of_all_ones_are_not_padding(codec24):
    codes = np.asarray(codec24.encode(speech_like(24_000, 1, 0.2)).codes).astype(np.uint64)
    codes[..., -1] = np.iinfo(np.uint64).max  # would wrap to -1 (padding) as int64
    with pytest.raises(ValueError, match="out of range"):
        codec24.decode(codes)
    with pytest.raises(ValueError, match="out of range"):
        codec24.decode(torch.from_numpy(codes))
    with pytest.raises(ValueError, match="out of range"):
        codec24.stream_decoder().push(codes)


# -- 10: outputs ----------------------------------------------------------------------------------


def temps(directory: Path) -> list[str]:
    return sorted(name for name in os.listdir(directory) if name.endswith(".tmp"))


def start_stream_compress(directory: Path, model: Path, output: str, *extra: str) -> subprocess.Popen:
    """``compress --stream - OUTPUT`` in a child reading raw PCM from a pipe we hold open."""
    env = dict(os.environ, PYTHONPATH=CHILD_PATH)
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastencodec", "compress", "--stream", "-", output, "--model", str(model), "-q", *extra],
        cwd=directory,
        env=env,
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdin.write(np.zeros(2400, np.int16).tobytes())
    proc.stdin.flush()
    deadline = time.monotonic() + 60
    while not temps(directory) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert temps(directory), proc.stderr.read().decode() if proc.poll() is not None else "no temporary file"
    return proc


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_remove_the_temporary_file(tmp_path, meta24, signum):
    proc = start_stream_compress(tmp_path, meta24[1], "out.ecdc")
    proc.send_signal(signum)
    assert proc.wait(timeout=30) == -signum
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_concurrent_compress_without_force_cannot_both_succeed(tmp_path, capsys, meta24):
    """The first run checks OUTPUT before the second creates it; at commit it must refuse."""
    first = start_stream_compress(tmp_path, meta24[1], "out.ecdc")
    source = write_wav(tmp_path / "in.wav", 24_000, 1, 0.1)
    assert run("compress", source, tmp_path / "out.ecdc", "--model", meta24[1], "-q") == 0
    second_bytes = (tmp_path / "out.ecdc").read_bytes()
    first.stdin.close()
    assert first.wait(timeout=60) == 1
    err = first.stderr.read().decode()
    assert "already exists" in err and len(err.strip().splitlines()) == 1, err
    assert (tmp_path / "out.ecdc").read_bytes() == second_bytes
    assert temps(tmp_path) == []


def test_stale_temporary_files_are_removed_and_live_ones_kept(tmp_path, meta24):
    source = write_wav(tmp_path / "in.wav", 24_000, 1, 0.1)
    stale = tmp_path / ".in.ecdc.0badf00d.tmp"  # left by a writer killed with -9 an hour ago
    stale.write_bytes(b"partial")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    fresh = tmp_path / ".in.ecdc.12345678.tmp"  # perhaps a writer that is just starting
    fresh.write_bytes(b"partial")
    other = tmp_path / ".other.ecdc.0badf00d.tmp"  # another output's
    other.write_bytes(b"partial")
    os.utime(other, (time.time() - 3600, time.time() - 3600))
    assert run("compress", source, "--model", meta24[1], "-q") == 0
    assert temps(tmp_path) == [".in.ecdc.12345678.tmp", ".other.ecdc.0badf00d.tmp"]
    assert (tmp_path / "in.ecdc").exists()


def test_force_keeps_the_destination_mode_and_syncs(tmp_path, monkeypatch, meta24):
    source = write_wav(tmp_path / "in.wav", 24_000, 1, 0.1)
    output = tmp_path / "in.ecdc"
    assert run("compress", source, "--model", meta24[1], "-q") == 0
    output.chmod(0o600)
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(stat.S_IFMT(os.fstat(fd).st_mode)), real_fsync(fd)))
    assert run("compress", source, "--model", meta24[1], "-q", "-f") == 0
    assert stat.S_IMODE(output.stat().st_mode) == 0o600
    assert stat.S_IFREG in synced and stat.S_IFDIR in synced  # the file before the rename, its folder after
    output.chmod(0o640)
    assert run("decompress", output, tmp_path / "out.wav", "--model", meta24[1], "-q") == 0
    (tmp_path / "out.wav").chmod(0o600)
    assert run("decompress", output, tmp_path / "out.wav", "--model", meta24[1], "-q", "-f") == 0
    assert stat.S_IMODE((tmp_path / "out.wav").stat().st_mode) == 0o600


def test_sigterm_removes_temporary_files_of_outputs_written_on_other_threads(tmp_path):
    """The corpus writes shards on a thread, where no signal handler can be installed: the main
    thread's signal_cleanup() must cover them (tokenize_corpus enters it)."""
    script = textwrap.dedent(
        f"""
        import os, signal, threading
        from fastencodec.io.atomic import AtomicOutput, signal_cleanup
        opened, release = threading.Event(), threading.Event()
        def write():
            with AtomicOutput({str(tmp_path / "shard.parquet")!r}) as output:
                output.file.write(b"partial")
                opened.set()
                release.wait(30)
        with signal_cleanup():
            threading.Thread(target=write, daemon=True).start()
            opened.wait(30)
            os.kill(os.getpid(), signal.SIGTERM)
            release.wait(30)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(Path(fastencodec.__file__).parent.parent)}
    proc = subprocess.run([sys.executable, "-c", script], env=env, timeout=60, capture_output=True)
    assert proc.returncode == -signal.SIGTERM, proc.stderr.decode()
    assert os.listdir(tmp_path) == []
