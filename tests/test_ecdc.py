"""Tests for the .ecdc container, checked against Meta's reference primitives."""

import importlib
import io
import json
import math
import struct
import time
import zlib

import numpy as np
import pytest
import torch
from encodec import binary as meta_binary
from encodec.model import EncodecModel
from hypothesis import HealthCheck, given, settings

from fastencodec.engine.segments import SegmentLayout
from fastencodec.formats.bitpack import BitPacker, BitUnpacker
from fastencodec.formats.ecdc import EcdcError, EcdcHeader, EcdcReader, EcdcWriter
from tests.support import mutated


def segment_frame_counts(audio_length, layout):
    return layout.frame_counts(audio_length)

LAYOUT_24K = SegmentLayout(sample_rate=24000, frame_rate=75, bits_per_codebook=10, normalize=False)
LAYOUT_48K = SegmentLayout(
    sample_rate=48000,
    frame_rate=150,
    bits_per_codebook=10,
    normalize=True,
    segment_length=48000,
    segment_stride=47520,
)


def random_segments(rng, audio_length, layout, num_codebooks):
    """Random codes and scales shaped like a model's output for ``audio_length`` samples."""
    return [
        (
            rng.integers(0, 1 << layout.bits_per_codebook, (num_codebooks, frames)),
            float(np.float32(rng.uniform(0.01, 2.0))) if layout.normalize else None,
        )
        for frames in segment_frame_counts(audio_length, layout)
    ]


def meta_compress(model_name, audio_length, layout, segments):
    """Write an .ecdc stream the way Meta's compress_to_file does (use_lm=False)."""
    fo = io.BytesIO()
    metadata = {"m": model_name, "al": audio_length, "nc": segments[0][0].shape[0], "lm": False}
    meta_binary.write_ecdc_header(fo, metadata)
    for codes, scale in segments:
        if scale is not None:
            fo.write(struct.pack("!f", scale))
        packer = meta_binary.BitPacker(layout.bits_per_codebook, fo)
        for t in range(codes.shape[1]):
            for value in codes[:, t].tolist():
                packer.push(value)
        packer.flush()
    return fo.getvalue()


def meta_decompress(data, layout):
    """Read codes and scales the way Meta's decompress_from_file does, with exact frame counts."""
    fo = io.BytesIO(data)
    metadata = meta_binary.read_ecdc_header(fo)
    out = []
    for frames in segment_frame_counts(metadata["al"], layout):
        scale = None
        if layout.normalize:
            (scale,) = struct.unpack("!f", fo.read(4))
        unpacker = meta_binary.BitUnpacker(layout.bits_per_codebook, fo)
        codes = np.zeros((metadata["nc"], frames), dtype=np.int64)
        for t in range(frames):
            for k in range(metadata["nc"]):
                value = unpacker.pull()
                assert value is not None
                codes[k, t] = value
        out.append((codes, scale))
    return metadata, out


def new_writer(fo, model_name, num_codebooks, layout, **extras):
    """An ``EcdcWriter`` of ``num_codebooks`` codebooks with ``layout``'s code width and normalisation."""
    return EcdcWriter(
        fo,
        model_name=model_name,
        num_codebooks=num_codebooks,
        bits_per_codebook=layout.bits_per_codebook,
        normalize=layout.normalize,
        **extras,
    )


def our_compress(model_name, audio_length, layout, segments, **extras):
    fo = io.BytesIO()
    writer = new_writer(fo, model_name, segments[0][0].shape[0], layout, audio_length=audio_length, **extras)
    for codes, scale in segments:
        writer.write_segment(codes, scale)
    writer.finish()
    return fo.getvalue()


def our_decompress(data, layout):
    reader = EcdcReader(io.BytesIO(data))
    return reader.header, list(reader.segments(layout))


def assert_segments_equal(actual, expected):
    assert len(actual) == len(expected)
    for (codes_a, scale_a), (codes_e, scale_e) in zip(actual, expected, strict=True):
        assert codes_a.dtype == np.int64
        np.testing.assert_array_equal(codes_a, codes_e)
        assert scale_a == scale_e


