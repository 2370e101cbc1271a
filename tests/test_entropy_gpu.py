"""The portable ``lmp1`` coder across devices: segments coded on the CPU decode on CUDA and back, bit
for bit, and both code the same bytes (CUDA only; skipped elsewhere). Self-contained: needs torch,
numpy and numba, not Meta's ``encodec``."""

import io

import numpy as np
import pytest
import torch

from fastencodec.entropy import PortableCoder, PortableLM, lm_config

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def random_lm_state(n_q: int, seed: int) -> dict:
    """A state dict shaped as Meta's ``LMModel`` (5 layers, width 200, 1024 codes), random weights."""
    rng = np.random.default_rng(seed)
    shapes = {f"emb.{k}.weight": (1025, 200) for k in range(n_q)}
    shapes |= {f"linears.{k}.weight": (1024, 200) for k in range(n_q)}
    shapes |= {f"linears.{k}.bias": (1024,) for k in range(n_q)}
    shapes |= {"transformer.norm_in.weight": (200,), "transformer.norm_in.bias": (200,)}
    for i in range(5):
        p = f"transformer.layers.{i}."
        shapes |= {
            p + "self_attn.in_proj_weight": (600, 200), p + "self_attn.in_proj_bias": (600,),
            p + "self_attn.out_proj.weight": (200, 200), p + "self_attn.out_proj.bias": (200,),
            p + "linear1.weight": (800, 200), p + "linear1.bias": (800,),
            p + "linear2.weight": (200, 800), p + "linear2.bias": (200,),
        }
        shapes |= {p + f"norm{j}.{n}": (200,) for j in (1, 2) for n in ("weight", "bias")}
    state = {}
    for key, shape in shapes.items():
        values = rng.uniform(-1, 1, shape) / (np.sqrt(shape[-1]) if len(shape) == 2 else 10)
        if key.endswith("norm_in.weight") or ".norm" in key and key.endswith("weight"):
            values = 1 + values
        state[key] = torch.from_numpy(values.astype(np.float32))
    return state


def encode(coder, codes):
    out = io.BytesIO()
    enc = coder.encoder(out, codes.shape[0])
    enc.push(codes[:, :100])
    enc.push(codes[:, 100:])
    enc.finish()
    return out.getvalue()


@pytest.mark.parametrize("model_name, n_q, k, frames", [("encodec_24khz", 32, 8, 300), ("encodec_48khz", 16, 4, 150)])
def test_lmp1_segments_cross_cpu_and_cuda_bit_for_bit(model_name, n_q, k, frames):
    state = random_lm_state(n_q, seed=n_q)
    lm = PortableLM(state, lm_config(model_name, state))
    cpu, cuda = PortableCoder(lm), PortableCoder(lm, device="cuda")
    codes = np.random.default_rng(k).integers(0, 1024, (k, frames))
    on_cpu, on_cuda = encode(cpu, codes), encode(cuda, codes)
    assert on_cpu == on_cuda
    np.testing.assert_array_equal(cuda.decoder(io.BytesIO(on_cpu), k, frames).read(frames), codes)
    np.testing.assert_array_equal(cpu.decoder(io.BytesIO(on_cuda), k, frames).read(frames), codes)
