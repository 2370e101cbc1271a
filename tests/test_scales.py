"""48 kHz segment scales equal Meta's bit for bit on long audio, whatever the batch and thread count."""

import copy

import pytest
import torch
from torch import nn

from fastencodec import EnCodec
from tests.support import speech_like

pytestmark = pytest.mark.interop


class ZeroEncoder(nn.Module):
    """Stands in for the reference's encoder: scales are computed before it and do not depend on it."""

    def __init__(self, dimension: int, hop: int):
        super().__init__()
        self.dimension, self.hop = dimension, hop

    def forward(self, x):
        return x.new_zeros(x.shape[0], self.dimension, -(-x.shape[-1] // self.hop))


@pytest.mark.parametrize("threads", [2])
def test_long_48khz_scales_bit_exact(meta48, threads):
    model = copy.deepcopy(meta48[0])
    model.encoder = ZeroEncoder(model.quantizer.dimension, 320)
    audio = speech_like(48_000, 2, 20.1, seed=3)[None] * torch.linspace(0.05, 1.5, 964_800)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model.set_target_bandwidth(3.0)
        with torch.no_grad():  # Meta's segmentation and scale code
            want = torch.cat([scale for _, scale in model.encode(audio)], dim=-1)
        codec = EnCodec.from_pretrained(meta48[1], batch_samples=16 * 48_000)  # many segments per batch
        got = torch.as_tensor(codec.encode(audio, bandwidth=3.0).scales)
    finally:
        torch.set_num_threads(previous)
    assert want.shape == got.shape == (1, 21)
    assert torch.equal(got, want), f"{(got != want).sum().item()} of {want.numel()} scales differ"
