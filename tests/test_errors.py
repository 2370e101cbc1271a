"""Every bad input raises a clear ValueError/FileNotFoundError naming the problem."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from fastencodec.models import EnCodec
from tests.support import speech_like


@pytest.fixture(scope="module")
def codes(codec24):
    return np.asarray(codec24.encode(speech_like(24_000, 1, 0.3)))


@pytest.mark.parametrize(
    "audio, message",
    [
        (np.zeros((1, 1, 1, 100), np.float32), r"shape \(1, 1, 1, 100\)"),
        (np.float32(0.5), r"shape \(\)"),
        (np.zeros((1, 0), np.float32), "empty"),
        (np.zeros((0, 100), np.float32), "empty batch"),
        (np.array([0.1, np.nan, 0.2], np.float32), "NaN or Inf"),
        (np.array([0.1, np.inf], np.float32), "NaN or Inf"),
        (np.zeros(100, np.int16), "dtype torch.int16"),
        ([np.zeros(10), np.zeros((1, 1, 10))], r"audio\[1\] has shape"),
        ("not audio", "could not be converted|not a numeric array|unsupported dtype"),
    ],
)
def test_bad_audio(codec24, audio, message):
    with pytest.raises(ValueError, match=message):
        codec24.encode(audio)


def test_bad_lengths(codec24):
    with pytest.raises(ValueError, match="lengths has 1 entries for a batch of 2"):
        codec24.encode(np.zeros((2, 100), np.float32), lengths=[100])
    with pytest.raises(ValueError, match=r"lengths\[0\] = 101 is outside 1..100"):
        codec24.encode(np.zeros((1, 100), np.float32), lengths=[101])


@pytest.mark.parametrize("bandwidth", [5.0, 48.0, 0, -1.5, "fast", float("nan")])
def test_bad_bandwidth(codec24, bandwidth):
    with pytest.raises(ValueError, match="bandwidth"):
        codec24.encode(np.zeros(3200, np.float32), bandwidth=bandwidth)


def test_tokens_out_of_range(codec24, codes):
    bad = codes.copy()
    bad[0, 1, 3] = 1024
    with pytest.raises(ValueError, match=r"out of range: values \d+..1024, expected 0..1023"):
        codec24.decode(bad)
    bad[0, 1, 3] = -7
    with pytest.raises(ValueError, match="out of range"):
        codec24.decode(bad)
    bad[0, 1, 3] = -1  # -1 inside the signal is not padding
    with pytest.raises(ValueError, match="not whole trailing padding frames"):
        codec24.decode(bad)


def test_tokens_wrong_codebook_count_rank_and_dtype(codec24, codes):
    with pytest.raises(ValueError, match="33 codebooks; encodec_24khz has 1 to 32"):
        codec24.decode(np.zeros((1, 33, 10), np.int64))
    with pytest.raises(ValueError, match="0 codebooks"):
        codec24.decode(np.zeros((1, 0, 10), np.int64))
    with pytest.raises(ValueError, match="expected \\[batch, codebooks, frames\\]"):
        codec24.decode(codes[0, 0])
    with pytest.raises(ValueError, match="must be integers"):
        codec24.decode(codes.astype(np.float32))


def test_tokens_from_another_model(codec24, codec48):
    other = codec48
    tokens = other.encode(speech_like(48_000, 2, 0.2)[None], bandwidth=3.0)
    with pytest.raises(ValueError, match="tokens come from another model .*encodec_48khz"):
        codec24.decode(tokens)
    with pytest.raises(ValueError, match="tokens come from another model"):
        other.decode(codec24.encode(speech_like(24_000, 1, 0.2), bandwidth=1.5))


def test_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file or directory"):
        EnCodec.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="model.safetensors or pytorch_model.bin"):
        EnCodec.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a model name"):
        EnCodec.from_pretrained("./relative/missing")


def test_incomplete_and_corrupt_checkpoints(tmp_path, hf24, meta24):
    tensors = load_file(str(hf24[1] / "model.safetensors"))
    del tensors["decoder.layers.1.lstm.weight_hh_l1"]
    (tmp_path / "incomplete").mkdir()
    (tmp_path / "incomplete" / "config.json").write_text((hf24[1] / "config.json").read_text())
    save_file(tensors, str(tmp_path / "incomplete" / "model.safetensors"))
    with pytest.raises(ValueError, match="incomplete: 1 tensors missing.*decoder.layers.1.lstm.weight_hh_l1"):
        EnCodec.from_pretrained(tmp_path / "incomplete")

    truncated = tmp_path / "truncated.th"
    truncated.write_bytes(meta24[1].read_bytes()[:5000])
    with pytest.raises(ValueError, match="truncated.th: not a checkpoint"):
        EnCodec.from_pretrained(truncated)

    (tmp_path / "noconfig").mkdir()
    save_file(tensors, str(tmp_path / "noconfig" / "model.safetensors"))
    with pytest.raises(FileNotFoundError, match="needs a config.json"):
        EnCodec.from_pretrained(tmp_path / "noconfig" / "model.safetensors")


def test_checkpoint_of_another_architecture(tmp_path, meta24):
    state = torch.load(meta24[1], weights_only=True)
    extra = {k: v for k, v in state.items() if not k.startswith("quantizer.vq.layers.31.")}
    torch.save(extra, tmp_path / "31q.th")
    with pytest.raises(ValueError, match="matches no published EnCodec model .*31 codebooks"):
        EnCodec.from_pretrained(tmp_path / "31q.th")
    state["encoder.model.99.conv.conv.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "extra.th")
    with pytest.raises(ValueError, match="another architecture.*encoder.layers.99"):
        EnCodec.from_pretrained(tmp_path / "extra.th")
    torch.save({"not": "tensors"}, tmp_path / "junk.th")
    with pytest.raises(ValueError, match="state dict of tensors"):
        EnCodec.from_pretrained(tmp_path / "junk.th")


def test_bad_dtype(codec24):
    with pytest.raises(ValueError, match="floating-point"):
        codec24.to(dtype=torch.int8)
