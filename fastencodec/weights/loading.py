"""Checkpoint loading: Hugging Face, Meta and MLX layouts into our parameter names.

Supported layouts (detected from tensor names, never from file names):

- Hugging Face ``EncodecModel``: ``encoder.layers.0.conv.weight_g``/``weight_v``
  or ``...conv.parametrizations.weight.original0/1``;
- Meta's ``encodec`` state dicts (``encodec_24khz-d7cc33bc.th``):
  ``encoder.model.0.conv.conv.weight_g``, ``quantizer.vq.layers.0._codebook.embed``;
- MLX conversions (``mlx-community/encodec-24khz-float32``): weight norm folded,
  conv weights ``[out, kernel, in]``, LSTM ``Wx``/``Wh`` with one merged bias.

Weight norm is folded into plain weights here, once; training-only buffers
(codebook usage statistics) are dropped. Files are read with ``safetensors`` or
``torch.load(weights_only=True)`` only.
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastencodec.nn.config import META_24KHZ, META_48KHZ, EncodecConfig
from fastencodec.nn.model import EncodecModel

StateDict = dict[str, torch.Tensor]

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
MAX_CHECKPOINT_BYTES = 1 << 30
"""Most bytes a checkpoint may hold or expand to (Meta's and Hugging Face's published EnCodec
checkpoints are under 100 MB); bigger claims are refused before anything is allocated."""
_DROPPED = (".inited", ".cluster_size", ".embed_avg")


def read_json(file: Path) -> Any:
    """The JSON value in ``file`` (a checkpoint's ``config.json``).

    Raises:
        ValueError: the file cannot be read or is not valid JSON (the message names it).
    """
    try:
        return json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{file}: not valid JSON ({exc})") from exc


def read_tensors(path: Path) -> StateDict:
    """Tensors of a ``.safetensors`` file or a ``torch.save``-d state dict."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    _check_declared_size(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            tensors = load_file(str(path))
        else:
            tensors = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # the loaders raise many types for corrupt files
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        detail = exc.__class__.__name__ + (f": {first_line}" if len(first_line) < 120 else "")
        raise ValueError(f"{path}: not a checkpoint (not a safetensors file or torch state dict; {detail})") from None
    if isinstance(tensors, dict) and "state_dict" in tensors and isinstance(tensors["state_dict"], dict):
        tensors = tensors["state_dict"]
    if not isinstance(tensors, dict) or not all(isinstance(v, torch.Tensor) for v in tensors.values()):
        raise ValueError(f"{path}: does not hold a state dict of tensors")
    if not all(isinstance(k, str) for k in tensors):
        raise ValueError(f"{path}: state dict keys must be strings")
    claimed = sum(v.numel() * 4 for v in tensors.values())  # as float32, the way they are used
    if claimed > MAX_CHECKPOINT_BYTES:
        raise ValueError(f"{path}: tensors of {claimed:,} bytes as float32 (at most {MAX_CHECKPOINT_BYTES:,})")
    return tensors


def _check_declared_size(path: Path) -> None:
    """Refuse a file, or a ``torch.save`` zip archive's declared contents, over ``MAX_CHECKPOINT_BYTES``."""
    size = path.stat().st_size
    if size > MAX_CHECKPOINT_BYTES:
        raise ValueError(f"{path}: {size:,} bytes is too large for an EnCodec checkpoint")
    if path.suffix == ".safetensors" or not zipfile.is_zipfile(path):
        return  # safetensors and legacy torch files hold their tensors' bytes (checked by the readers)
    try:
        with zipfile.ZipFile(path) as archive:
            declared = sum(entry.file_size for entry in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a checkpoint (unreadable zip archive: {exc})") from None
    if declared > MAX_CHECKPOINT_BYTES:
        raise ValueError(f"{path}: archive expands to {declared:,} bytes (at most {MAX_CHECKPOINT_BYTES:,})")


def load_checkpoint(path: Path) -> tuple[EncodecConfig, StateDict]:
    """Config and raw tensors from a checkpoint directory or file."""
    if path.is_dir():
        config_file = path / "config.json"
        weights = next((path / f for f in WEIGHT_FILES if (path / f).is_file()), None)
        if weights is None:
            raise FileNotFoundError(f"{path}: no {' or '.join(WEIGHT_FILES)} in this directory")
    elif path.is_file():
        config_file, weights = path.parent / "config.json", path
    else:
        raise FileNotFoundError(f"{path}: no such file or directory")
    tensors = read_tensors(weights)
    if any(k.startswith("encoder.model.") for k in tensors):
        return infer_meta_config(tensors), tensors
    if not config_file.is_file():
        raise FileNotFoundError(f"{weights}: Hugging Face/MLX layout needs a config.json beside it")
    config = read_json(config_file)
    if not isinstance(config, dict):
        raise ValueError(f"{config_file}: expected a JSON object")
    return EncodecConfig.from_hf(config), tensors


def infer_meta_config(tensors: StateDict) -> EncodecConfig:
    """Which of Meta's published models a state dict belongs to, from its tensors."""
    first = tensors.get("encoder.model.0.conv.conv.weight_v", tensors.get("encoder.model.0.conv.conv.weight"))
    if first is None:
        raise ValueError("Meta checkpoint is incomplete: no encoder.model.0.conv.conv.weight(_v)")
    if first.dim() != 3:
        raise ValueError(f"Meta checkpoint's first conv weight has shape {tuple(first.shape)}; expected 3 dimensions")
    channels = first.shape[1]
    norm = "time_group_norm" if "encoder.model.0.conv.norm.weight" in tensors else "weight_norm"
    n_q = sum(1 for k in tensors if re.fullmatch(r"quantizer\.vq\.layers\.\d+\._codebook\.embed", k))
    for cfg in (META_24KHZ, META_48KHZ):
        if (cfg.channels, cfg.norm, cfg.num_quantizers) == (channels, norm, n_q):
            return cfg
    raise ValueError(
        f"Meta checkpoint matches no published EnCodec model ({channels} channels, {norm}, {n_q} codebooks)"
    )


def _rename(key: str) -> str:
    """Meta and HF parametrization names to HF ``weight_g``/``weight_v`` names."""
    key = re.sub(r"^(encoder|decoder)\.model\.", r"\1.layers.", key)
    key = key.replace(".conv.conv.", ".conv.").replace(".convtr.convtr.", ".conv.")
    key = key.replace(".conv.norm.", ".norm.").replace(".convtr.norm.", ".norm.")
    key = re.sub(r"^quantizer\.vq\.layers\.(\d+)\._codebook\.", r"quantizer.layers.\1.codebook.", key)
    key = key.replace(".parametrizations.weight.original0", ".weight_g")
    return key.replace(".parametrizations.weight.original1", ".weight_v")


def _from_mlx(tensors: StateDict, model: nn.Module) -> StateDict:
    out: StateDict = {}
    for key, value in tensors.items():
        lstm = re.fullmatch(r"(.*\.lstm)\.(\d+)\.(Wx|Wh|bias)", key)
        if lstm:
            base, layer, kind = lstm.groups()
            if kind == "bias":
                out[f"{base}.bias_ih_l{layer}"] = value
                out[f"{base}.bias_hh_l{layer}"] = torch.zeros_like(value)
            else:
                out[f"{base}.weight_{'ih' if kind == 'Wx' else 'hh'}_l{layer}"] = value
        elif key.endswith(".conv.weight") and value.dim() == 3:
            module = model.get_submodule(key[: -len(".weight")])
            out[key] = value.permute(2, 0, 1) if isinstance(module, nn.ConvTranspose1d) else value.permute(0, 2, 1)
        else:
            out[key] = value
    return out


def to_model_state(tensors: StateDict, model: EncodecModel) -> StateDict:
    """Convert any supported layout to ``model``'s state dict, validating names and shapes."""
    if any(re.search(r"\.lstm\.\d+\.W[xh]$", k) for k in tensors):
        tensors = _from_mlx(tensors, model)
    renamed = {_rename(k): v for k, v in tensors.items() if not k.endswith(_DROPPED)}
    for key, value in renamed.items():
        if not value.is_floating_point():
            raise ValueError(f"checkpoint tensor {key} has dtype {value.dtype}; weights must be floating point")
    expected = model.state_dict()
    state: StateDict = {}
    codebooks: dict[int, torch.Tensor] = {}
    for key, value in renamed.items():
        if key.endswith(".weight_v"):
            base = key[: -len("_v")]
            gain = renamed.get(base + "_g")
            if gain is None:
                raise ValueError(f"checkpoint is incomplete: {base}_g missing for {key}")
            if value.dim() == 0 or gain.shape != (value.shape[0],) + (1,) * (value.dim() - 1):
                raise ValueError(f"checkpoint tensors {base}_g {tuple(gain.shape)} and _v {tuple(value.shape)} differ")
            state[base] = torch._weight_norm(value.float(), gain.float(), 0)
        elif key.endswith(".weight_g"):
            continue
        elif m := re.fullmatch(r"quantizer\.layers\.(\d+)\.codebook\.embed", key):
            codebooks[int(m.group(1))] = value
        else:
            state[key] = value
    n_q = expected["quantizer.embed"].shape[0]
    if sorted(codebooks) != list(range(n_q)):
        raise ValueError(f"checkpoint has codebooks {sorted(codebooks)[:3]}..., expected {n_q}")
    for i, embed in codebooks.items():
        if embed.shape != expected["quantizer.embed"].shape[1:]:
            raise ValueError(
                f"checkpoint codebook {i} has shape {tuple(embed.shape)}, "
                f"expected {tuple(expected['quantizer.embed'].shape[1:])}"
            )
    state["quantizer.embed"] = torch.stack([codebooks[i] for i in range(n_q)])
    check_state(state, expected)
    state = {k: v.float() for k, v in state.items()}
    for key, value in state.items():
        if not bool(torch.isfinite(value).all()):
            raise ValueError(f"checkpoint tensor {key} holds NaN or infinite values")
    return state


def check_state(state: StateDict, expected: StateDict) -> None:
    """Check that ``state`` has exactly the tensor names and shapes of ``expected`` (a module's state dict).

    Raises:
        ValueError: a tensor is missing, unexpected, or of another shape (the message names it).
    """
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing:
        raise ValueError(f"checkpoint is incomplete: {len(missing)} tensors missing, e.g. {missing[:3]}")
    if unexpected:
        raise ValueError(f"checkpoint has tensors of another architecture, e.g. {unexpected[:3]}")
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise ValueError(
                f"checkpoint does not match its config: {key} has shape {tuple(value.shape)}, "
                f"expected {tuple(expected[key].shape)}"
            )


def build_model(path: Path) -> EncodecModel:
    """An inference-ready model (weight norm folded, eval mode) from a checkpoint path."""
    config, tensors = load_checkpoint(path)
    return model_from_tensors(config, tensors)


def model_from_tensors(config: EncodecConfig, tensors: StateDict) -> EncodecModel:
    """An inference-ready model from a config and checkpoint tensors in any supported layout; the
    network is built on the ``meta`` device and the tensors checked against it before allocating."""
    with torch.device("meta"):  # shapes only: the checkpoint is checked against them before allocating
        model = EncodecModel(config)
    state = to_model_state(tensors, model)
    model = model.to_empty(device="cpu")
    model.load_state_dict(state)
    model.quantizer.refresh()
    return model.eval().requires_grad_(False)
