"""``DIR/manifest.json``: what a token corpus holds, and the check that refuses mixing corpora.

Every process of a run writes the same bytes (no timestamps, no rank-specific fields), so
ranks need no coordination to produce it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import fastencodec
from fastencodec.codec import EnCodec
from fastencodec.corpus.sources import Shard
from fastencodec.io.atomic import AtomicOutput

FORMAT = "fastencodec-corpus"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ERRORS = "errors.jsonl"
_IDENTITY = ("model_id", "bandwidth", "precision")


class CorpusMismatchError(ValueError):
    """The output folder holds a corpus of another model, bandwidth, precision or plan."""


def build_manifest(codec: EnCodec, bandwidth: float, shards: list[Shard], with_offset: bool) -> dict:
    """The manifest of a corpus of ``shards`` coded by ``codec`` at ``bandwidth`` kbps (in its policy's precision)."""
    digests = [shard.digest() for shard in shards]
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": codec.name,
        "model_id": codec.model_id,
        "bandwidth": bandwidth,
        "codebooks": codec.codebooks_for(bandwidth),
        "codebook_size": codec.codebook_size,
        "sample_rate": codec.sample_rate,
        "channels": codec.channels,
        "frame_rate": codec.frame_rate,
        "hop_length": codec.hop_length,
        "precision": codec.policy.precision,
        "fastencodec_version": fastencodec.__version__,
        "columns": ["path", "codes", "frames", "samples", "duration", "scales"] + (["offset"] if with_offset else []),
        "items": sum(len(shard.items) for shard in shards),
        "plan": hashlib.sha256("".join(digests).encode()).hexdigest()[:16],
        "shards": [
            {"file": shard.name, "items": len(shard.items), "digest": digest} for shard, digest in zip(shards, digests)
        ],
    }


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The manifest of the corpus in ``directory``.

    Raises:
        FileNotFoundError: there is none.
        ValueError: it is not a fastencodec corpus manifest.
    """
    path = Path(directory) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file (not a token corpus folder?)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: not a fastencodec corpus manifest")
    return manifest


def prepare(directory: Path, manifest: dict) -> None:
    """Create ``directory`` and write ``manifest`` there, unless an equal one is there already.

    Raises:
        CorpusMismatchError: ``directory`` holds a corpus of another model, bandwidth or
            precision, or one planned from other inputs or another shard size.
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / MANIFEST
    if path.exists():
        old = read_manifest(directory)
        if any(old.get(key) != manifest[key] for key in _IDENTITY):
            raise CorpusMismatchError(
                f"{directory}: holds tokens of {old.get('model_id')} at {old.get('bandwidth')} kbps "
                f"({old.get('precision')}); this run asks for {manifest['model_id']} at {manifest['bandwidth']} kbps "
                f"({manifest['precision']}); choose another --out"
            )
        if old.get("plan") != manifest["plan"]:
            raise CorpusMismatchError(
                f"{directory}: was tokenized from other inputs or another shard size "
                f"({len(old.get('shards', []))} shards then, {len(manifest['shards'])} now); choose another --out"
            )
    text = json.dumps(manifest, indent=1) + "\n"
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return
    with AtomicOutput(path) as output:
        output.file.write(text.encode())
