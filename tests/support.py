"""What the tests share: random-weight reference models (Meta's ``encodec`` and ``transformers``),
test signals, tiny models, and the assertions parity tests make. No test module imports another.

Random initialisation leaves codebooks at zero, so every frame would map to code 0 and a
parity test would prove nothing. The codebooks are seeded from encoder embeddings of
random audio (each level from the residual left by the previous ones), so tokens are diverse.
"""

from __future__ import annotations

import importlib.machinery
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import torch
from hypothesis import strategies as st

from fastencodec import EnCodec, EncodecConfig
from fastencodec.engine.segments import SegmentLayout
from fastencodec.nn.model import EncodecModel


def install_torchaudio_standin() -> None:
    """Let ``import encodec`` work without torchaudio.

    Meta's ``encodec`` imports ``torchaudio`` at module level only for I/O helpers the tests
    and benchmarks never call, and torchaudio is not installed (its pin drags in another
    torch). The stand-in is a proper (empty) package with a module spec, so that import
    machinery that inspects it (``importlib.util.find_spec``, transformers' availability probes,
    which also look for installed package metadata and find none) keeps working.
    """
    import transformers.utils.import_utils as hf_imports

    hf_imports.is_torchaudio_available()  # transformers caches its answer: ask before the stand-in exists
    try:
        import torchaudio  # noqa: F401
    except ImportError:
        for name in ("torchaudio", "torchaudio.functional", "torchaudio.transforms"):
            module = types.ModuleType(name)
            module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=name == "torchaudio")
            module.__path__ = []
            sys.modules[name] = module
            if "." in name:
                setattr(sys.modules["torchaudio"], name.split(".")[1], module)


# The published facebook/encodec_*khz config.json contents that matter.
HF_24KHZ: dict = {"model_type": "encodec"}
HF_48KHZ: dict = {
    "model_type": "encodec",
    "sampling_rate": 48_000,
    "audio_channels": 2,
    "target_bandwidths": [3.0, 6.0, 12.0, 24.0],
    "use_causal_conv": False,
    "norm_type": "time_group_norm",
    "normalize": True,
    "chunk_length_s": 1.0,
    "overlap": 0.01,
}
HF_32KHZ: dict = {
    "model_type": "encodec",
    "audio_channels": 1,
    "chunk_length_s": None,
    "codebook_dim": 128,
    "codebook_size": 2048,
    "compress": 2,
    "dilation_growth_rate": 2,
    "hidden_size": 128,
    "kernel_size": 7,
    "last_kernel_size": 7,
    "norm_type": "weight_norm",
    "normalize": False,
    "num_filters": 64,
    "num_lstm_layers": 2,
    "num_residual_layers": 1,
    "overlap": None,
    "pad_mode": "reflect",
    "residual_kernel_size": 3,
    "sampling_rate": 32000,
    "target_bandwidths": [2.2],
    "trim_right_ratio": 1.0,
    "upsampling_ratios": [8, 5, 4, 4],
    "use_causal_conv": False,
    "use_conv_shortcut": False,
}