@pytest.mark.interop
@pytest.mark.parametrize("bits", [1, 3, 7, 10, 13, 16])
@pytest.mark.parametrize("count", [0, 1, 5, 17, 1000])
def test_bit_packer_matches_meta(bits, count):
    rng = np.random.default_rng(bits * 1000 + count)
    values = rng.integers(0, 1 << bits, count)
    expected = io.BytesIO()
    meta_packer = meta_binary.BitPacker(bits, expected)
    for value in values.tolist():
        meta_packer.push(value)
    meta_packer.flush()
    # Ours, fed in uneven pieces so the partial byte is carried between calls.
    packer = BitPacker(bits)
    cuts = sorted(rng.integers(0, count + 1, 3).tolist())
    pieces = np.split(values, cuts)
    packed = b"".join(packer.pack(piece) for piece in pieces) + packer.flush()
    assert packed == expected.getvalue()
    ours = BitUnpacker(bits)  # read in uneven pieces too
    stream, got = io.BytesIO(packed), []
    for piece in pieces:
        got.append(ours.unpack(stream.read(ours.bytes_needed(len(piece))), len(piece)))
    np.testing.assert_array_equal(np.concatenate(got), values)
    assert stream.read() == b""
    unpacker = meta_binary.BitUnpacker(bits, io.BytesIO(packed))
    assert [unpacker.pull() for _ in range(count)] == values.tolist()


@pytest.mark.interop
def test_header_bytes_identical_to_meta_without_extras():
    rng = np.random.default_rng(0)
    segments = random_segments(rng, 30000, LAYOUT_24K, 8)
    ours = our_compress("encodec_24khz", 30000, LAYOUT_24K, segments, checksum=False)
    assert ours == meta_compress("encodec_24khz", 30000, LAYOUT_24K, segments)


@pytest.mark.interop
@pytest.mark.parametrize(
    "model_name, layout, audio_length, num_codebooks",
    [
        ("encodec_24khz", LAYOUT_24K, 24000, 2),
        ("encodec_24khz", LAYOUT_24K, 6720, 4),
        ("encodec_24khz", LAYOUT_24K, 1, 32),
        ("encodec_48khz", LAYOUT_48K, 48000, 4),
        ("encodec_48khz", LAYOUT_48K, 150001, 16),
        ("encodec_48khz", LAYOUT_48K, 47521, 8),
    ],
)
def test_round_trips_with_meta(model_name, layout, audio_length, num_codebooks):
    rng = np.random.default_rng(audio_length)
    segments = random_segments(rng, audio_length, layout, num_codebooks)
    # Meta -> ours.
    header, read = our_decompress(meta_compress(model_name, audio_length, layout, segments), layout)
    assert header == EcdcHeader(model_name, audio_length, num_codebooks)
    assert_segments_equal(read, segments)
    # Ours (with extras and a CRC trailer) -> Meta and ours.
    data = our_compress(model_name, audio_length, layout, segments, source_sample_rate=44100, source_channels=6)
    metadata, read = meta_decompress(data, layout)
    assert metadata["m"] == model_name and metadata["al"] == audio_length
    assert metadata["nc"] == num_codebooks and metadata["lm"] is False
    assert_segments_equal(read, segments)
    header, read = our_decompress(data, layout)
    assert header == EcdcHeader(model_name, audio_length, num_codebooks, 44100, 6, True)
    assert_segments_equal(read, segments)


def test_segment_frame_counts():
    assert list(segment_frame_counts(6720, LAYOUT_24K)) == [21]
    assert list(segment_frame_counts(24001, LAYOUT_24K)) == [76]
    # 48 kHz: segments start every 47,520 samples and last up to 48,000 samples.
    assert list(segment_frame_counts(100000, LAYOUT_48K)) == [150, 150, 16]
    assert list(segment_frame_counts(48000, LAYOUT_48K)) == [150, 2]
    for length in (1, 47520, 48000, 95040, 95500, 10**6 + 7):
        assert LAYOUT_48K.total_frames(length) == sum(segment_frame_counts(length, LAYOUT_48K))
        assert LAYOUT_48K.count(length) == len(list(segment_frame_counts(length, LAYOUT_48K)))


def test_frame_counts_of_huge_lengths_are_arithmetic():
    """A forged length (10**13 samples: 210 million segments) is counted without enumerating segments."""
    start = time.perf_counter()
    assert LAYOUT_48K.total_frames(10**13) > 10**10 and LAYOUT_48K.count(10**13) == -(-(10**13) // 47520)
    assert time.perf_counter() - start < 0.1


def test_streaming_write_in_frame_chunks_and_chunked_read():
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 1024, (3, 7501))
    fo = io.BytesIO()
    writer = new_writer(fo, "encodec_24khz", 3, LAYOUT_24K, audio_length=7501 * 320)
    writer.begin_segment()
    for start in range(0, codes.shape[1], 333):
        writer.write_frames(codes[:, start : start + 333])
    writer.end_segment()
    writer.finish()
    chunks = list(EcdcReader(io.BytesIO(fo.getvalue())).chunks(LAYOUT_24K, max_frames=1000))
    assert [chunk.codes.shape[1] for chunk in chunks] == [1000] * 7 + [501]
    assert chunks[0].first and not chunks[0].last and chunks[-1].last
    np.testing.assert_array_equal(np.concatenate([c.codes for c in chunks], axis=1), codes)


