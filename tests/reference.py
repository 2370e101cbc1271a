"""Random-weight reference models (Meta's ``encodec`` and ``transformers``) for parity tests.

Random initialisation leaves codebooks at zero, so every frame would map to code 0 and a
parity test would prove nothing. The codebooks are seeded from encoder embeddings of
random audio (each level from the residual left by the previous ones), so tokens are diverse.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import torch


def install_torchaudio_standin() -> None:
    """Let ``import encodec`` work without torchaudio.

    Meta's ``encodec`` imports ``torchaudio`` at module level only for I/O helpers the tests
    and benchmarks never call, and torchaudio is not installed (its pin drags in another
    torch). transformers probes for torchaudio and caches the answer, so it asks first.
    """
    import transformers.utils.import_utils as hf_imports

    hf_imports.is_torchaudio_available()
    try:
        import torchaudio  # noqa: F401
    except ImportError:
        stub = types.ModuleType("torchaudio")
        for name in ("functional", "transforms"):
            sub = types.ModuleType(f"torchaudio.{name}")
            setattr(stub, name, sub)
            sys.modules[f"torchaudio.{name}"] = sub
        sys.modules["torchaudio"] = stub


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


@torch.no_grad()
def fast_model(sample_rate: int = 24_000, seed: int = 0):
    """fastencodec ``EncodecModel`` (24, 32 or 48 kHz architecture) with random weights, centred
    embeddings and seeded codebooks; no reference package needed."""
    from fastencodec.config import META_24KHZ, META_48KHZ, EncodecConfig
    from fastencodec.model import EncodecModel

    configs = {24_000: META_24KHZ, 48_000: META_48KHZ, 32_000: EncodecConfig.from_hf(HF_32KHZ)}
    cfg = configs[sample_rate]
    torch.manual_seed(seed)
    model = EncodecModel(cfg).eval().requires_grad_(False)
    center_embeddings(model.encoder, model.encoder.layers[-1].conv.bias, cfg.sample_rate, cfg.channels)
    embeds = list(model.quantizer.embed.unbind(0))
    seed_codebooks(model.encoder, embeds, cfg.sample_rate, cfg.channels, seed)
    model.quantizer.refresh()
    return model


def copy_double(model):
    """A float64 copy of a fastencodec model (a high-precision reference for the kernels)."""
    import copy

    return copy.deepcopy(model).double()