def speech_like(sample_rate: int, channels: int, seconds: float, seed: int = 0) -> torch.Tensor:
    """Speech-like test audio ``[channels, samples]``: harmonics with vibrato, bursts of noise."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    out = np.zeros((channels, n))
    for c in range(channels):
        f0 = rng.uniform(90, 300) * (1 + 0.05 * np.sin(2 * np.pi * rng.uniform(2, 6) * t))
        phase = 2 * np.pi * np.cumsum(f0) / sample_rate
        voice = sum(np.sin(k * phase) / k for k in range(1, 8))
        envelope = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(1, 4) * t + rng.uniform(0, 6))
        out[c] = 0.15 * envelope * voice + 0.02 * rng.standard_normal(n)
    return torch.from_numpy(out.astype(np.float32))


@torch.no_grad()
def center_embeddings(encode, last_bias: torch.Tensor, sample_rate: int, channels: int) -> None:
    """Shift the encoder's last bias so embeddings of speech-like audio average to zero.

    A random encoder's embeddings are one large shared offset plus a small signal-dependent
    part, so the distances that pick codes cancel down to float rounding and near-ties are
    everywhere; a trained encoder's embeddings carry the signal, as these then do.
    """
    audio = torch.stack([speech_like(sample_rate, channels, 1.0, 100 + i) for i in range(2)])
    last_bias -= encode(audio).mean(dim=(0, 2))


@torch.no_grad()
def seed_codebooks(encode, embeds: list[torch.Tensor], sample_rate: int, channels: int, seed: int = 0) -> None:
    """Fill codebook tensors ``[bins, dim]`` in place from embeddings ``encode(audio)`` ``[B, dim, T]``.

    Each entry is a distinct embedding frame (of the residual left by the previous levels) plus a
    little noise, so entries are well separated and nearest-neighbour ties are as rare as in a
    trained codebook.
    """
    gen = torch.Generator().manual_seed(seed)
    bins, dim = embeds[0].shape
    frames: list[torch.Tensor] = []
    item = 0
    while sum(f.shape[0] for f in frames) < 2 * bins:
        audio = speech_like(sample_rate, channels, 2.0, seed + item)[None]
        audio = audio + 0.05 * torch.randn(audio.shape, generator=gen)
        frames.append(encode(audio).transpose(1, 2).reshape(-1, dim))
        item += 1
    residual = torch.cat(frames)
    for embed in embeds:
        pick = torch.randperm(residual.shape[0], generator=gen)[:bins]
        embed.copy_(residual[pick] + 0.05 * residual.std() * torch.randn(embed.shape, generator=gen))
        residual = residual - embed[torch.cdist(residual, embed).argmin(dim=1)]


def meta_model(kind: str, directory: Path):
    """Meta ``EncodecModel`` with random weights and seeded codebooks, and its saved ``.th`` path."""
    from encodec.model import EncodecModel

    torch.manual_seed(1 if kind == "24khz" else 2)
    model = getattr(EncodecModel, f"encodec_model_{kind}")(pretrained=False).eval()
    embeds = [layer._codebook.embed for layer in model.quantizer.vq.layers]
    center_embeddings(model.encoder, model.encoder.model[-1].conv.conv.bias, model.sample_rate, model.channels)
    seed_codebooks(model.encoder, embeds, model.sample_rate, model.channels)
    name = {"24khz": "encodec_24khz-d7cc33bc.th", "48khz": "encodec_48khz-7e698e3e.th"}[kind]
    path = Path(directory) / name
    torch.save(model.state_dict(), path)
    return model, path


def hf_model(config: dict, directory: Path):
    """transformers ``EncodecModel`` with random weights and seeded codebooks, saved with save_pretrained."""
    from transformers import EncodecConfig, EncodecModel

    torch.manual_seed(3 + config.get("sampling_rate", 24_000) // 1000)
    cfg = EncodecConfig(**{k: v for k, v in config.items() if k != "model_type"})
    model = EncodecModel(cfg).eval()
    embeds = [layer.codebook.embed for layer in model.quantizer.layers]
    center_embeddings(model.encoder, model.encoder.layers[-1].conv.bias, cfg.sampling_rate, cfg.audio_channels)
    seed_codebooks(model.encoder, embeds, cfg.sampling_rate, cfg.audio_channels)
    model.save_pretrained(directory)
    return model, Path(directory)


# -- assertions and runs shared by the parity tests -----------------------------------------

MAX_CODE_MISMATCH = 0.001  # fraction of tokens allowed to differ (distance ties only)
AUDIO_TOL = 1e-4  # max abs error relative to the reference's peak


def assert_codes_match(ours, ref):
    ours, ref = torch.as_tensor(np.asarray(ours)), torch.as_tensor(ref)
    assert ours.shape == ref.shape
    mismatch = (ours != ref).float().mean().item()
    assert mismatch <= MAX_CODE_MISMATCH, f"{mismatch:.4%} of tokens differ"
    # the test only means something if tokens are diverse
    assert len(torch.unique(ref[:, 0])) >= 8


def assert_audio_close(ours, ref, tol=AUDIO_TOL):
    """Max abs error at most ``tol`` of the reference's peak."""
    ours, ref = torch.as_tensor(np.asarray(ours)), torch.as_tensor(np.asarray(ref))
    assert ours.shape == ref.shape
    err = (ours - ref).abs().max().item() / ref.abs().max().item()
    assert err <= tol, f"max abs error {err:.2e} of peak"


