"""Symbol coders: how a segment's codes become bytes in an ``.ecdc`` file, and back.

The container (:mod:`fastencodec.formats.ecdc`) writes each segment's scale itself, then hands
the stream to the file's coder, chosen by the header's ``lm`` key: ``false`` is plain bit packing
(tag ``"bits"``), ``true`` Meta's language-model entropy coding (tag ``"lm"``), a string another
coder's tag (``"lmp1"``: the portable LM coder, in files of ECDC version 1, which Meta's reader
refuses). A coder reads only the bytes of its own segment; the stream it reads from returns
exactly the bytes asked for (or raises ``EcdcError``). Coders register in ``CODERS`` (a factory
per tag); :func:`coder_for` builds one. A coder whose bytes decode only on the kind of device
that wrote them (Meta's ``lm`` mode) names that kind as ``device_type`` (``"cpu"``, ``"cuda"``);
the container records a kind other than the CPU and refuses to decode its files elsewhere. The
LM coders live in :mod:`fastencodec.entropy` (numba, the ``entropy`` extra), imported only when
a file or a caller asks for them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import BinaryIO, Protocol

import numpy as np
import torch

from fastencodec.formats.bitpack import BitPacker, BitUnpacker


class SegmentEncoder(Protocol):
    """Codes one segment: frames pushed in time order, then ``finish``."""

    def push(self, codes: np.ndarray) -> None:
        """Code the next frames of this segment, int64 ``[K, n]``."""

    def finish(self) -> None:
        """Flush; the segment's bytes are complete."""


class SegmentDecoder(Protocol):
    """Decodes one segment's frames in time order."""

    def read(self, frames: int) -> np.ndarray:
        """The next ``frames`` frames, int64 ``[K, frames]``."""
        ...


class SymbolCoder(Protocol):
    """A way to store codes: makes one encoder or decoder per segment."""

    tag: str

    def encoder(self, out: BinaryIO, num_codebooks: int) -> SegmentEncoder: ...

    def decoder(self, src: BinaryIO, num_codebooks: int, frames: int) -> SegmentDecoder: ...


class _BitsEncoder:
    def __init__(self, out: BinaryIO, num_codebooks: int, bits: int) -> None:
        self._out = out
        self._num_codebooks = num_codebooks
        self._packer = BitPacker(bits)

    def push(self, codes: np.ndarray) -> None:
        self._out.write(self._packer.pack(np.asarray(codes).T))

    def finish(self) -> None:
        self._out.write(self._packer.flush())


class _BitsDecoder:
    def __init__(self, src: BinaryIO, num_codebooks: int, bits: int) -> None:
        self._src = src
        self._num_codebooks = num_codebooks
        self._unpacker = BitUnpacker(bits)

    def read(self, frames: int) -> np.ndarray:
        count = frames * self._num_codebooks
        data = self._src.read(self._unpacker.bytes_needed(count))
        codes = self._unpacker.unpack(data, count)
        return np.ascontiguousarray(codes.reshape(frames, self._num_codebooks).T)


class BitsCoder:
    """Plain packing, ``bits`` per code (Meta's format without ``--lm``).

    Args:
        bits: width of one code (log2 of the codebook size).
    """

    tag = "bits"

    def __init__(self, bits: int) -> None:
        self.bits = bits

    def encoder(self, out: BinaryIO, num_codebooks: int) -> SegmentEncoder:
        return _BitsEncoder(out, num_codebooks, self.bits)

    def decoder(self, src: BinaryIO, num_codebooks: int, frames: int) -> SegmentDecoder:
        return _BitsDecoder(src, num_codebooks, self.bits)


LMWeights = str | os.PathLike[str] | None
Device = str | torch.device | None
CoderFactory = Callable[[str, int, LMWeights, Device], SymbolCoder]
"""Builds a coder from the model name, the code width in bits, an LM checkpoint (or None) and the
device its LM runs on (None: the CPU)."""


def _lm_coder(tag: str) -> CoderFactory:
    def build(model_name: str, bits: int, lm_weights: LMWeights, device: Device = None) -> SymbolCoder:
        try:
            from fastencodec.entropy.meta_lm import MetaLMCoder
            from fastencodec.entropy.portable import PortableCoder
        except ImportError as exc:  # numba missing
            raise ImportError(
                f"entropy mode {tag!r} needs the entropy extra (pip install 'fastencodec[entropy]'): {exc}"
            ) from None
        if tag == "lm":
            return MetaLMCoder.for_model(model_name, lm_weights, device)
        return PortableCoder.for_model(model_name, lm_weights)  # the CPU kernel: every device gives its bits

    return build


CODERS: dict[str, CoderFactory] = {
    "bits": lambda model_name, bits, lm_weights, device=None: BitsCoder(bits),
    "lm": _lm_coder("lm"),
    "lmp1": _lm_coder("lmp1"),
}
"""Coder factories by tag."""

CODER_VERSIONS: dict[str, int] = {"bits": 0, "lm": 0, "lmp1": 1}
"""ECDC version byte of the files each coder writes (Meta's reader accepts only version 0)."""

ENTROPY_NAMES: dict[str, str] = {"bits": "plain bit packing", "lm": "Meta's LM (lm)", "lmp1": "portable LM (lmp1)"}
"""How ``info`` names each coder."""


def coder_for(tag: str, model_name: str, bits: int, lm_weights: LMWeights = None, device: Device = None) -> SymbolCoder:
    """The symbol coder of ``tag`` for codes of ``model_name``.

    Args:
        tag: ``"bits"`` (plain packing), ``"lm"`` (Meta-compatible LM) or ``"lmp1"`` (portable LM).
        model_name: the codec model, e.g. ``"encodec_24khz"`` (the LM modes exist for the 24 and
            48 kHz models).
        bits: width of one code in bits.
        lm_weights: an LM checkpoint path (default: torch hub's cache, as Meta's package; downloaded
            from Meta's URL when missing).
        device: where Meta's LM runs in ``"lm"`` mode (default: the CPU); Meta's package runs it
            where the model runs, and its files decode only on the kind of device that coded
            them. ``"lmp1"`` gives the same bits everywhere and runs on the CPU.

    Raises:
        ValueError: an unknown tag, or no LM exists for ``model_name``.
        fastencodec.entropy.MissingLMWeights: the LM checkpoint is missing and cannot be downloaded.
        ImportError: an LM mode without the ``entropy`` extra (numba).
    """
    factory = CODERS.get(tag)
    if factory is None:
        raise ValueError(f"unknown entropy mode {tag!r} (one of {', '.join(CODERS)})")
    return factory(model_name, bits, lm_weights, device)


def _resolved(device: torch.device) -> torch.device:
    """``device`` with its index (``cuda`` is the current CUDA device), so equal devices share a key."""
    if device.type == "cuda" and device.index is None and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return device


class CoderCache:
    """Symbol coders built on demand (:func:`coder_for`) and kept: a command over many files loads
    each LM once. A coder codes one segment at a time, so a cache serves one thread."""

    def __init__(self) -> None:
        self._coders: dict[tuple, SymbolCoder] = {}

    def get(
        self, tag: str, model_name: str, bits: int, lm_weights: LMWeights = None, device: Device = None
    ) -> SymbolCoder:
        """The coder :func:`coder_for` builds for these arguments, built on first use."""
        weights = None if lm_weights is None else os.fspath(lm_weights)
        key = (tag, model_name, bits, weights, None if device is None else str(_resolved(torch.device(device))))
        if key not in self._coders:
            self._coders[key] = coder_for(tag, model_name, bits, lm_weights, device)
        return self._coders[key]
