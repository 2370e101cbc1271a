"""Corpus inputs (folders, path lists, JSONL manifests) to a list of items, and items to shards.

The plan is fixed before any audio is decoded: items in input order (a folder's files sorted by
relative path), cut into shards of ``shard_size`` consecutive items. Resume and the split
between ranks rely on it being the same on every run with the same inputs.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

AUDIO_SUFFIXES = frozenset(
    ".wav .wave .flac .ogg .oga .opus .mp3 .m4a .aac .mp4 .aiff .aif .aifc .au .snd .caf .w64 .wv .wma .webm .mka "
    ".mkv .amr .ac3 .ape .ra".split()
)
"""File name endings a folder input picks up (case-insensitive): what ``fastencodec compress`` reads."""

LIST_SUFFIXES = frozenset({".txt", ".lst", ".list"})
MANIFEST_SUFFIXES = frozenset({".jsonl", ".ndjson"})


class CorpusInputError(ValueError):
    """An input folder, list or manifest cannot be read, or describes invalid items."""


@dataclass(frozen=True)
class Item:
    """One row to be: an audio file, or a segment of one.

    Attributes:
        path: as the ``path`` column stores it: relative to the input folder, or as the list
            or manifest spelled it.
        source: the file to open (relative paths of lists and manifests resolved against
            the list's folder).
        offset: segment start in seconds, or None.
        duration: segment length in seconds, or None.
    """

    path: str
    source: str
    offset: float | None = None
    duration: float | None = None

    def key(self) -> str:
        """Identity of the item in the plan (path and segment)."""
        return json.dumps([self.path, self.offset, self.duration])


@dataclass(frozen=True)
class Shard:
    """A fixed group of consecutive items, written as ``DIR/<name>``."""

    index: int
    items: tuple[Item, ...]

    @property
    def name(self) -> str:
        return f"shard-{self.index:05d}.parquet"

    def digest(self) -> str:
        """SHA-256 (hex, 16 digits) of the items' keys: changes when the inputs change."""
        text = "\n".join(item.key() for item in self.items)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def collect_items(inputs: Sequence[str | os.PathLike[str]]) -> list[Item]:
    """Items of every input in order: a folder (recursive, audio files sorted by relative path),
    a text list of paths (``.txt``/``.lst``/``.list``, one per line), a JSONL manifest
    (``.jsonl``/``.ndjson``: objects with ``path``, optional ``offset``/``duration`` in seconds),
    or one audio file.

    Raises:
        CorpusInputError: an input is missing or malformed, it lists no items, or two items
            have the same path and segment.
    """
    items: list[Item] = []
    for entry in inputs:
        path = Path(entry)
        if path.is_dir():
            items += _folder_items(path)
        elif not path.is_file():
            raise CorpusInputError(f"{entry}: no such file or folder")
        elif path.suffix.lower() in MANIFEST_SUFFIXES:
            items += _manifest_items(path)
        elif path.suffix.lower() in LIST_SUFFIXES:
            items += _list_items(path)
        else:
            items.append(Item(os.fspath(entry), os.fspath(entry)))
    if not items:
        raise CorpusInputError(f"no audio files in {', '.join(map(str, inputs))}")
    seen: set[str] = set()
    for item in items:
        if item.key() in seen:
            raise CorpusInputError(f"{item.path}: listed twice (same path and segment); rows need distinct names")
        seen.add(item.key())
    return items


def plan_shards(items: Sequence[Item], shard_size: int) -> list[Shard]:
    """Cut ``items`` into shards of ``shard_size`` consecutive items (the last may hold fewer)."""
    if shard_size <= 0:
        raise ValueError(f"shard_size must be positive, got {shard_size}")
    starts = range(0, len(items), shard_size)
    return [Shard(i, tuple(items[start : start + shard_size])) for i, start in enumerate(starts)]


def _folder_items(folder: Path) -> list[Item]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in files:
            if Path(name).suffix.lower() in AUDIO_SUFFIXES and not name.startswith("."):
                full = Path(root) / name
                found.append(Item(full.relative_to(folder).as_posix(), os.fspath(full)))
    return sorted(found, key=lambda item: item.path)


def _list_items(listing: Path) -> list[Item]:
    items = []
    for line in _lines(listing):
        text = line.strip()
        if text and not text.startswith("#"):
            items.append(Item(text, _resolve(listing, text)))
    return items


def _manifest_items(manifest: Path) -> list[Item]:
    items = []
    for number, line in enumerate(_lines(manifest), 1):
        if not line.strip():
            continue
        where = f"{manifest}, line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CorpusInputError(f"{where}: not JSON ({exc.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("path"), str) or not record["path"]:
            raise CorpusInputError(f"{where}: expected an object with a non-empty string 'path'")
        offset = _seconds(record.get("offset"), "offset", where, allow_zero=True)
        duration = _seconds(record.get("duration"), "duration", where, allow_zero=False)
        items.append(Item(record["path"], _resolve(manifest, record["path"]), offset, duration))
    return items


def _seconds(value: object, name: str, where: str, allow_zero: bool) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CorpusInputError(f"{where}: {name} must be a number of seconds, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise CorpusInputError(f"{where}: {name} must be {'>= 0' if allow_zero else '> 0'} seconds, got {value}")
    return float(value)


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CorpusInputError(f"{path}: cannot read ({exc})") from None


def _resolve(listing: Path, path: str) -> str:
    """``path`` as written in ``listing``, relative ones taken from the listing's folder."""
    return path if os.path.isabs(path) else os.fspath(listing.parent / path)
