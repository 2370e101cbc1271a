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

    Every field is range-checked at construction (``LIMITS``); a bad one raises ValueError
    naming it.

    Attributes:
        sample_rate: audio sample rate in Hz.
        channels: audio channels (1 or 2 for the published models).
        dimension: size of one embedding frame (the quantizer's vectors).
        n_filters: channels of the first convolution; each downsampling stage doubles them.
        n_residual_layers: residual blocks per stage.
        ratios: the decoder's upsampling ratios (the encoder uses them in reverse); their
            product is ``hop_length`` in samples.
        kernel_size: kernel of the first convolution, in samples.
        last_kernel_size: kernel of the last convolution, in samples.
        residual_kernel_size: kernel of the residual blocks' dilated convolutions.
        dilation_base: dilation growth per residual layer.
        causal: causal (left) padding instead of centred padding.
        pad_mode: how convolutions pad a signal's ends (``PAD_MODES``).
        compress: factor by which a residual block narrows its hidden channels.
        lstm_layers: layers of the encoder's and the decoder's LSTM.
        trim_right_ratio: share of a causal transposed convolution's padding trimmed on the right.
        norm: ``"weight_norm"`` or ``"time_group_norm"``.
        conv_shortcut: 1x1 convolutions (True) or identities on the residual shortcuts.
        codebook_size: entries per codebook (a power of 2).
        target_bandwidths: the bandwidths in kbps the model supports.
        normalize: whether each segment is divided by its volume before encoding (48 kHz).
        segment: length in seconds of the independently coded segments, or None for one
            segment per signal.
        overlap: overlap of consecutive segments, as a fraction of ``segment``.
        name: the model name ``.ecdc`` headers store, e.g. ``"encodec_24khz"``.
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
        _check_ranges(self)
        if self.norm not in ("weight_norm", "time_group_norm"):
            raise ValueError(f"unsupported conv normalisation {self.norm!r}")
        if self.norm == "time_group_norm" and self.causal:
            raise ValueError("time_group_norm cannot be causal")
        if 2**self.bits_per_codebook != self.codebook_size:
            raise ValueError(f"codebook size {self.codebook_size} is not a power of 2")
        if not self.target_bandwidths:
            raise ValueError("config lists no target bandwidths")
        if not 1 <= self.num_quantizers <= LIMITS["num_quantizers"][1]:
            raise ValueError(
                f"target bandwidths {list(self.target_bandwidths)} kbps need {self.num_quantizers} codebooks; "
                f"an EnCodec model has 1 to {LIMITS['num_quantizers'][1]}"
            )
        if self.n_filters // self.compress < 1:
            raise ValueError(f"compress {self.compress} leaves residual blocks with no channels")
        receptive = (self.residual_kernel_size - 1) * self.dilation_base ** (self.n_residual_layers - 1)
        if receptive > MAX_KERNEL_SPAN:
            raise ValueError(
                f"residual kernel {self.residual_kernel_size} with dilation {self.dilation_base}^"
                f"{self.n_residual_layers - 1} spans {receptive} samples (at most {MAX_KERNEL_SPAN})"
            )
        if self.segment is not None and not 1 <= self.segment * self.sample_rate <= MAX_SEGMENT_SAMPLES:
            raise ValueError(
                f"segment of {self.segment} s at {self.sample_rate} Hz is outside 1..{MAX_SEGMENT_SAMPLES} samples"
            )

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
        """Bits per code: ``log2(codebook_size)``."""
        return int(math.log2(self.codebook_size))

    @property
    def num_quantizers(self) -> int:
        """Codebooks in the checkpoint: enough for the largest bandwidth."""
        return int(1000 * max(self.target_bandwidths) // (self.frame_rate * self.bits_per_codebook))

    def codebooks_for_bandwidth(self, bandwidth: float) -> int:
        """Codebooks per frame at a bandwidth (at least 1; not checked against ``target_bandwidths``).

        Args:
            bandwidth: in kbps.

        Returns:
            ``floor(bandwidth * 1000 / (bits_per_codebook * frame_rate))``, at least 1.
        """
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
        """The fields by name (``dataclasses.asdict``)."""
        return asdict(self)

    @classmethod
    def from_hf(cls, cfg: dict[str, Any]) -> EncodecConfig:
        """Build from a Hugging Face ``EncodecConfig`` dict (``config.json``).

        Args:
            cfg: the parsed ``config.json``; absent keys take the 24 kHz model's values.

        Returns:
            The config, named ``encodec_<rate in kHz>khz``.

        Raises:
            ValueError: another model type, or a key of the wrong type or out of range.
        """
        if cfg.get("model_type", "encodec") != "encodec":
            raise ValueError(f"config.json describes a {cfg.get('model_type')!r} model, not encodec")
        dimension = _number(cfg, "hidden_size", 128, int)
        codebook_dim = cfg.get("codebook_dim")
        if codebook_dim is not None and _number(cfg, "codebook_dim", dimension, int) != dimension:
            raise ValueError("codebook_dim different from hidden_size is not an EnCodec architecture")
        sample_rate = _number(cfg, "sampling_rate", 24_000, int)
        chunk = cfg.get("chunk_length_s")
        overlap = cfg.get("overlap")
        return cls(
            sample_rate=sample_rate,
            channels=_number(cfg, "audio_channels", 1, int),
            dimension=dimension,
            n_filters=_number(cfg, "num_filters", 32, int),
            n_residual_layers=_number(cfg, "num_residual_layers", 1, int),
            ratios=_numbers(cfg, "upsampling_ratios", (8, 5, 4, 2), int),
            kernel_size=_number(cfg, "kernel_size", 7, int),
            last_kernel_size=_number(cfg, "last_kernel_size", 7, int),
            residual_kernel_size=_number(cfg, "residual_kernel_size", 3, int),
            dilation_base=_number(cfg, "dilation_growth_rate", 2, int),
            causal=_flag(cfg, "use_causal_conv", True),
            pad_mode=_text(cfg, "pad_mode", "reflect"),
            compress=_number(cfg, "compress", 2, int),
            lstm_layers=_number(cfg, "num_lstm_layers", 2, int),
            trim_right_ratio=_number(cfg, "trim_right_ratio", 1.0, float),
            norm=_text(cfg, "norm_type", "weight_norm"),
            conv_shortcut=_flag(cfg, "use_conv_shortcut", True),
            codebook_size=_number(cfg, "codebook_size", 1024, int),
            target_bandwidths=_numbers(cfg, "target_bandwidths", (1.5, 3.0, 6.0, 12.0, 24.0), float),
            normalize=_flag(cfg, "normalize", False),
            segment=None if chunk is None else _number(cfg, "chunk_length_s", 1.0, float),
            overlap=0.01 if overlap is None else _number(cfg, "overlap", 0.01, float),
            name=f"encodec_{sample_rate // 1000}khz",
        )


LIMITS: dict[str, tuple[float, float]] = {
    "sample_rate": (1, 1_000_000),
    "channels": (1, 64),
    "dimension": (1, 4096),
    "n_filters": (1, 1024),
    "n_residual_layers": (1, 16),
    "kernel_size": (1, 255),
    "last_kernel_size": (1, 255),
    "residual_kernel_size": (1, 255),
    "dilation_base": (1, 16),
    "compress": (1, 4096),
    "lstm_layers": (1, 16),
    "codebook_size": (2, 1 << 16),
    "num_quantizers": (1, 64),
}
"""Inclusive ranges of the integer fields (and of the codebook count the bandwidths imply): wide
around every published EnCodec model, narrow enough that no config alone can make building the
network exhaust memory or time (the weights' shapes are checked against the config before any
tensor is allocated, see ``fastencodec.weights``)."""
MAX_RATIOS = 8
MAX_RATIO = 64
MAX_KERNEL_SPAN = 1 << 16
"""Most samples one dilated residual convolution may span."""
MAX_SEGMENT_SAMPLES = 1 << 26
"""Most samples in one normalised segment (about 23 minutes at 48 kHz)."""
PAD_MODES = ("reflect", "constant", "replicate", "circular")


def _check_ranges(cfg: EncodecConfig) -> None:
    """Refuse fields of the wrong type or outside ``LIMITS`` (ValueError naming the field); lists
    of ratios or bandwidths become tuples."""
    for field in ("ratios", "target_bandwidths"):
        if isinstance(getattr(cfg, field), list):
            object.__setattr__(cfg, field, tuple(getattr(cfg, field)))
    for field, (low, high) in LIMITS.items():
        if field == "num_quantizers":
            continue
        value = getattr(cfg, field)
        if type(value) is not int or not low <= value <= high:
            raise ValueError(f"config field {field} must be an integer in {low}..{high}, got {value!r}")
    ratios = cfg.ratios
    if (
        not isinstance(ratios, tuple)
        or not 1 <= len(ratios) <= MAX_RATIOS
        or any(type(r) is not int or not 1 <= r <= MAX_RATIO for r in ratios)
    ):
        raise ValueError(f"ratios must be 1 to {MAX_RATIOS} integers in 1..{MAX_RATIO}, got {ratios!r}")
    bandwidths = cfg.target_bandwidths
    if not isinstance(bandwidths, tuple) or any(
        not isinstance(b, (int, float)) or isinstance(b, bool) or not 0 < b < math.inf for b in bandwidths
    ):
        raise ValueError(f"target bandwidths must be positive numbers of kbps, got {bandwidths!r}")
    for field in ("causal", "conv_shortcut", "normalize"):
        if not isinstance(getattr(cfg, field), bool):
            raise ValueError(f"config field {field} must be true or false, got {getattr(cfg, field)!r}")
    if cfg.pad_mode not in PAD_MODES:
        raise ValueError(f"pad_mode must be one of {', '.join(PAD_MODES)}, got {cfg.pad_mode!r}")
    if not isinstance(cfg.trim_right_ratio, (int, float)) or not 0 <= cfg.trim_right_ratio <= 1:
        raise ValueError(f"trim_right_ratio must be in [0, 1], got {cfg.trim_right_ratio!r}")
    if cfg.segment is not None and (not isinstance(cfg.segment, (int, float)) or not 0 < cfg.segment < math.inf):
        raise ValueError(f"segment length (chunk_length_s) must be a positive number of seconds, got {cfg.segment!r}")
    if not isinstance(cfg.overlap, (int, float)) or not 0 <= cfg.overlap < 1:
        raise ValueError(f"overlap must be a fraction in [0, 1), got {cfg.overlap!r}")
    if not isinstance(cfg.name, str):
        raise ValueError(f"model name must be a string, got {cfg.name!r}")


def _number(cfg: dict[str, Any], key: str, default: float, kind: type) -> Any:
    """``cfg[key]`` (``default`` when absent) as an int or float; ValueError naming ``key`` otherwise."""
    value = cfg.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"config.json: {key} must be a finite number, got {value!r}")
    if kind is int:
        if value != int(value):
            raise ValueError(f"config.json: {key} must be an integer, got {value!r}")
        return int(value)
    return float(value)


def _numbers(cfg: dict[str, Any], key: str, default: tuple, kind: type) -> tuple:
    """``cfg[key]`` as a tuple of numbers (see ``_number``)."""
    values = cfg.get(key, default)
    if not isinstance(values, (list, tuple)):
        raise ValueError(f"config.json: {key} must be a list of numbers, got {values!r}")
    return tuple(_number({key: v}, key, 0, kind) for v in values)


def _flag(cfg: dict[str, Any], key: str, default: bool) -> bool:
    value = cfg.get(key, default)
    if not isinstance(value, bool):
        raise ValueError(f"config.json: {key} must be true or false, got {value!r}")
    return value


def _text(cfg: dict[str, Any], key: str, default: str) -> str:
    value = cfg.get(key, default)
    if not isinstance(value, str):
        raise ValueError(f"config.json: {key} must be a string, got {value!r}")
    return value


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