def test_unknown_length_is_patched_and_meta_reads_it():
    rng = np.random.default_rng(2)
    segments = random_segments(rng, 95000, LAYOUT_48K, 4)
    fo = io.BytesIO()
    writer = new_writer(fo, "encodec_48khz", 4, LAYOUT_48K)
    for codes, scale in segments:
        writer.write_segment(codes, scale)
    with pytest.raises(ValueError, match="audio length"):
        writer.finish()
    writer.finish(audio_length=95000)
    data = fo.getvalue()
    metadata, read = meta_decompress(data, LAYOUT_48K)
    assert metadata["al"] == 95000
    assert_segments_equal(read, segments)
    assert our_decompress(data, LAYOUT_48K)[0].audio_length == 95000


def test_unknown_length_needs_seekable_output():
    class Pipe(io.BytesIO):
        def seekable(self):
            return False

    with pytest.raises(ValueError, match="seekable"):
        EcdcWriter(Pipe(), model_name="m", num_codebooks=1, bits_per_codebook=10, normalize=False)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"normalize": True}, "scale"),
        ({"num_codebooks": 33}, "codebook count"),
        ({"audio_length": -1}, "audio length"),
        ({"bits_per_codebook": 0}, "bits per codebook"),
    ],
)
def test_writer_rejects_bad_arguments(kwargs, message):
    arguments = {
        "model_name": "encodec_24khz",
        "num_codebooks": 2,
        "bits_per_codebook": 10,
        "normalize": False,
        "audio_length": 320,
    } | kwargs
    with pytest.raises(ValueError, match=message):
        writer = EcdcWriter(io.BytesIO(), **arguments)
        writer.write_segment(np.zeros((2, 1), dtype=np.int64))


def test_writer_rejects_out_of_range_codes():
    writer = EcdcWriter(
        io.BytesIO(),
        model_name="m",
        num_codebooks=2,
        bits_per_codebook=10,
        normalize=False,
        audio_length=320,
    )
    writer.begin_segment()
    with pytest.raises(ValueError, match="codes must lie"):
        writer.write_frames(np.array([[0], [1024]]))
    with pytest.raises(ValueError, match="shape"):
        writer.write_frames(np.zeros((3, 1), dtype=np.int64))


def valid_file(checksum=True):
    rng = np.random.default_rng(3)
    segments = random_segments(rng, 50000, LAYOUT_48K, 4)
    return our_compress("encodec_48khz", 50000, LAYOUT_48K, segments, checksum=checksum)


def read_all(data, layout=LAYOUT_48K):
    reader = EcdcReader(io.BytesIO(data))
    return [chunk.codes for chunk in reader.chunks(layout)]


def raw_file(metadata, payload=b"", version=0, magic=b"ECDC"):
    meta = metadata if isinstance(metadata, bytes) else json.dumps(metadata).encode()
    return struct.pack("!4sBI", magic, version, len(meta)) + meta + payload


GOOD_META = {"m": "encodec_24khz", "al": 640, "nc": 2, "lm": False}


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "truncated"),
        (b"ECD", "truncated"),
        (raw_file(GOOD_META, magic=b"RIFF"), "magic"),
        (raw_file(GOOD_META, version=2), "version 2"),
        (raw_file(b"{"), "JSON"),
        (raw_file(b"\xff\xfe"), "JSON"),
        (raw_file(b"[" * 60000), "JSON"),
        (raw_file([1, 2]), "object"),
        (struct.pack("!4sBI", b"ECDC", 0, 0xFFFFFFFF), "metadata size"),
        (raw_file(GOOD_META)[:-3], "truncated"),
        (raw_file({"m": "x", "al": 640, "lm": False}), "lacks nc"),
        (raw_file(GOOD_META | {"lm": "lmp1"}), "lm 'lmp1' is not a symbol coder of ECDC version 0"),
        (raw_file(GOOD_META, version=1), "lm False is not a symbol coder of ECDC version 1"),
        (raw_file(GOOD_META | {"lm": "zzz"}), "coder 'zzz', which is not available"),
        (raw_file(GOOD_META | {"lm": 0}), "lm"),
        (raw_file(GOOD_META | {"al": -5}), "audio length"),
        (raw_file(GOOD_META | {"al": 10**30}), "audio length"),
        (raw_file(GOOD_META | {"al": 640.0}), "audio length"),
        (raw_file(GOOD_META | {"al": True}), "audio length"),
        (raw_file(GOOD_META | {"nc": 1000}), "codebook count"),
        (raw_file(GOOD_META | {"m": 3}), "model name"),
        (raw_file(GOOD_META | {"m": "\ud800"}), "model name"),
        (raw_file(GOOD_META | {"sr": "44100"}), "source sample rate"),
        (raw_file(GOOD_META | {"crc": "md5"}), "checksum"),
        (raw_file(b'{"al": 1' + b"0" * 5000 + b"}"), "JSON"),
    ],
)
def test_reader_rejects_malformed_headers(data, message):
    with pytest.raises(EcdcError, match=message):
        read_all(data, LAYOUT_24K)


