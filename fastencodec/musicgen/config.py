"""MusicGen configuration, read from a transformers ``MusicgenConfig`` dict (``config.json``).

The dict has three parts: ``text_encoder`` (a T5 config), ``audio_encoder`` (an EnCodec config)
and ``decoder`` (a ``MusicgenDecoderConfig``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastencodec.nn.config import EncodecConfig

ACTIVATIONS = ("relu", "gelu", "gelu_new", "gelu_pytorch_tanh", "silu")
"""Activation names (transformers' spelling) the T5 feed-forward and the decoder support."""


def _get(cfg: dict[str, Any], key: str, default: Any = None) -> Any:
    value = cfg.get(key, default)
    if value is None and default is None:
        raise ValueError(f"MusicGen config: {key!r} is missing")
    return value


@dataclass(frozen=True)
class T5Config:
    """The T5 text encoder: ``layers`` blocks of width ``d_model`` (``heads`` x ``d_kv``)."""

    vocab_size: int
    d_model: int
    d_kv: int
    d_ff: int
    layers: int
    heads: int
    buckets: int = 32
    max_distance: int = 128
    activation: str = "relu"
    gated: bool = False
    eps: float = 1e-6
    pad_token_id: int = 0

    @classmethod
    def from_hf(cls, cfg: dict[str, Any]) -> T5Config:
        if cfg.get("model_type", "t5") != "t5":
            raise ValueError(f"MusicGen text encoder is a {cfg.get('model_type')!r} model, expected t5")
        proj = str(cfg.get("feed_forward_proj", "relu"))
        gated = proj.startswith("gated-")
        activation = str(cfg.get("dense_act_fn") or proj.removeprefix("gated-"))
        if activation == "gelu" and gated:
            activation = "gelu_new"  # transformers maps gated-gelu to the tanh approximation
        if activation not in ACTIVATIONS:
            raise ValueError(f"T5 activation {activation!r} is not supported ({', '.join(ACTIVATIONS)})")
        return cls(
            vocab_size=int(_get(cfg, "vocab_size")),
            d_model=int(_get(cfg, "d_model")),
            d_kv=int(_get(cfg, "d_kv")),
            d_ff=int(_get(cfg, "d_ff")),
            layers=int(_get(cfg, "num_layers")),
            heads=int(_get(cfg, "num_heads")),
            buckets=int(cfg.get("relative_attention_num_buckets", 32)),
            max_distance=int(cfg.get("relative_attention_max_distance", 128)),
            activation=activation,
            gated=gated,
            eps=float(cfg.get("layer_norm_epsilon", 1e-6)),
            pad_token_id=int(cfg.get("pad_token_id") or 0),
        )


@dataclass(frozen=True)
class DecoderConfig:
    """The MusicGen decoder LM: ``layers`` pre-norm blocks of width ``hidden`` over ``codebooks``
    token streams with ``vocab_size`` entries each (token ``vocab_size`` is the pad/start token)."""

    vocab_size: int
    hidden: int
    layers: int
    heads: int
    ffn: int
    codebooks: int
    audio_channels: int = 1
    activation: str = "gelu"
    scale_embedding: bool = False
    max_positions: int = 2048
    pad_token_id: int = 2048
    start_token_id: int = 2048

    @classmethod
    def from_hf(cls, cfg: dict[str, Any]) -> DecoderConfig:
        if cfg.get("model_type", "musicgen_decoder") != "musicgen_decoder":
            raise ValueError(f"MusicGen decoder is a {cfg.get('model_type')!r} model, expected musicgen_decoder")
        vocab = int(_get(cfg, "vocab_size"))
        pad = int(cfg.get("pad_token_id") if cfg.get("pad_token_id") is not None else vocab)
        start = cfg.get("decoder_start_token_id", cfg.get("bos_token_id"))
        activation = str(cfg.get("activation_function", "gelu"))
        if activation not in ACTIVATIONS:
            raise ValueError(f"decoder activation {activation!r} is not supported ({', '.join(ACTIVATIONS)})")
        out = cls(
            vocab_size=vocab,
            hidden=int(_get(cfg, "hidden_size")),
            layers=int(_get(cfg, "num_hidden_layers")),
            heads=int(_get(cfg, "num_attention_heads")),
            ffn=int(_get(cfg, "ffn_dim")),
            codebooks=int(_get(cfg, "num_codebooks")),
            audio_channels=int(cfg.get("audio_channels", 1)),
            activation=activation,
            scale_embedding=bool(cfg.get("scale_embedding", False)),
            max_positions=int(cfg.get("max_position_embeddings", 2048)),
            pad_token_id=pad,
            start_token_id=int(pad if start is None else start),
        )
        if out.audio_channels not in (1, 2) or out.codebooks % out.audio_channels:
            raise ValueError(f"decoder has {out.codebooks} codebooks for {out.audio_channels} audio channels")
        if out.hidden % out.heads:
            raise ValueError(f"decoder width {out.hidden} is not a multiple of its {out.heads} heads")
        return out

    @property
    def delays(self) -> list[int]:
        """Delay in frames of each codebook stream; stereo streams interleave left and right."""
        return [k // self.audio_channels for k in range(self.codebooks)]


@dataclass(frozen=True)
class MusicGenConfig:
    """The three parts of a MusicGen checkpoint."""

    text: T5Config
    decoder: DecoderConfig
    codec: EncodecConfig
    codec_dict: dict[str, Any]
    projects_text: bool
    """Whether the checkpoint has ``enc_to_dec_proj`` (text width to decoder width)."""

    @classmethod
    def from_hf(cls, cfg: dict[str, Any]) -> MusicGenConfig:
        """Read a transformers ``MusicgenConfig`` dict; refuses other models with a clear error."""
        if not isinstance(cfg, dict):
            raise ValueError("MusicGen config.json must hold a JSON object")
        kind = cfg.get("model_type")
        if kind != "musicgen":
            raise ValueError(f"config.json describes a {kind!r} model, not a MusicGen one (model_type 'musicgen')")
        parts = {}
        for part in ("text_encoder", "audio_encoder", "decoder"):
            if not isinstance(cfg.get(part), dict):
                raise ValueError(f"MusicGen config.json has no {part!r} part")
            parts[part] = cfg[part]
        text = T5Config.from_hf(parts["text_encoder"])
        decoder = DecoderConfig.from_hf(parts["decoder"])
        codec = EncodecConfig.from_hf(parts["audio_encoder"])
        if codec.channels != 1:
            raise ValueError(f"MusicGen's audio encoder must be mono EnCodec, this one has {codec.channels} channels")
        if codec.codebook_size != decoder.vocab_size:
            raise ValueError(
                f"decoder vocabulary ({decoder.vocab_size}) differs from the codec's codebook size "
                f"({codec.codebook_size})"
            )
        per_channel = decoder.codebooks // decoder.audio_channels
        if per_channel > codec.num_quantizers:
            raise ValueError(f"decoder wants {per_channel} codebooks per channel; the codec has {codec.num_quantizers}")
        cross = parts["decoder"].get("cross_attention_hidden_size")
        projects = text.d_model != decoder.hidden
        if cross is not None and projects:
            raise ValueError(
                f"cross_attention_hidden_size {cross} with a text width {text.d_model} different from the "
                f"decoder width {decoder.hidden} is not a MusicGen architecture"
            )
        return cls(text, decoder, codec, dict(parts["audio_encoder"]), projects)