@torch.no_grad()
def meta_run(model, audio, bandwidth):
    """Reference codes [B, K, T], scales [B, S] or None, decoded audio trimmed."""
    model.set_target_bandwidth(bandwidth)
    frames = model.encode(audio)
    codes = torch.cat([c for c, _ in frames], dim=-1)
    scales = torch.cat([s for _, s in frames], dim=-1) if frames[0][1] is not None else None
    return codes, scales, model.decode(frames)[..., : audio.shape[-1]]


@torch.no_grad()
def hf_run(model, audio, bandwidth):
    enc = model.encode(audio, bandwidth=bandwidth)
    chunks = list(enc.audio_codes)
    if enc.last_frame_pad_length:
        chunks[-1] = chunks[-1][..., : -enc.last_frame_pad_length]
    codes = torch.cat(chunks, dim=-1)
    scales = None if enc.audio_scales[0] is None else torch.cat(enc.audio_scales, dim=-1)
    audio_out = model.decode(enc.audio_codes, enc.audio_scales, last_frame_pad_length=enc.last_frame_pad_length)[0]
    return codes, scales, audio_out[..., : audio.shape[-1]]


def tiny_codec() -> EnCodec:
    """A narrow causal model of the 24 kHz architecture (random weights): cheap long streams."""
    return EnCodec(EncodecModel(EncodecConfig(n_filters=2, dimension=8, name="encodec_24khz")))


def first_codebook_gap(codec, emb, codes, frame, k, other):
    """Relative distance gap between ``codes[k]`` and ``other`` for the residual left at codebook ``k``."""
    embed = codec.model.quantizer.embed.double()
    residual = emb[:, frame].double() - sum(embed[j, codes[j, frame]] for j in range(k))
    d_ours = (residual - embed[k, codes[k, frame]]).pow(2).sum()
    d_other = (residual - embed[k, other]).pow(2).sum()
    return float((d_other - d_ours).abs() / (residual.pow(2).sum() + embed[k, other].pow(2).sum()))


def assert_same_codes(codec, stream, offline, audio):
    """Codes equal, except frames whose first differing codebook is a float-rounding tie.

    The convolutions compute the same sums whatever the chunking, but oneDNN picks its
    kernel by input length, so embeddings differ in the last bit; a distance comparison
    that close can go either way (this test model's seeded codebooks have many).
    """
    stream, offline = np.asarray(stream), np.asarray(offline)
    assert stream.shape == offline.shape
    differ = np.argwhere((stream != offline).any(axis=1))
    if len(differ) == 0:
        return
    emb = torch.as_tensor(codec.encode_continuous(audio))
    for b, t in differ:
        k = int(np.argmax(stream[b, :, t] != offline[b, :, t]))
        gap = first_codebook_gap(codec, emb[b], torch.as_tensor(offline[b]), t, k, int(stream[b, k, t]))
        assert gap < 1e-5, f"item {b} frame {t} codebook {k}: not a tie (relative gap {gap:.1e})"
    assert len(differ) <= max(2, 0.01 * offline.shape[0] * offline.shape[-1]), f"{len(differ)} frames differ"


