"""Fuzzed configs and checkpoints (issue 12): a mutated ``config.json`` or state dict either loads
(and then encodes and decodes) or fails with the library's own error (ValueError or
FileNotFoundError), each within a time bound and under an address-space limit, so no mutation
can make loading allocate gigabytes or run for minutes."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

import fastencodec

SECONDS_PER_EXAMPLE = 10.0
HEADROOM_BYTES = 2 << 30
"""Address space granted above what the process maps when the fuzzing starts."""


@contextlib.contextmanager
def address_space_limit(headroom: int):
    """Cap the process's address space at its current size plus ``headroom``, and run torch on one
    thread (both restored after)."""
    with open("/proc/self/status") as f:
        mapped = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = mapped + headroom
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: a thread pool only adds overhead (15x on a busy 2-core machine)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def load_or_fail_cleanly(path: Path) -> None:
    """Load ``path``; a loaded model must code a short signal. Only the library's errors may escape."""
    start = time.perf_counter()
    try:
        codec = fastencodec.EnCodec.from_pretrained(path)
        audio = np.zeros((1, codec.channels, 480), np.float32)
        tokens = codec.encode(audio, bandwidth=codec.bandwidths[0])
        codec.decode(tokens)
    except (ValueError, FileNotFoundError):
        pass
    assert time.perf_counter() - start < SECONDS_PER_EXAMPLE


CONFIG_KEYS = [
    "sampling_rate",
    "audio_channels",
    "hidden_size",
    "codebook_dim",
    "num_filters",
    "num_residual_layers",
    "upsampling_ratios",
    "kernel_size",
    "last_kernel_size",
    "residual_kernel_size",
    "dilation_growth_rate",
    "use_causal_conv",
    "pad_mode",
    "compress",
    "num_lstm_layers",
    "trim_right_ratio",
    "norm_type",
    "use_conv_shortcut",
    "codebook_size",
    "target_bandwidths",
    "normalize",
    "chunk_length_s",
    "overlap",
    "model_type",
]
NUMBERS = st.one_of(
    st.sampled_from([0, 1, 2, 3, 4, 7, 8, 16, 32, 64, 256, 1024, 24_000, 100_000, 10**9, -1]),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 0.01, 0.5, 0.99, 1.0, 2.0, -1.0, 1e-9, 1e9]),
)
VALUES = st.one_of(
    NUMBERS,
    st.none(),
    st.booleans(),
    st.sampled_from(["reflect", "constant", "weight_norm", "time_group_norm", "encodec", "", "zeros"]),
    st.lists(NUMBERS, max_size=45),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


def test_fuzzed_configs_load_or_fail_cleanly(tmp_path, tiny24):
    base = json.loads((tiny24 / "config.json").read_text())
    directory = tmp_path / "model"
    directory.mkdir()
    os.symlink(tiny24 / "model.safetensors", directory / "model.safetensors")

    @settings(max_examples=80, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(st.dictionaries(st.sampled_from(CONFIG_KEYS), VALUES, min_size=1, max_size=4))
    def check(changes):
        (directory / "config.json").write_text(json.dumps(base | changes))
        load_or_fail_cleanly(directory)

    with address_space_limit(HEADROOM_BYTES):
        check()


DTYPES = [torch.float16, torch.bfloat16, torch.float64, torch.int8, torch.uint8, torch.int64, torch.bool]
MUTATIONS = st.tuples(
    st.sampled_from(["delete", "reshape", "dtype", "nan", "rename", "extra", "scalar", "expand"]),
    st.integers(0, 10**6),  # which tensor
    st.lists(st.integers(0, 9), max_size=4),  # a shape
    st.sampled_from(DTYPES),
)


def mutate(state: dict[str, torch.Tensor], mutation: tuple) -> dict[str, torch.Tensor]:
    kind, index, shape, dtype = mutation
    keys = sorted(state)
    key = keys[index % len(keys)]
    state = dict(state)
    if kind == "delete":
        del state[key]
    elif kind == "reshape":
        state[key] = torch.randn(shape)
    elif kind == "dtype":
        state[key] = state[key].to(dtype)
    elif kind == "nan":
        value = state[key].clone()
        value.view(-1)[index % max(1, value.numel())] = float("nan")
        state[key] = value
    elif kind == "rename":
        state[key + "x"] = state.pop(key)
    elif kind == "extra":
        state[f"encoder.layers.{index}.conv.weight"] = torch.randn(shape)
    elif kind == "scalar":
        state[key] = torch.tensor(1.0)
    else:  # a view claiming far more elements than its storage holds
        state[key] = torch.zeros(1).expand(1 << 30)
    return state


@pytest.mark.slow
def test_fuzzed_checkpoints_load_or_fail_cleanly(tmp_path, tiny24):
    state = load_file(str(tiny24 / "model.safetensors"))
    config = (tiny24 / "config.json").read_text()

    @settings(max_examples=80, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(st.lists(MUTATIONS, min_size=1, max_size=3), st.booleans(), st.integers(0, 10**9))
    def check(mutations, as_safetensors, name):
        tensors = state
        for mutation in mutations:
            tensors = mutate(tensors, mutation)
        directory = tmp_path / str(name)
        directory.mkdir(exist_ok=True)
        (directory / "config.json").write_text(config)
        for weights in ("model.safetensors", "pytorch_model.bin"):  # a previous example's
            (directory / weights).unlink(missing_ok=True)
        if as_safetensors and all(t.is_contiguous() for t in tensors.values()):
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(directory / "model.safetensors"))
        else:
            torch.save(tensors, directory / "pytorch_model.bin")
        load_or_fail_cleanly(directory)

    with address_space_limit(HEADROOM_BYTES):
        check()
