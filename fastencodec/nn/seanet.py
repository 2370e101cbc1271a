"""SEANet encoder and decoder: waveform to embeddings and back (tensors ``[batch, channels, time]``)."""

from __future__ import annotations

import torch
from torch import nn

from fastencodec.nn.config import EncodecConfig
from fastencodec.nn.layers import LSTM, Conv1d, ConvTranspose1d, ResnetBlock


class Encoder(nn.Module):
    """Waveform ``[B, channels, samples]`` to embeddings ``[B, dimension, ceil(samples / hop_length)]``.

    Args:
        cfg: the architecture.
    """

    def __init__(self, cfg: EncodecConfig):
        super().__init__()
        layers: list[nn.Module] = [Conv1d(cfg, cfg.channels, cfg.n_filters, cfg.kernel_size)]
        width = cfg.n_filters
        for ratio in reversed(cfg.ratios):
            layers += [ResnetBlock(cfg, width, cfg.dilation_base**j) for j in range(cfg.n_residual_layers)]
            layers += [nn.ELU(inplace=True), Conv1d(cfg, width, width * 2, ratio * 2, stride=ratio)]
            width *= 2
        layers += [LSTM(width, cfg.lstm_layers), nn.ELU(inplace=True)]
        layers += [Conv1d(cfg, width, cfg.dimension, cfg.last_kernel_size)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Audio ``[B, channels, samples]`` to embeddings ``[B, dimension, frames]``."""
        return self.layers(x)


class Decoder(nn.Module):
    """Embeddings ``[B, dimension, frames]`` to waveform ``[B, channels, frames * hop_length]``.

    Args:
        cfg: the architecture.
    """

    def __init__(self, cfg: EncodecConfig):
        super().__init__()
        width = cfg.n_filters * 2 ** len(cfg.ratios)
        layers: list[nn.Module] = [Conv1d(cfg, cfg.dimension, width, cfg.kernel_size), LSTM(width, cfg.lstm_layers)]
        for ratio in cfg.ratios:
            layers += [nn.ELU(inplace=True), ConvTranspose1d(cfg, width, width // 2, ratio * 2, stride=ratio)]
            width //= 2
            layers += [ResnetBlock(cfg, width, cfg.dilation_base**j) for j in range(cfg.n_residual_layers)]
        layers += [nn.ELU(inplace=True), Conv1d(cfg, width, cfg.channels, cfg.last_kernel_size)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings ``[B, dimension, frames]`` to audio ``[B, channels, frames * hop_length]``."""
        return self.layers(x)
