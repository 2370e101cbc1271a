"""Architecture description of an EnCodec model.

The config is read from a checkpoint (Hugging Face ``config.json``, or inferred
from the tensors of one of Meta's original state dicts); nothing here is chosen
by a model's name.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class EncodecConfig:
    """Hyper-parameters of the SEANet encoder/decoder and the residual quantizer.

    ``ratios`` are the decoder's upsampling ratios (the encoder uses them in
    reverse). ``segment`` is the length in seconds of the independently
    normalised segments (48 kHz model), ``overlap`` their overlap as a fraction.
    """

    sample_rate: int = 24_000
    channels: int = 1
    dimension: int = 128
    n_filters: int = 32
    n_residual_layers: int = 1
    ratios: tuple[int, ...] = (8, 5, 4, 2)
    kernel_size: int = 7
    last_kernel_size: int = 7
    residual_kernel_size: int = 3
    dilation_base: int = 2
    causal: bool = True
    pad_mode: str = "reflect"
    compress: int = 2
    lstm_layers: int = 2
    trim_right_ratio: float = 1.0
    norm: str = "weight_norm"
    conv_shortcut: bool = True
    codebook_size: int = 1024
    target_bandwidths: tuple[float, ...] = (1.5, 3.0, 6.0, 12.0, 24.0)
    normalize: bool = False
    segment: float | None = None
    overlap: float = 0.01
    name: str = "unset"

    def __post_init__(self) -> None:
        if self.norm not in ("weight_norm", "time_group_norm"):
            raise ValueError(f"unsupported conv normalisation {self.norm!r}")
        if self.norm == "time_group_norm" and self.causal:
            raise ValueError("time_group_norm cannot be causal")
        if 2**self.bits_per_codebook != self.codebook_size:
            raise ValueError(f"codebook size {self.codebook_size} is not a power of 2")
        if not self.target_bandwidths:
            raise ValueError("config lists no target bandwidths")

    @property
    def hop_length(self) -> int:
        """Audio samples per token frame."""
        return math.prod(self.ratios)

    @property
    def frame_rate(self) -> int:
        """Token frames per second (Hz), rounded up as the reference does."""
        return math.ceil(self.sample_rate / self.hop_length)

    @property
    def bits_per_codebook(self) -> int:
        return int(math.log2(self.codebook_size))

    @property
    def num_quantizers(self) -> int:
        """Codebooks in the checkpoint: enough for the largest bandwidth."""
        return int(1000 * max(self.target_bandwidths) // (self.frame_rate * self.bits_per_codebook))

    def codebooks_for_bandwidth(self, bandwidth: float) -> int:
        """Number of codebooks used at ``bandwidth`` kbps."""
        per_codebook = self.bits_per_codebook * self.frame_rate
        return max(1, math.floor(bandwidth * 1000 / per_codebook))

    @property
    def segment_length(self) -> int | None:
        """Samples per normalised segment, or None when the whole signal is one segment."""
        if self.segment is None:
            return None
        return int(self.segment * self.sample_rate)

    @property
    def segment_stride(self) -> int | None:
        """Samples between the starts of consecutive segments."""
        length = self.segment_length
        if length is None:
            return None
        return max(1, int((1 - self.overlap) * length))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_hf(cls, cfg: dict[str, Any]) -> EncodecConfig:
        """Build from a Hugging Face ``EncodecConfig`` dict (``config.json``)."""
        if cfg.get("model_type", "encodec") != "encodec":
            raise ValueError(f"config.json describes a {cfg.get('model_type')!r} model, not encodec")
        dimension = int(cfg.get("hidden_size", 128))
        codebook_dim = cfg.get("codebook_dim") or dimension
        if int(codebook_dim) != dimension:
            raise ValueError("codebook_dim different from hidden_size is not an EnCodec architecture")
        sample_rate = int(cfg.get("sampling_rate", 24_000))
        chunk = cfg.get("chunk_length_s")
        overlap = cfg.get("overlap")
        return cls(
            sample_rate=sample_rate,
            channels=int(cfg.get("audio_channels", 1)),
            dimension=dimension,
            n_filters=int(cfg.get("num_filters", 32)),
            n_residual_layers=int(cfg.get("num_residual_layers", 1)),
            ratios=tuple(int(r) for r in cfg.get("upsampling_ratios", (8, 5, 4, 2))),
            kernel_size=int(cfg.get("kernel_size", 7)),
            last_kernel_size=int(cfg.get("last_kernel_size", 7)),
            residual_kernel_size=int(cfg.get("residual_kernel_size", 3)),
            dilation_base=int(cfg.get("dilation_growth_rate", 2)),
            causal=bool(cfg.get("use_causal_conv", True)),
            pad_mode=str(cfg.get("pad_mode", "reflect")),
            compress=int(cfg.get("compress", 2)),
            lstm_layers=int(cfg.get("num_lstm_layers", 2)),
            trim_right_ratio=float(cfg.get("trim_right_ratio", 1.0)),
            norm=str(cfg.get("norm_type", "weight_norm")),
            conv_shortcut=bool(cfg.get("use_conv_shortcut", True)),
            codebook_size=int(cfg.get("codebook_size", 1024)),
            target_bandwidths=tuple(float(b) for b in cfg.get("target_bandwidths", (1.5, 3.0, 6.0, 12.0, 24.0))),
            normalize=bool(cfg.get("normalize", False)),
            segment=None if chunk is None else float(chunk),
            overlap=0.01 if overlap is None else float(overlap),
            name=f"encodec_{sample_rate // 1000}khz",
        )


# The published models: Meta's two (encodec 0.1.1, `EncodecModel.encodec_model_24khz/48khz`) and
# MusicGen's 32 kHz tokenizer (facebook/encodec_32khz).
META_24KHZ = EncodecConfig(name="encodec_24khz")
META_48KHZ = EncodecConfig(
    sample_rate=48_000,
    channels=2,
    causal=False,
    norm="time_group_norm",
    target_bandwidths=(3.0, 6.0, 12.0, 24.0),
    normalize=True,
    segment=1.0,
    name="encodec_48khz",
)
META_32KHZ = EncodecConfig(
    sample_rate=32_000,
    n_filters=64,
    ratios=(8, 5, 4, 4),
    causal=False,
    conv_shortcut=False,
    codebook_size=2048,
    target_bandwidths=(2.2,),
    name="encodec_32khz",
)
PUBLISHED_CONFIGS = {config.name: config for config in (META_24KHZ, META_32KHZ, META_48KHZ)}
"""Architectures of the published models by their ``.ecdc`` names (``info`` needs no weights for them)."""
