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


def test_replayed_graphs_follow_weights_changed_in_place():
    """A CUDA graph holds the weights it was captured with: after load_state_dict the codec must
    code with the new weights (and label tokens with the new fingerprint)."""
    codec = random_codec("cuda")
    audio = speech_like(24_000, 1, 2.0)[None].cuda()
    for _ in range(3):  # eager, capture, replay
        codec.encode(audio, 6.0)
    other = random_codec("cuda")
    with torch.no_grad():
        for p in other.model.encoder.parameters():
            p.mul_(1.1)
    codec.model.load_state_dict(other.model.state_dict())
    assert (codec.encode(audio, 6.0).codes == other.encode(audio, 6.0).codes).all()
