"""Long audio: chunked (24 kHz) and segment-wise (48 kHz) coding equals the reference, in bounded memory."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fastencodec import EnCodec, Tokens
from fastencodec.engine.policy import CPU_CHUNK_SAMPLES as CHUNK_SAMPLES
from tests.support import assert_audio_close, assert_same_codes, hf_run, meta_run, speech_like

MEMORY_SCRIPT = """
import json, resource, sys
import numpy as np, torch
from fastencodec.engine.blocks import stream_decode, stream_encode
from tests.support import tiny_codec

def high():  # this process's peak resident memory so far, bytes
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

codec = tiny_codec()
n = int(sys.argv[1])
audio = torch.from_numpy(np.random.default_rng(0).standard_normal((1, n), dtype=np.float32) * 0.1)
audio = audio[None]
engine = codec.engine
CHUNK_SAMPLES = engine.policy.chunk_samples
warm = stream_encode(engine, audio[..., : 4 * CHUNK_SAMPLES], 2)  # the working set of a few chunks
stream_decode(engine, warm, 4 * CHUNK_SAMPLES, "cpu")
base = high()
codes = stream_encode(engine, audio, 2)
encode_growth = high() - base
base = high()
out = stream_decode(engine, codes, n, "cpu")
print(json.dumps([encode_growth, high() - base, out.nbytes]))
"""


@pytest.mark.slow
def test_long_24khz_chunks_match_reference(meta24):
    codec = EnCodec.from_pretrained(meta24[1])
    audio = speech_like(24_000, 1, 2.9)[None]  # 69_600 samples: two chunks
    assert audio.shape[-1] > CHUNK_SAMPLES
    codes, _, ref_audio = meta_run(meta24[0], audio, 6.0)
    tokens = codec.encode(audio, bandwidth=6.0)
    assert_same_codes(codec, tokens.codes, codes, audio)
    assert_audio_close(codec.decode(Tokens(codes, (audio.shape[-1],), None, codec.model_id)), ref_audio)
    emb = codec.encode_continuous(audio)
    with torch.no_grad():
        assert_audio_close(emb, meta24[0].encoder(audio))


@pytest.mark.slow
def test_long_48khz_file_matches_reference(meta48, monkeypatch):
    """Segments of 1 s with 1% overlap, as the reference codes them, two segments per batch."""
    codec = EnCodec.from_pretrained(meta48[1], batch_samples=2 * 48_000)
    audio = speech_like(48_000, 2, 3.3)[None]  # 4 segments, the last one short: 3 batches
    codes, scales, ref_audio = meta_run(meta48[0], audio, 6.0)
    tokens = codec.encode(audio, bandwidth=6.0)
    assert np.array_equal(tokens.codes, codes.numpy())
    np.testing.assert_allclose(tokens.scales, scales.numpy(), rtol=1e-6, atol=0)  # batched sums: rounding
    assert_audio_close(codec.decode(tokens), ref_audio)


def test_manual_chunking_still_works(meta24):
    """The seed's recipe (encode chunks, concatenate codes, decode) keeps working."""
    codec = EnCodec.from_pretrained(meta24[1])
    audio = speech_like(24_000, 1, 1.0).numpy()
    codes = np.concatenate([codec.encode(audio[:, i : i + 9_600]).codes for i in range(0, 24_000, 9_600)], axis=-1)
    assert codec.decode(codes).shape == (1, 1, codes.shape[-1] * 320)


@pytest.mark.slow
def test_long_encode_decode_memory_does_not_grow_with_length():
    """2 minutes at 24 kHz coded chunk by chunk: peak memory beyond the input and output arrays stays
    under a fixed bound (a fresh process's peak resident memory, after a warm-up of 4 chunks).

    A narrow model of the 24 kHz architecture keeps this quick (an hour takes minutes on a
    2-core CPU even so): the working set is one chunk's activations and a few frames of state
    per layer whatever the width. Keeping one float per sample would add 11 MiB here.
    """
    n = 2 * 60 * 24_000
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(n)], cwd=root, capture_output=True, text=True, check=True
    )
    encode_growth, decode_growth, output_bytes = json.loads(result.stdout.strip().splitlines()[-1])
    assert encode_growth < 8 << 20, f"encode grew {encode_growth / 2**20:.1f} MiB"
    assert decode_growth < output_bytes + (8 << 20), f"decode grew {(decode_growth - output_bytes) / 2**20:.1f} MiB"


@pytest.mark.slow
def test_long_batch_and_mixed_lengths_match_items_alone(meta24):
    """Long items of equal length stream together (at most ``batch_samples`` samples of them per
    chunk: here two, then one); short ones take the batched path."""
    codec = EnCodec.from_pretrained(meta24[1])
    long_items = [speech_like(24_000, 1, 2.9, seed=s)[0] for s in (3, 4, 6)]
    assert codec.policy.batch_samples // codec.policy.chunk_samples == 2
    short = speech_like(24_000, 1, 0.4, seed=5)[0]
    tokens = codec.encode([*long_items, short], bandwidth=3.0)
    decoded = codec.decode(tokens)
    for i, item in enumerate((*long_items, short)):
        alone = codec.encode(item, bandwidth=3.0)
        assert_same_codes(codec, tokens.codes[i : i + 1, :, : alone.shape[-1]], alone.codes, item)
        torch.testing.assert_close(decoded[i], codec.decode(alone)[0], rtol=0, atol=1e-6)


@pytest.mark.slow
def test_long_32khz_chunks_match_transformers(hf32):
    """MusicGen's 32 kHz codec (centred convolutions) also runs long audio in chunks through a stream."""
    model, path = hf32
    codec = EnCodec.from_pretrained(path)
    audio = speech_like(32_000, 1, 4.3)[None]
    assert audio.shape[-1] > 2 * CHUNK_SAMPLES
    codes, _, ref_audio = hf_run(model, audio, 2.2)
    tokens = codec.encode(audio)
    assert_same_codes(codec, tokens.codes, codes, audio)
    assert_audio_close(codec.decode(tokens), ref_audio)
