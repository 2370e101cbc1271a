"""Reading a transformers MusicGen checkpoint: config, safetensors weights, T5 tokenizer.

A checkpoint is a directory (or a Hugging Face repo id, downloaded with ``huggingface_hub``) with
``config.json`` (``model_type`` "musicgen"), ``model.safetensors`` or sharded safetensors
(``model.safetensors.index.json``), and the tokenizer's ``tokenizer.json``. Pickled weights
(``pytorch_model.bin``) are refused.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from fastencodec.codec import EnCodec
from fastencodec.musicgen.config import MusicGenConfig
from fastencodec.musicgen.decoder import DECODER_RENAMES, MusicGenLM, fuse_self_attention
from fastencodec.musicgen.t5 import T5_RENAMES, T5Encoder
from fastencodec.weights.loading import check_state, model_from_tensors, read_json

StateDict = dict[str, torch.Tensor]

DEFAULT_MODEL = "facebook/musicgen-small"
ALIASES = {name: f"facebook/{name}" for name in (
    "musicgen-small", "musicgen-medium", "musicgen-large",
    "musicgen-stereo-small", "musicgen-stereo-medium", "musicgen-stereo-large",
)}
"""Short names of the published models (CC-BY-NC 4.0 weights, downloaded on request)."""
FILES = ("config.json", "generation_config.json", "model.safetensors", "model.safetensors.index.json",
         "model-*.safetensors", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
"""Files fetched from a hub repo (no pickles)."""


def resolve(name_or_path: str | Path, cache_dir: str | Path | None = None, revision: str | None = None) -> Path:
    """A local checkpoint directory: ``name_or_path`` itself if it exists, else a downloaded repo."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ValueError(f"{path}: a MusicGen checkpoint is a directory (config.json, safetensors, tokenizer)")
    repo = ALIASES.get(str(name_or_path), str(name_or_path))
    if repo.count("/") != 1 or str(name_or_path).startswith((".", "/", "~")):
        raise FileNotFoundError(f"{name_or_path}: no such directory, and not a model name or repo id")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo, revision=revision, cache_dir=cache_dir, allow_patterns=list(FILES)))
    except LocalEntryNotFoundError as exc:
        raise FileNotFoundError(f"{repo}: not in the Hugging Face cache and could not be downloaded") from exc
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise FileNotFoundError(f"{repo}: could not be fetched from the Hugging Face hub: {exc}") from exc


def read_config(directory: Path) -> MusicGenConfig:
    """The checkpoint's :class:`MusicGenConfig` (ValueError for a model that is not MusicGen)."""
    file = directory / "config.json"
    if not file.is_file():
        raise FileNotFoundError(f"{directory}: no config.json (not a transformers MusicGen checkpoint)")
    cfg = read_json(file)
    try:
        return MusicGenConfig.from_hf(cfg)
    except ValueError as exc:
        raise ValueError(f"{directory}: {exc}") from None


def read_weights(directory: Path) -> StateDict:
    """All tensors of ``model.safetensors`` or of the shards an index file lists."""
    from safetensors.torch import load_file

    single, index = directory / "model.safetensors", directory / "model.safetensors.index.json"
    if single.is_file():
        files = [single]
    elif index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
            files = [directory / name for name in sorted(set(weight_map.values()))]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{index}: not a safetensors shard index ({exc})") from exc
    elif any(directory.glob("pytorch_model*.bin")):
        raise ValueError(f"{directory}: only pickled weights (pytorch_model.bin); convert them to safetensors")
    else:
        raise FileNotFoundError(f"{directory}: no model.safetensors or model.safetensors.index.json")
    tensors: StateDict = {}
    for file in files:
        if not file.is_file():
            raise FileNotFoundError(f"{file}: shard listed in the index is missing")
        try:
            tensors.update(load_file(str(file)))
        except Exception as exc:  # safetensors raises several types for corrupt files
            raise ValueError(f"{file}: not a readable safetensors file ({exc.__class__.__name__}: {exc})") from exc
    return tensors