@st.composite
def mutated(draw, base: bytes):
    """``base`` after 1 to 4 byte flips, truncations, insertions or deletions."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete"]))
        # Half of the edits land in the prefix and metadata, the rest anywhere.
        end = max(len(data) - 1, 0)
        position = draw(st.one_of(st.integers(0, min(end, 120)), st.integers(0, end)))
        if kind == "flip" and data:
            data[position] ^= draw(st.integers(1, 255))
        elif kind == "truncate":
            del data[position:]
        elif kind == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[position : position + draw(st.integers(1, 8))]
    return bytes(data)


TINY = {"num_filters": 4, "hidden_size": 16, "num_lstm_layers": 1, "codebook_size": 1024, "target_bandwidths": [1.5]}
"""A small EnCodec architecture (random weights load in milliseconds)."""


def save_tiny(directory: Path, **config) -> Path:
    """A random-weight transformers EncodecModel of ``TINY`` (plus ``config``) with random
    codebooks, saved with save_pretrained."""
    from transformers import EncodecConfig as HFConfig
    from transformers import EncodecModel as HFModel

    with torch.random.fork_rng(), torch.no_grad():  # the same weights every time, the caller's RNG untouched
        torch.manual_seed(0)
        model = HFModel(HFConfig(**(TINY | config)))
        for layer in model.quantizer.layers:  # transformers leaves codebooks at zero: every code would be 0
            layer.codebook.embed.normal_()
        model.save_pretrained(directory)
    return directory


@torch.no_grad()
def fast_model(sample_rate: int = 24_000, seed: int = 0) -> EncodecModel:
    """fastencodec ``EncodecModel`` (24, 32 or 48 kHz architecture) with random weights, centred
    embeddings and seeded codebooks; no reference package needed."""
    from fastencodec.nn.config import META_24KHZ, META_48KHZ

    configs = {24_000: META_24KHZ, 48_000: META_48KHZ, 32_000: EncodecConfig.from_hf(HF_32KHZ)}
    cfg = configs[sample_rate]
    torch.manual_seed(seed)
    model = EncodecModel(cfg).eval().requires_grad_(False)
    center_embeddings(model.encoder, model.encoder.layers[-1].conv.bias, cfg.sample_rate, cfg.channels)
    embeds = list(model.quantizer.embed.unbind(0))
    seed_codebooks(model.encoder, embeds, cfg.sample_rate, cfg.channels, seed)
    model.quantizer.refresh()
    return model


# Entropy coding: Meta's LM (random or integer-generated weights) and codec models for it.

LM_LAYOUTS = {
    "encodec_24khz": SegmentLayout(sample_rate=24000, frame_rate=75, bits_per_codebook=10, normalize=False),
    "encodec_48khz": SegmentLayout(
        sample_rate=48000, frame_rate=150, bits_per_codebook=10, normalize=True,
        segment_length=48000, segment_stride=47520,
    ),
}
"""The segment layouts of the two models an LM exists for."""

LM_CHECKPOINTS = {
    "encodec_24khz": ("encodec_lm_24khz-1608e3c0.th", 32, 75),
    "encodec_48khz": ("encodec_lm_48khz-7add9fc3.th", 16, 150),
}
"""Meta's LM checkpoint name, codebook count and frame rate per model."""


def meta_lm(model_name: str):
    """Meta's ``LMModel`` for ``model_name`` (weights from torch's global generator)."""
    from encodec.model import LMModel

    _, n_q, rate = LM_CHECKPOINTS[model_name]
    return LMModel(n_q, 1024, num_layers=5, dim=200, past_context=int(3.5 * rate))


def meta_lm_state(model_name: str, seed: int) -> dict:
    """A random-weight state dict of Meta's ``LMModel`` for ``model_name``."""
    torch.manual_seed(seed)
    return meta_lm(model_name).state_dict()


def save_lm_checkpoints(torch_home: Path, seeds: dict[str, int]) -> Path:
    """Random LMs (``{model_name: seed}``) saved where Meta's package looks: ``torch_home/hub/checkpoints``."""
    checkpoints = Path(torch_home) / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    for name, seed in seeds.items():
        torch.save(meta_lm_state(name, seed), checkpoints / LM_CHECKPOINTS[name][0])
    return checkpoints


