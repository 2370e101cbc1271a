"""The EnCodec network: SEANet encoder, SEANet decoder and their building blocks.

Tensors are ``[batch, channels, time]``. Parameter names follow the Hugging Face
layout with weight norm already folded (``encoder.layers.0.conv.weight``), so a
reader can match them against either reference implementation.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from fastencodec.config import EncodecConfig
from fastencodec.quantizer import ResidualVectorQuantizer


def extra_padding(length: int, kernel: int, stride: int, padding_total: int) -> int:
    """Samples to append so that the last window of a strided conv is complete."""
    n_frames = -(-(length - kernel + padding_total) // stride) + 1
    ideal_length = (n_frames - 1) * stride + kernel - padding_total
    return ideal_length - length


def pad1d(x: torch.Tensor, left: int, right: int, mode: str) -> torch.Tensor:
    """``F.pad`` on the time axis that also reflect-pads inputs shorter than the pad."""
    if mode != "reflect":
        return F.pad(x, (left, right), mode)
    length = x.shape[-1]
    extra = max(left, right) - length + 1 if length <= max(left, right) else 0
    if extra:
        x = F.pad(x, (0, extra))
    padded = F.pad(x, (left, right), mode)
    return padded[..., : padded.shape[-1] - extra]


class Conv1d(nn.Module):
    """Conv1d with the reference's causal or centred padding and optional GroupNorm."""

    def __init__(self, cfg: EncodecConfig, cin: int, cout: int, kernel: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, kernel, stride, dilation=dilation)
        self.norm = nn.GroupNorm(1, cout) if cfg.norm == "time_group_norm" else None
        self.causal = cfg.causal
        self.pad_mode = cfg.pad_mode
        self.kernel = (kernel - 1) * dilation + 1
        self.stride = stride
        self.padding_total = self.kernel - stride

    def padding(self, length: int) -> tuple[int, int]:
        """(left, right) padding in samples for an input of ``length`` samples."""
        extra = extra_padding(length, self.kernel, self.stride, self.padding_total)
        if self.causal:
            return self.padding_total, extra
        right = self.padding_total // 2
        return self.padding_total - right, right + extra

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = pad1d(x, *self.padding(x.shape[-1]), self.pad_mode)
        x = self.conv(x)
        return x if self.norm is None else self.norm(x)


class ConvTranspose1d(nn.Module):
    """ConvTranspose1d that trims its fixed padding as the reference does."""

    def __init__(self, cfg: EncodecConfig, cin: int, cout: int, kernel: int, stride: int):
        super().__init__()
        self.conv = nn.ConvTranspose1d(cin, cout, kernel, stride)
        self.norm = nn.GroupNorm(1, cout) if cfg.norm == "time_group_norm" else None
        self.stride = stride
        total = kernel - stride
        right = math.ceil(total * cfg.trim_right_ratio) if cfg.causal else total // 2
        self.trim = (total - right, right)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x)
        left, right = self.trim
        return x[..., left : x.shape[-1] - right]


class ResnetBlock(nn.Module):
    """SEANet residual block: ELU, dilated conv, ELU, 1x1 conv, plus a (1x1 conv) shortcut."""

    def __init__(self, cfg: EncodecConfig, dim: int, dilation: int):
        super().__init__()
        hidden = dim // cfg.compress
        self.block = nn.Sequential(
            nn.ELU(),
            Conv1d(cfg, dim, hidden, cfg.residual_kernel_size, dilation=dilation),
            nn.ELU(),
            Conv1d(cfg, hidden, dim, 1),
        )
        self.shortcut = Conv1d(cfg, dim, dim, 1) if cfg.conv_shortcut else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.block(x)


class LSTM(nn.Module):
    """Multi-layer LSTM over time with a skip connection, in conv layout."""

    def __init__(self, dim: int, num_layers: int):
        super().__init__()
        self.lstm = nn.LSTM(dim, dim, num_layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(2, 0, 1)
        y = self.lstm(x)[0] + x
        return y.permute(1, 2, 0)


class Encoder(nn.Module):
    """Waveform ``[B, channels, samples]`` to embeddings ``[B, dimension, frames]``."""

    def __init__(self, cfg: EncodecConfig):
        super().__init__()
        layers: list[nn.Module] = [Conv1d(cfg, cfg.channels, cfg.n_filters, cfg.kernel_size)]
        width = cfg.n_filters
        for ratio in reversed(cfg.ratios):
            layers += [ResnetBlock(cfg, width, cfg.dilation_base**j) for j in range(cfg.n_residual_layers)]
            layers += [nn.ELU(), Conv1d(cfg, width, width * 2, ratio * 2, stride=ratio)]
            width *= 2
        layers += [LSTM(width, cfg.lstm_layers), nn.ELU(), Conv1d(cfg, width, cfg.dimension, cfg.last_kernel_size)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Decoder(nn.Module):
    """Embeddings ``[B, dimension, frames]`` to waveform ``[B, channels, frames * hop]``."""

    def __init__(self, cfg: EncodecConfig):
        super().__init__()
        width = cfg.n_filters * 2 ** len(cfg.ratios)
        layers: list[nn.Module] = [Conv1d(cfg, cfg.dimension, width, cfg.kernel_size), LSTM(width, cfg.lstm_layers)]
        for ratio in cfg.ratios:
            layers += [nn.ELU(), ConvTranspose1d(cfg, width, width // 2, ratio * 2, stride=ratio)]
            width //= 2
            layers += [ResnetBlock(cfg, width, cfg.dilation_base**j) for j in range(cfg.n_residual_layers)]
        layers += [nn.ELU(), Conv1d(cfg, width, cfg.channels, cfg.last_kernel_size)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class EncodecModel(nn.Module):
    """Encoder, residual vector quantizer and decoder of one EnCodec checkpoint.

    Works on one segment at a time; segmentation, normalisation and batching
    policy live in :class:`fastencodec.codec.EnCodec`.
    """

    def __init__(self, cfg: EncodecConfig):
        super().__init__()
        self.config = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quantizer = ResidualVectorQuantizer(cfg.num_quantizers, cfg.codebook_size, cfg.dimension)
