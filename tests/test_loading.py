"""Checkpoint formats and model resolution through ``EnCodec.from_pretrained``."""

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from fastencodec.models import EnCodec
from tests.support import speech_like


@pytest.fixture(scope="module")
def hf_tensors(hf24):
    return load_file(str(hf24[1] / "model.safetensors"))


@pytest.fixture(scope="module")
def expected(hf24):
    """Tokens and audio of the directory saved by transformers, loaded by us."""
    codec = EnCodec.from_pretrained(hf24[1])
    audio = speech_like(24_000, 1, 0.6)
    tokens = codec.encode(audio, bandwidth=6.0)
    return audio, np.asarray(tokens), codec.decode(tokens)


def save_dir(directory: Path, tensors: dict, config_from: Path, weights_name="model.safetensors", metadata=None):
    directory.mkdir()
    (directory / "config.json").write_text((config_from / "config.json").read_text())
    if weights_name.endswith(".safetensors"):
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(directory / weights_name), metadata=metadata)
    else:
        torch.save(tensors, directory / weights_name)
    return directory


def assert_same_model(path, expected):
    audio, codes, decoded = expected
    codec = EnCodec.from_pretrained(path)
    tokens = codec.encode(audio, bandwidth=6.0)
    np.testing.assert_array_equal(np.asarray(tokens), codes)
    np.testing.assert_allclose(codec.decode(tokens), decoded, atol=1e-5)


def test_transformers_parametrizations_layout(hf24, hf_tensors):
    assert any(".parametrizations.weight.original0" in k for k in hf_tensors)
    codec = EnCodec.from_pretrained(hf24[1])
    assert (codec.sample_rate, codec.channels, codec.frame_rate) == (24_000, 1, 75)
    assert codec.bandwidths == [1.5, 3.0, 6.0, 12.0, 24.0] and codec.codebook_size == 1024


def test_weight_g_weight_v_layout(tmp_path, hf24, hf_tensors, expected):
    legacy = {
        k.replace(".parametrizations.weight.original0", ".weight_g").replace(
            ".parametrizations.weight.original1", ".weight_v"
        ): v
        for k, v in hf_tensors.items()
    }
    assert any(k.endswith(".weight_g") for k in legacy)
    assert_same_model(save_dir(tmp_path / "legacy", legacy, hf24[1]), expected)


def test_pytorch_model_bin(tmp_path, hf24, hf_tensors, expected):
    assert_same_model(save_dir(tmp_path / "bin", hf_tensors, hf24[1], "pytorch_model.bin"), expected)


def mlx_conversion(hf_tensors: dict, transposed: set) -> dict:
    """What mlx-examples' encodec convert.py produces: folded weight norm, [out, kernel, in] convs,
    LSTM weights as Wx/Wh with one merged bias, training buffers dropped."""
    out = {}
    for key, value in hf_tensors.items():
        if key.endswith((".original0", ".embed_avg", ".cluster_size", ".inited")) or "_hh_" in key and "bias" in key:
            continue
        if key.endswith(".original1"):
            base = key[: -len(".parametrizations.weight.original1")]
            gain = hf_tensors[base + ".parametrizations.weight.original0"]
            value = gain * value / value.norm(dim=(1, 2), keepdim=True)
            key = base + ".weight"
        if ".lstm." in key:
            base, name = key.rsplit(".", 1)
            kind, gate, layer = name.split("_")
            if kind == "bias":
                value = value + hf_tensors[key.replace("_ih_", "_hh_")]
                key = f"{base}.{layer[1:]}.bias"
            else:
                key = f"{base}.{layer[1:]}.{'Wx' if gate == 'ih' else 'Wh'}"
        if key.endswith(".conv.weight"):
            value = value.permute(1, 2, 0) if key.rsplit(".", 1)[0] in transposed else value.permute(0, 2, 1)
        out[key] = value
    return out


def test_mlx_conversion_layout(tmp_path, hf24, hf_tensors, expected):
    model = hf24[0]
    transposed = {n for n, m in model.named_modules() if isinstance(m, torch.nn.ConvTranspose1d)}
    converted = mlx_conversion(hf_tensors, transposed)
    assert any(k.endswith(".lstm.0.Wx") for k in converted)
    assert_same_model(save_dir(tmp_path / "mlx", converted, hf24[1], metadata={"format": "mlx"}), expected)


def test_meta_checkpoint_identified_by_tensors_not_name(tmp_path, meta48):
    renamed = tmp_path / "weights.th"
    renamed.write_bytes(meta48[1].read_bytes())
    codec = EnCodec.from_pretrained(renamed)
    assert (codec.sample_rate, codec.channels, codec.frame_rate, codec.name) == (48_000, 2, 150, "encodec_48khz")
    assert codec.bandwidths == [3.0, 6.0, 12.0, 24.0]
    assert [codec.codebooks_for(b) for b in codec.bandwidths] == [2, 4, 8, 16]


@pytest.mark.slow
def test_hub_layout_offline(tmp_path, hf24):
    """A cache laid out like huggingface_hub's, resolved by name with HF_HUB_OFFLINE=1."""
    commit = hashlib.sha1(b"fastencodec-test").hexdigest()
    repo = tmp_path / "hub" / "models--facebook--encodec_24khz"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for name in ("config.json", "model.safetensors"):
        data = (hf24[1] / name).read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        os.symlink(os.path.relpath(blob, snapshot), snapshot / name)
    script = textwrap.dedent(
        """
        import sys
        from fastencodec.models import EnCodec
        codec = EnCodec.from_pretrained("encodec-24khz")
        print(codec.sample_rate, codec.model_id)
        try:
            EnCodec.from_pretrained("encodec-48khz")
        except FileNotFoundError as exc:
            print("missing:", exc)
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"24000 {EnCodec.from_pretrained(hf24[1]).model_id}"
    assert lines[1].startswith("missing: facebook/encodec_48khz") and "offline" in lines[1]


def test_config_json_is_the_architecture(tmp_path, hf24, hf_tensors):
    """A checkpoint whose tensors do not fit its config is refused, naming the tensor."""
    directory = save_dir(tmp_path / "bad", hf_tensors, hf24[1])
    config = json.loads((directory / "config.json").read_text())
    config["num_filters"] = 64
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"does not match its config: .* has shape \(512,\), expected \(1024,\)"):
        EnCodec.from_pretrained(directory)


@pytest.mark.slow
def test_torchaudio_standin_leaves_transformers_importable(tmp_path):
    """The tests' torchaudio stand-in is a proper module (with a spec): transformers imports after it,
    in the same process, and does not take it for a real torchaudio."""
    script = (
        "from tests.support import install_torchaudio_standin\n"
        "install_torchaudio_standin()\n"
        "import importlib.util, encodec, transformers\n"
        "from transformers import EncodecModel\n"
        "from transformers.utils import is_torchaudio_available\n"
        "assert importlib.util.find_spec('torchaudio') is not None and not is_torchaudio_available()\n"
        "print('ok')\n"
    )
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
