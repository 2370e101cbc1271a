"""The model ``fastencodec.generate`` uses: loaded on first use, then kept (one per name and device)."""

from __future__ import annotations

import threading

from fastencodec.musicgen.loading import DEFAULT_MODEL
from fastencodec.musicgen.model import MusicGen

_DEFAULTS: dict[tuple[str, str | None], MusicGen] = {}
_DEFAULTS_LOCK = threading.Lock()


def default_model(name: str | None = None, device: str | None = None) -> MusicGen:
    """The kept :class:`MusicGen` for ``name`` (default :data:`DEFAULT_MODEL`) on ``device``."""
    name = DEFAULT_MODEL if name is None else name
    with _DEFAULTS_LOCK:
        key = (str(name), None if device is None else str(device))
        if key not in _DEFAULTS:
            _DEFAULTS[key] = MusicGen.from_pretrained(name, device)
        return _DEFAULTS[key]
