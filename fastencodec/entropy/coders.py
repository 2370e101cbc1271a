"""Symbol coder lookup by the tag an ``.ecdc`` header names."""

from __future__ import annotations

import os

from .meta_lm import MetaLMCoder
from .portable import PortableCoder
from .seam import SymbolCoder

ENTROPY_MODES = ("bits", "lm", "lmp1")


def coder_for(tag: str, model_name: str, lm_path: str | os.PathLike | None = None) -> SymbolCoder | None:
    """The symbol coder for ``tag``: None for plain bit packing (``"bits"``), else an LM coder.

    Args:
        tag: ``"bits"``, ``"lm"`` (Meta-compatible) or ``"lmp1"`` (portable).
        model_name: the codec model, ``"encodec_24khz"`` or ``"encodec_48khz"`` for the LM modes.
        lm_path: an explicit LM checkpoint (default: torch hub's cache, as Meta's package).

    Raises:
        ValueError: unknown tag, or no LM exists for ``model_name``.
        MissingLMWeights: the LM checkpoint is missing and cannot be downloaded.
    """
    if tag == "bits":
        return None
    if tag == "lm":
        return MetaLMCoder.for_model(model_name, lm_path)
    if tag == "lmp1":
        return PortableCoder.for_model(model_name, lm_path)
    raise ValueError(f"unknown entropy mode {tag!r} (one of {', '.join(ENTROPY_MODES)})")