def test_reader_rejects_bad_payloads():
    data = valid_file()
    with pytest.raises(EcdcError, match="truncated"):
        read_all(data[:-10])
    with pytest.raises(EcdcError, match="trailing data"):
        read_all(data + b"\0")
    corrupt = bytearray(data)
    corrupt[-20] ^= 0x40
    with pytest.raises(EcdcError, match="checksum mismatch"):
        read_all(bytes(corrupt))
    # Without a checksum, trailing bytes and a bad scale are still caught.
    data = valid_file(checksum=False)
    with pytest.raises(EcdcError, match="trailing data"):
        read_all(data + b"\0")
    metadata_end = 9 + struct.unpack("!I", data[5:9])[0]
    nan_scale = data[:metadata_end] + struct.pack("!f", math.nan) + data[metadata_end + 4 :]
    with pytest.raises(EcdcError, match="scale"):
        read_all(nan_scale)


def test_gigantic_claimed_length_fails_fast_without_allocating():
    data = raw_file(GOOD_META | {"al": 1 << 40, "nc": 32}, payload=struct.pack("!f", 1.0) + b"\0" * 100)
    start = time.perf_counter()
    with pytest.raises(EcdcError, match="truncated"):
        read_all(data, LAYOUT_24K)
    with pytest.raises(EcdcError, match="truncated"):
        read_all(data, LAYOUT_48K)
    assert time.perf_counter() - start < 1.0


def test_checksum_covers_payload_then_metadata():
    data = valid_file()
    metadata_end = 9 + struct.unpack("!I", data[5:9])[0]
    assert struct.unpack("!I", data[-4:])[0] == zlib.crc32(data[9:metadata_end], zlib.crc32(data[metadata_end:-4]))


FUZZ_BASE = valid_file()




@pytest.mark.slow
@settings(
    max_examples=1000,
    deadline=500,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(mutated(FUZZ_BASE))
def test_fuzzed_streams_only_raise_ecdc_error(data):
    for layout in (LAYOUT_48K, LAYOUT_24K):
        try:
            chunks = read_all(data, layout)
        except EcdcError:
            continue
        assert all(chunk.dtype == np.int64 for chunk in chunks)


@pytest.mark.interop
@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")
@pytest.mark.parametrize("name, bandwidth, audio_length", [("24khz", 1.5, 30001), ("48khz", 6.0, 100000)])
def test_meta_cli_codec_reads_our_files(monkeypatch, name, bandwidth, audio_length):
    """End to end with Meta's own compress/decompress, on a random-weight model."""
    torch.manual_seed(0)
    model = getattr(EncodecModel, f"encodec_model_{name}")(pretrained=False)
    model.name = f"encodec_{name}"
    model.set_target_bandwidth(bandwidth)
    meta_compress_module = importlib.import_module("encodec.compress")
    monkeypatch.setitem(meta_compress_module.MODELS, model.name, lambda: model)
    layout = SegmentLayout(
        model.sample_rate,
        model.frame_rate,
        model.bits_per_codebook,
        model.normalize,
        model.segment_length,
        model.segment_stride,
    )
    wav = torch.randn(model.channels, audio_length) * 0.1
    meta_bytes = meta_compress_module.compress(model, wav, use_lm=False)
    with torch.no_grad():
        frames = model.encode(wav[None])
    segments = [(codes[0].numpy(), None if scale is None else scale.item()) for codes, scale in frames]

    header, read = our_decompress(meta_bytes, layout)
    assert header == EcdcHeader(model.name, audio_length, segments[0][0].shape[0])
    assert_segments_equal(read, segments)

    plain = our_compress(model.name, audio_length, layout, segments, checksum=False)
    assert plain == meta_bytes
    ours = our_compress(model.name, audio_length, layout, segments, source_sample_rate=44100, source_channels=1)
    expected, rate = meta_compress_module.decompress(meta_bytes)
    decoded, rate_ours = meta_compress_module.decompress(ours)
    assert rate == rate_ours == model.sample_rate
    torch.testing.assert_close(decoded, expected, rtol=0, atol=0)
