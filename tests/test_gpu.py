"""CUDA-only checks (run on a GPU machine; skipped elsewhere)."""

import pytest
import torch

from fastencodec.bench import random_codec
from tests.support import speech_like

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_global_tf32_settings_do_not_change_tokens():
    """Training scripts often turn TF32 on globally; the codebook search and the exact mode ignore it,
    and the user's flags are restored after every call."""
    codec = random_codec("cuda")
    audio = torch.stack([speech_like(24_000, 1, 2.0, seed=s) for s in range(4)]).cuda()
    before = codec.encode(audio).codes
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        after = codec.encode(audio).codes
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
    assert torch.equal(before, after)