def read_tokenizer(directory: Path):
    """The prompt tokenizer (a ``tokenizers.Tokenizer``) from the checkpoint's ``tokenizer.json``."""
    file = directory / "tokenizer.json"
    if not file.is_file():
        raise FileNotFoundError(f"{directory}: no tokenizer.json (the T5 tokenizer MusicGen prompts need)")
    try:
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise ImportError("MusicGen needs the `tokenizers` package: pip install fastencodec[musicgen]") from exc
    try:
        tokenizer = Tokenizer.from_file(str(file))
    except Exception as exc:  # tokenizers raises a bare Exception for bad files
        raise ValueError(f"{file}: not a readable tokenizer ({exc})") from exc
    tokenizer.no_padding()  # batches are padded (and masked) by the caller
    return tokenizer


def split_tensors(tensors: StateDict) -> dict[str, StateDict]:
    """Checkpoint tensors by part: ``text``, ``codec``, ``decoder`` and ``proj`` (prefixes removed)."""
    parts: dict[str, StateDict] = {"text": {}, "codec": {}, "decoder": {}, "proj": {}}
    prefixes = (("text_encoder.", "text"), ("audio_encoder.", "codec"), ("enc_to_dec_proj.", "proj"))
    for key, value in tensors.items():
        for prefix, part in prefixes:
            if key.startswith(prefix):
                parts[part][key[len(prefix) :]] = value
                break
        else:
            parts["decoder"][key] = value
    return parts


def rename(tensors: StateDict, renames: tuple[tuple[str, str], ...], what: str) -> StateDict:
    """Apply the first matching ``(pattern, replacement)`` to every name; unknown names are an error."""
    out: StateDict = {}
    for key, value in tensors.items():
        for pattern, replacement in renames:
            if re.match(pattern, key):
                out[re.sub(pattern, replacement, key)] = value
                break
        else:
            raise ValueError(f"{what}: unexpected tensor {key!r} (not a MusicGen checkpoint?)")
    return out


def load_into(module: torch.nn.Module, tensors: StateDict, what: str) -> torch.nn.Module:
    """Load ``tensors`` into ``module`` (built on the ``meta`` device: shapes only) strictly, with
    errors that name the part and tensor; returns the module, allocated on the CPU."""
    try:
        check_state(tensors, module.state_dict())
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None
    module = module.to_empty(device="cpu")
    module.load_state_dict({k: v.float() for k, v in tensors.items()})
    return module


class Parts(NamedTuple):
    """The modules of a MusicGen checkpoint, weights loaded (float32, on the CPU)."""

    text_encoder: T5Encoder
    lm: MusicGenLM
    text_proj: nn.Linear | None
    codec: EnCodec


def build_parts(config: MusicGenConfig, tensors: StateDict) -> Parts:
    """The text encoder, decoder LM, projection and codec of ``config`` with the checkpoint's ``tensors``.

    Raises:
        ValueError: the tensors do not fit the config (the message names the part and tensor).
    """
    parts = split_tensors(tensors)
    text = rename(parts["text"], T5_RENAMES, "text encoder")
    if "embed.weight" not in text:
        raise ValueError("text encoder: checkpoint has no token embedding (shared.weight)")
    if not config.projects_text and parts["proj"]:
        raise ValueError("checkpoint has enc_to_dec_proj tensors its config does not call for")
    with torch.device("meta"):  # shapes only: no random initialisation of weights about to be replaced
        text_encoder, lm = T5Encoder(config.text), MusicGenLM(config.decoder)
        text_proj = nn.Linear(config.text.d_model, config.decoder.hidden) if config.projects_text else None
    text_encoder = load_into(text_encoder, text, "text encoder")
    lm = load_into(lm, fuse_self_attention(rename(parts["decoder"], DECODER_RENAMES, "decoder")), "decoder")
    if text_proj is not None:
        text_proj = load_into(text_proj, parts["proj"], "enc_to_dec_proj")
    try:
        codec = EnCodec(model_from_tensors(config.codec, parts["codec"]))
    except ValueError as exc:
        raise ValueError(f"audio encoder: {exc}") from None
    return Parts(text_encoder, lm, text_proj, codec)