def lcg_lm_state(model_name: str) -> dict:
    """LM weights from integer arithmetic only (no RNG whose stream could change between versions),
    for golden files of the portable coder."""
    shapes = {key: tuple(v.shape) for key, v in meta_lm(model_name).state_dict().items()}
    state, counter = {}, 1
    for key, shape in shapes.items():
        n = int(np.prod(shape))
        idx = np.arange(counter, counter + n, dtype=np.int64)
        counter += n
        unit = ((idx * 1103515245 + 12345) % (1 << 31)) / float(1 << 31) - 0.5  # in [-0.5, 0.5)
        values = unit * (0.5 if "emb" in key else 0.3)
        if key.endswith(("norm1.weight", "norm2.weight", "norm_in.weight")):
            values = 1.0 + 0.2 * unit
        state[key] = torch.from_numpy(values.reshape(shape).astype(np.float32))
    return state


def lcg_codes(k: int, frames: int, salt: int) -> np.ndarray:
    """Codes ``[k, frames]`` in [0, 1024) from a Lehmer generator (stable across versions)."""
    idx = np.arange(k * frames, dtype=np.int64) + salt
    return (((idx * 48271) % 2147483647) % 1024).reshape(k, frames)


@torch.no_grad()
def meta_codec_for_entropy(model_name: str, seed: int, audio: torch.Tensor):
    """Meta's 24 or 48 kHz ``EncodecModel``, random weights, codebooks drawn around the embeddings of
    ``audio`` ``[channels, samples]`` (each level narrower): diverse codes, cheap to build."""
    from encodec.model import EncodecModel

    torch.manual_seed(seed)
    model = getattr(EncodecModel, f"encodec_model_{model_name[-5:]}")(pretrained=False).eval()
    model.name = model_name
    emb = model.encoder(audio[None])
    spread = emb.std()
    for layer in model.quantizer.vq.layers:
        layer._codebook.embed.copy_(emb.mean() + spread * torch.randn(layer._codebook.embed.shape))
        spread = spread * 0.7
    return model


def read_meta_header(fo) -> tuple:
    """(model name, audio length, codebooks, lm) of a Meta ``.ecdc`` header, read by Meta's reader."""
    from encodec import binary as meta_binary

    meta = meta_binary.read_ecdc_header(fo)
    return meta["m"], meta["al"], meta["nc"], meta["lm"]


def decode_meta_lm_file(data: bytes, coder, layout) -> list[tuple[np.ndarray, float | None]]:
    """Decode a Meta ``lm: true`` file with our ``lm`` coder: [(codes [K, n], scale)] per segment."""
    import io
    import struct

    fo = io.BytesIO(data)
    _, length, k, use_lm = read_meta_header(fo)
    assert use_lm is True
    segments = []
    for frames in layout.frame_counts(length):
        scale = struct.unpack("!f", fo.read(4))[0] if layout.normalize else None
        segments.append((coder.decoder(fo, k, frames).read(frames), scale))
    assert fo.read() == b""
    return segments


def encode_meta_lm_file(name: str, length: int, segments, coder) -> bytes:
    """An ``lm: true`` file written as Meta's compress writes it, its segments coded by our ``lm`` coder
    (each in two pushes)."""
    import io
    import struct

    from encodec import binary as meta_binary

    fo = io.BytesIO()
    meta_binary.write_ecdc_header(fo, {"m": name, "al": length, "nc": segments[0][0].shape[0], "lm": True})
    for codes, scale in segments:
        if scale is not None:
            fo.write(struct.pack("!f", scale))
        encoder = coder.encoder(fo, codes.shape[0])
        encoder.push(codes[:, : codes.shape[1] // 2])
        encoder.push(codes[:, codes.shape[1] // 2 :])
        encoder.finish()
    return fo.getvalue()


def run_under_triton_interpreter(module: str, function: str = "interpreted_check") -> None:
    """Run ``module.function()`` in a subprocess with ``TRITON_INTERPRET=1`` (the variable must be set
    before Triton is imported: the CUDA kernels then run on CPU tensors) and assert it succeeded."""
    root = Path(__file__).resolve().parent.parent
    env = os.environ | {"TRITON_INTERPRET": "1", "PYTHONPATH": str(root)}
    code = f"from {module} import {function}; {function}()"
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
