"""The ``.ecdc`` container for EnCodec codes, compatible with Meta's ``encodec`` 0.1.1 CLI.

Byte layout (integers are big-endian)::

    b"ECDC" | version: uint8 | metadata size: uint32 | metadata: UTF-8 JSON object
    segment 0 | segment 1 | ...                      (see below)
    [CRC-32: uint32]                                 (only when the metadata has "crc")

Metadata keys read by Meta's tool: ``m`` (model name, e.g. ``"encodec_24khz"``), ``al``
(audio length in samples at the model's sample rate), ``nc`` (codebooks per frame) and
``lm`` (the symbol coder: ``false`` is plain bit packing, ``true`` Meta's language-model
entropy coding, a string another coder's tag; see :mod:`fastencodec.formats.coders`). The
version is 0 (Meta's), or 1 for files of the portable LM coder (``"lm": "lmp1"``), which Meta's
reader refuses rather than misreads. fastencodec also writes ``sr`` (sample rate of the original
input, Hz, at most ``MAX_SOURCE_SAMPLE_RATE``), ``ch`` (channel count of the original input),
``fp`` (the model's fingerprint, a digest of its codebooks, so files from another checkpoint of
the same name are recognised), ``ld`` (in ``lm`` files whose LM ran on a GPU: ``"cuda"``; such
files decode only there, and a reader refuses them elsewhere; CPU-coded ``lm`` files record
nothing, as Meta's) and ``crc`` (``"crc32+meta"``: a CRC-32 follows the last segment,
computed over every byte after the metadata and then over the metadata bytes themselves, so a
changed ``sr``, ``al`` or ``fp`` fails the check too; files of fastencodec 0.1.0 say ``"crc32"``,
a CRC-32 of the bytes after the metadata only, and still read). Meta's reader only looks up the
four keys it needs and never reads past the last segment, so it decodes these files unchanged.

Segments: a model without segmentation stores a single segment covering all ``al`` samples;
otherwise segment ``i`` covers samples ``[i * stride, min(i * stride + length, al))``. A
segment of ``n`` samples holds ``ceil(n * frame_rate / sample_rate)`` frames, computed with
exact integers (:class:`~fastencodec.engine.segments.SegmentLayout`). (Meta's reader computes
this in floating point and asks for one frame too
many for about 1 length in 6,000, e.g. 6,720 samples at 24 kHz; it then fails on its own
files, and on ours.) A segment is an optional float32 scale (models that normalize) and
then its codes as the file's symbol coder stores them (plain packing: frames in time order,
each frame's codebooks in order, each code ``bits`` wide, see :mod:`fastencodec.formats.bitpack`;
the last byte of a segment is zero-padded).
"""

from __future__ import annotations

import json
import math
import struct
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from fastencodec.engine.segments import SegmentLayout, check_bits
from fastencodec.formats.coders import (
    CODER_VERSIONS,
    BitsCoder,
    CoderCache,
    Device,
    LMWeights,
    SegmentEncoder,
    SymbolCoder,
    coder_for,
)

MAGIC = b"ECDC"
VERSION = 0
"""Meta's version byte; coders other than Meta's write theirs (``CODER_VERSIONS``)."""
MAX_METADATA_BYTES = 1 << 16
MAX_AUDIO_LENGTH = 1 << 40
MAX_CODEBOOKS = 32
MAX_SOURCE_SAMPLE_RATE = 768_000
"""Highest original sample rate (Hz) a header may record: ``decompress --rate`` writes at it."""

_PREFIX = struct.Struct("!4sBI")
_SCALE = struct.Struct("!f")
_CRC = struct.Struct("!I")
_CHECKSUM_NAME = "crc32+meta"
_PAYLOAD_CHECKSUM_NAME = "crc32"  # fastencodec 0.1.0: the payload only
_LENGTH_WIDTH = len(str(MAX_AUDIO_LENGTH))
_READ_BLOCK = 1 << 20


class EcdcError(ValueError):
    """A malformed, truncated or unsupported ``.ecdc`` stream."""


class DamagedSegmentError(EcdcError):
    """A segment's codes fail their own check (the portable coder's CRC); a coder raises it with the
    stream positioned after the segment, so the reader can carry on with the next one."""


class DamagedSegmentWarning(UserWarning):
    """A segment of an ``.ecdc`` file was damaged; its frames were replaced by silence."""


@dataclass(frozen=True)
class EcdcHeader:
    """Metadata of an ``.ecdc`` stream.

    Attributes:
        model_name: model that produced the codes, e.g. ``"encodec_48khz"``.
        audio_length: audio length in samples at the model's sample rate.
        num_codebooks: codebooks per frame (K).
        source_sample_rate: sample rate of the original input in Hz, if recorded.
        source_channels: channel count of the original input, if recorded.
        checksum: whether a CRC-32 trailer follows the last segment.
        fingerprint: digest of the model's codebooks (``fp``), if recorded.
        coder: tag of the symbol coder (``lm``: false is ``"bits"``, true is ``"lm"``, else the
            tag itself, e.g. ``"lmp1"``).
        lm_device: the kind of device, other than the CPU, the ``lm`` coder's LM ran on (``ld``:
            one of ``LM_DEVICES``, ``"cuda"``); its codes decode only there. None: the CPU.
    """

    model_name: str
    audio_length: int
    num_codebooks: int
    source_sample_rate: int | None = None
    source_channels: int | None = None
    checksum: bool = False
    fingerprint: str | None = None
    coder: str = "bits"
    lm_device: str | None = None


@dataclass(frozen=True)
class CodeChunk:
    """Consecutive frames of one segment.

    Attributes:
        segment: index of the segment the frames belong to.
        codes: int64 array of shape [K, n] (codebooks, frames).
        scale: the segment's scale, or None for models that do not normalize.
        first: whether these are the segment's first frames.
        last: whether these are the segment's last frames.
        damaged: the segment was damaged: ``codes`` are zeros standing in for its frames, and
            decoders make its samples silent.
    """

    segment: int
    codes: np.ndarray
    scale: float | None
    first: bool
    last: bool
    damaged: bool = False


class EcdcWriter:
    """Writes an ``.ecdc`` stream segment by segment, frame chunk by frame chunk.

    The metadata is written at construction. When ``audio_length`` is not known yet (e.g.
    audio arriving on stdin), pass None: the length field is then written as spaces-padded
    digits of fixed width, and :meth:`finish` seeks back to fill it in, so ``fileobj`` must
    be seekable (write to a temporary file, then copy it to a pipe if needed). The writer
    never closes ``fileobj``.

    Args:
        fileobj: binary file object to write to.
        model_name: model name stored as ``m``, e.g. ``"encodec_24khz"``.
        num_codebooks: codebooks per frame (K).
        bits_per_codebook: width of one code in bits.
        normalize: whether every segment carries a scale (the model normalizes).
        audio_length: audio length in samples at the model's sample rate, or None.
        source_sample_rate: sample rate of the original input in Hz, or None.
        source_channels: channel count of the original input, or None.
        checksum: append a CRC-32 trailer (``"crc32+meta"``: the payload, then the metadata).
        fingerprint: the model's fingerprint (header key ``fp``), or None.
        coder: the symbol coder (default: plain bit packing, ``BitsCoder``).

    Raises:
        ValueError: a header field out of range, or an unknown ``audio_length`` with a
            ``fileobj`` that cannot seek.
    """

    def __init__(
        self,
        fileobj: BinaryIO,
        *,
        model_name: str,
        num_codebooks: int,
        bits_per_codebook: int,
        normalize: bool,
        audio_length: int | None = None,
        source_sample_rate: int | None = None,
        source_channels: int | None = None,
        checksum: bool = True,
        fingerprint: str | None = None,
        coder: SymbolCoder | None = None,
    ) -> None:
        check_bits(bits_per_codebook)
        coder = coder or BitsCoder(bits_per_codebook)
        placeholder_length = 1 if audio_length is None else audio_length
        header = EcdcHeader(
            model_name,
            placeholder_length,
            num_codebooks,
            source_sample_rate,
            source_channels,
            checksum,
            fingerprint,
            coder.tag,
            _recorded_device(coder),
        )
        _validate_header(header, MAX_CODEBOOKS, ValueError)
        self._fo = fileobj
        self._header = header
        self._length_known = audio_length is not None
        self._bits = bits_per_codebook
        self._normalize = normalize
        self._coder = coder
        self._sink = _Checked(fileobj)
        self._segment: SegmentEncoder | None = None
        self._finished = False
        metadata, length_offset = _encode_metadata(header, pad_length=not self._length_known)
        self._metadata = bytearray(metadata)
        self._length_offset = length_offset
        self._length_pos = None
        if not self._length_known:
            if not fileobj.seekable():
                raise ValueError("an unknown audio_length needs a seekable file object")
            self._length_pos = fileobj.tell() + _PREFIX.size + length_offset
        fileobj.write(_PREFIX.pack(MAGIC, CODER_VERSIONS.get(coder.tag, VERSION), len(metadata)))
        fileobj.write(metadata)

    def begin_segment(self, scale: float | None = None) -> None:
        """Start a segment.

        Args:
            scale: the segment's volume (finite, positive), given exactly when the model normalizes.

        Raises:
            ValueError: the writer is finished, the previous segment is open, or a missing,
                unexpected or invalid scale.
        """
        self._check_open()
        if self._segment is not None:
            raise ValueError("the previous segment was not ended")
        if (scale is not None) != self._normalize:
            raise ValueError("scale must be given exactly when the model normalizes")
        if scale is not None:
            if not (math.isfinite(scale) and scale > 0):
                raise ValueError(f"scale must be finite and positive, got {scale}")
            self._sink.write(_SCALE.pack(scale))
        self._segment = self._coder.encoder(self._sink, self._header.num_codebooks)

    def write_frames(self, codes: np.ndarray) -> None:
        """Append frames to the current segment.

        Args:
            codes: integer codes ``[K, frames]`` in ``0 .. 2**bits_per_codebook - 1``.

        Raises:
            ValueError: no open segment, or codes of another shape, dtype or range.
        """
        if self._segment is None:
            raise ValueError("write_frames called outside a segment")
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.shape[0] != self._header.num_codebooks:
            raise ValueError(f"codes must have shape [{self._header.num_codebooks}, frames], got {codes.shape}")
        if codes.size and not np.issubdtype(codes.dtype, np.integer):
            raise ValueError(f"codes must be integers, got {codes.dtype}")
        if codes.size and (codes.min() < 0 or codes.max() >= 1 << self._bits):
            raise ValueError(f"codes must lie in [0, {1 << self._bits})")
        self._segment.push(codes.astype(np.int64, copy=False))

    def end_segment(self) -> None:
        """End the current segment, flushing its partial last byte.

        Raises:
            ValueError: no open segment.
        """
        if self._segment is None:
            raise ValueError("end_segment called outside a segment")
        self._segment.finish()
        self._segment = None

    def write_segment(self, codes: np.ndarray, scale: float | None = None) -> None:
        """Write a whole segment (:meth:`begin_segment`, :meth:`write_frames`, :meth:`end_segment`).

        Args:
            codes: integer codes ``[K, frames]``.
            scale: the segment's volume, or None for models that do not normalize.
        """
        self.begin_segment(scale)
        self.write_frames(codes)
        self.end_segment()

    def finish(self, audio_length: int | None = None) -> None:
        """End the stream: write the checksum trailer and, if it was unknown, the audio length.

        Args:
            audio_length: samples at the model's sample rate; required when it was not given at
                construction, else None or the same value.

        Raises:
            ValueError: a segment is still open, the writer is finished, or a missing or
                different length.
        """
        self._check_open()
        if self._segment is not None:
            raise ValueError("the last segment was not ended")
        if self._length_known:
            if audio_length not in (None, self._header.audio_length):
                raise ValueError("audio_length differs from the one given at construction")
        elif audio_length is None or not 0 < audio_length <= MAX_AUDIO_LENGTH:
            raise ValueError("finish needs the audio length (positive samples) of this stream")
        if not self._length_known:
            field = str(audio_length).ljust(_LENGTH_WIDTH).encode("ascii")
            self._metadata[self._length_offset : self._length_offset + _LENGTH_WIDTH] = field
        if self._header.checksum:
            self._fo.write(_CRC.pack(zlib.crc32(self._metadata, self._sink.crc)))
        if self._length_pos is not None:
            end = self._fo.tell()
            self._fo.seek(self._length_pos)
            self._fo.write(self._metadata[self._length_offset : self._length_offset + _LENGTH_WIDTH])
            self._fo.seek(end)
        self._fo.flush()
        self._finished = True

    def _check_open(self) -> None:
        if self._finished:
            raise ValueError("the writer is finished")


class EcdcReader:
    """Reads an ``.ecdc`` stream: the metadata at construction, then the codes on demand.

    Args:
        fileobj: binary file object positioned at the start of the stream.
        max_codebooks: largest codebook count accepted.
        coder: the symbol coder of the codes (default: the one the header names, built when
            the codes are read; ``coder_for``). Must have the header's tag.
        lm_weights: the LM checkpoint of LM-coded files (default: torch hub's cache).
        coders: where the header's coder is built and kept (reading many files loads each LM
            once); default: built for this reader alone.

    Raises:
        EcdcError: the metadata is malformed or unsupported.
    """

    def __init__(
        self,
        fileobj: BinaryIO,
        *,
        max_codebooks: int = MAX_CODEBOOKS,
        coder: SymbolCoder | None = None,
        lm_weights: LMWeights = None,
        coders: CoderCache | None = None,
    ) -> None:
        self._coder = coder
        self._lm_weights = lm_weights
        self._coders = coders
        self.damaged: list[int] = []
        """Indices of the damaged segments met so far (see :meth:`chunks`)."""
        self._fo = fileobj
        self._source = _Checked(fileobj)
        self._consumed = False
        self.header, self._metadata, self._covers_metadata = _read_header(fileobj, max_codebooks)

    def chunks(self, layout: SegmentLayout, max_frames: int = 4096, device: Device = None) -> Iterator[CodeChunk]:
        """Yield the codes in chunks of at most ``max_frames`` frames (rounded down to a multiple of 8,
        at least 8).

        Memory stays bounded by the chunk size, whatever the file claims. The checksum and
        the end of the stream are checked after the last chunk, so a corrupt file may
        raise EcdcError after some chunks were yielded.

        A segment that fails its own check (``DamagedSegmentError``: a portable ``lmp1``
        segment whose CRC fails) does not stop the reading: it is reported with a
        ``DamagedSegmentWarning``, its chunks come with ``damaged=True`` and zero codes, its
        index is added to ``damaged``, and the reader continues at the next segment. The
        file's CRC trailer, which then cannot match, is not checked.

        Args:
            layout: the model's segment layout (``SegmentLayout.of(config)``).
            max_frames: most frames per chunk.
            device: the model's device. The LM of an ``lm`` file runs where the file was coded:
                on the CPU unless its header records a GPU (``ld``), and then on ``device`` if it is
                a GPU of that kind (otherwise the file is refused).

        Yields:
            One :class:`CodeChunk` per chunk, in file order.

        Raises:
            EcdcError: truncated or corrupt codes, a bad scale, a checksum mismatch or trailing data;
                an ``lm`` file coded on another kind of device than its coder's.
            RuntimeError: the codes were already read (a reader reads them once).
        """
        if self._consumed:
            raise RuntimeError("the codes of an EcdcReader can only be read once")
        self._consumed = True
        num_codebooks = self.header.num_codebooks
        coder = self._symbol_coder(layout.bits_per_codebook, device)
        step = max(8, max_frames - max_frames % 8)
        for index, frames in enumerate(layout.frame_counts(self.header.audio_length)):
            scale = self._read_scale() if layout.normalize else None
            try:
                segment = coder.decoder(self._source, num_codebooks, frames)
            except DamagedSegmentError as exc:
                self.damaged.append(index)
                offset, samples = layout.span(index, self.header.audio_length)
                warnings.warn(
                    f"segment {index} (samples {offset} to {offset + samples}) is damaged and decodes as silence: "
                    f"{exc}",
                    DamagedSegmentWarning,
                    stacklevel=2,
                )
                segment = _Zeros(num_codebooks)
            for start in range(0, frames, step):
                count = min(step, frames - start)
                yield CodeChunk(
                    segment=index,
                    codes=segment.read(count),
                    scale=scale,
                    first=start == 0,
                    last=start + count == frames,
                    damaged=bool(self.damaged) and self.damaged[-1] == index,
                )
        self._check_end()

    def segments(self, layout: SegmentLayout, device: Device = None) -> Iterator[tuple[np.ndarray, float | None]]:
        """Yield each segment whole.

        For a model without segmentation the single segment is the whole file; prefer
        :meth:`chunks` for long files of such models.

        Args:
            layout: the model's segment layout.
            device: as for :meth:`chunks`.

        Yields:
            ``(codes, scale)``: int64 codes ``[K, frames]`` and the scale, or None.

        Raises:
            EcdcError: as :meth:`chunks`.
        """
        parts: list[np.ndarray] = []
        for chunk in self.chunks(layout, device=device):
            parts.append(chunk.codes)
            if chunk.last:
                yield np.concatenate(parts, axis=1), chunk.scale
                parts = []

    def _symbol_coder(self, bits: int, device: Device) -> SymbolCoder:
        tag = self.header.coder
        if self._coder is not None:
            if self._coder.tag != tag:
                raise EcdcError(f"the file's codes use coder {tag!r}, not the {self._coder.tag!r} given")
            coder = self._coder
        elif tag not in CODER_VERSIONS:
            raise EcdcError(f"the file uses coder {tag!r}, which is not available here")
        else:
            build = coder_for if self._coders is None else self._coders.get
            coder = build(tag, self.header.model_name, bits, self._lm_weights, _lm_device(self.header, device))
        coded_on, here = self.header.lm_device, getattr(coder, "device_type", None)
        if coded_on is not None and here is not None and coded_on != here:
            raise EcdcError(
                f"the file was coded with Meta's LM on {coded_on}, "
                f"and Meta's lm mode decodes only on the kind of device that coded it; decode it with a model "
                f"on {coded_on} (device={coded_on!r}, --device {coded_on}), not on {here} (the portable lmp1 mode "
                "decodes anywhere)"
            )
        return coder

    def _read_scale(self) -> float:
        (scale,) = _SCALE.unpack(self._source.read(_SCALE.size, "segment scale"))
        if not (math.isfinite(scale) and scale > 0):
            raise EcdcError(f"invalid segment scale {scale}")
        return scale

    def _check_end(self) -> None:
        if self.header.checksum:
            if self.damaged:
                _read_exact(self._fo, _CRC.size, "checksum")
                if self._fo.read(1):
                    raise EcdcError("trailing data after the last segment")
                return
            (stored,) = _CRC.unpack(_read_exact(self._fo, _CRC.size, "checksum"))
            payload = self._source.crc
            computed = zlib.crc32(self._metadata, payload) if self._covers_metadata else payload
            if stored != computed:
                raise EcdcError(f"checksum mismatch: stored {stored:08x}, computed {computed:08x}")
        if self._fo.read(1):
            raise EcdcError("trailing data after the last segment")


class _Zeros:
    """Stands in for the decoder of a damaged segment: zero codes."""

    def __init__(self, num_codebooks: int) -> None:
        self._num_codebooks = num_codebooks

    def read(self, frames: int) -> np.ndarray:
        return np.zeros((self._num_codebooks, frames), dtype=np.int64)


LM_DEVICES = ("cuda",)
"""Device kinds an ``lm`` file's header may record as ``ld`` (where its LM ran, if not the CPU)."""


def _lm_device(header: EcdcHeader, device: Device) -> Device:
    """Where the LM of ``header``'s file runs when read with a model on ``device``: where the file
    was coded. Files without ``ld`` (Meta's, and ours coded on the CPU) were coded on the CPU and
    decode there whatever ``device`` the model uses; a file coded on a GPU decodes on ``device``
    if it is of that kind (else on the CPU, which the reader then refuses)."""
    if device is None or header.lm_device is None:
        return None
    kind = getattr(device, "type", None) or str(device).split(":")[0]  # a torch.device or its name
    return device if kind == header.lm_device else None


def _recorded_device(coder: SymbolCoder) -> str | None:
    """What a file of ``coder`` records as ``ld``: the kind of device its codes decode only on, other
    than the CPU (Meta's files record nothing: CPU-coded ``lm`` files stay Meta's byte for byte)."""
    kind = getattr(coder, "device_type", None)
    return None if kind == "cpu" else kind


def _read_header(fileobj: BinaryIO, max_codebooks: int) -> tuple[EcdcHeader, bytes, bool]:
    """The header, the raw metadata bytes, and whether the checksum covers them."""
    magic, version, size = _PREFIX.unpack(_read_exact(fileobj, _PREFIX.size, "header"))
    if magic != MAGIC:
        raise EcdcError(f"not an ECDC stream (magic {magic!r})")
    if version not in CODER_VERSIONS.values():
        raise EcdcError(f"unsupported ECDC version {version}")
    if not 0 < size <= MAX_METADATA_BYTES:
        raise EcdcError(f"metadata size {size} is out of range")
    raw = _read_exact(fileobj, size, "metadata")
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise EcdcError(f"corrupt metadata JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise EcdcError("metadata is not a JSON object")
    missing = [key for key in ("m", "al", "nc", "lm") if key not in meta]
    if missing:
        raise EcdcError(f"metadata lacks {', '.join(missing)}")
    lm = meta["lm"]
    if not isinstance(lm, (bool, str)) or (isinstance(lm, str) and not 0 < len(lm) <= 32):
        raise EcdcError("metadata lm must be a boolean or a coder tag")
    coder = "lm" if lm is True else "bits" if lm is False else lm
    if CODER_VERSIONS.get(coder, VERSION) != version:
        raise EcdcError(f"metadata lm {lm!r} is not a symbol coder of ECDC version {version}")
    fingerprint = meta.get("fp")
    if fingerprint is not None and not (isinstance(fingerprint, str) and 0 < len(fingerprint) <= 64):
        raise EcdcError(f"metadata fp must be a short string, got {fingerprint!r}")
    lm_device = meta.get("ld")
    if lm_device is not None and (lm_device not in LM_DEVICES or coder != "lm"):
        raise EcdcError(f"metadata ld must be one of {LM_DEVICES} in an lm file, got {lm_device!r} in a {coder} file")
    checksum = meta.get("crc")
    if checksum not in (None, _CHECKSUM_NAME, _PAYLOAD_CHECKSUM_NAME):
        raise EcdcError(f"unsupported checksum {checksum!r}")
    header = EcdcHeader(
        meta["m"], meta["al"], meta["nc"], meta.get("sr"), meta.get("ch"), checksum is not None, fingerprint, coder,
        lm_device,
    )
    _validate_header(header, max_codebooks, EcdcError)
    return header, raw, checksum == _CHECKSUM_NAME


def _validate_header(header: EcdcHeader, max_codebooks: int, error: type[ValueError]) -> None:
    name = header.model_name
    if not isinstance(name, str) or not 0 < len(name) <= 256 or not (name.isascii() and name.isprintable()):
        raise error(f"model name must be a non-empty printable ASCII string, got {name!r}")
    checks = (
        ("audio length", header.audio_length, MAX_AUDIO_LENGTH, False),
        ("codebook count", header.num_codebooks, max_codebooks, False),
        ("source sample rate", header.source_sample_rate, MAX_SOURCE_SAMPLE_RATE, True),
        ("source channel count", header.source_channels, 1 << 16, True),
    )
    for name, value, limit, optional in checks:
        if value is None and optional:
            continue
        if type(value) is not int or not 0 < value <= limit:
            raise error(f"{name} must be an integer in [1, {limit}], got {value!r}")


def _encode_metadata(header: EcdcHeader, pad_length: bool) -> tuple[bytes, int]:
    """Return the JSON bytes (as ``json.dumps`` would write them) and the offset of ``al``."""
    length = str(header.audio_length)
    fields = [
        ("m", json.dumps(header.model_name)),
        ("al", length.ljust(_LENGTH_WIDTH) if pad_length else length),
        ("nc", str(header.num_codebooks)),
        ("lm", {"bits": "false", "lm": "true"}.get(header.coder) or json.dumps(header.coder)),
    ]
    if header.source_sample_rate is not None:
        fields.append(("sr", str(header.source_sample_rate)))
    if header.source_channels is not None:
        fields.append(("ch", str(header.source_channels)))
    if header.checksum:
        fields.append(("crc", json.dumps(_CHECKSUM_NAME)))
    if header.fingerprint is not None:
        fields.append(("fp", json.dumps(header.fingerprint)))
    if header.lm_device is not None:
        fields.append(("ld", json.dumps(header.lm_device)))
    text = "{" + ", ".join(f'"{key}": {value}' for key, value in fields) + "}"
    return text.encode("ascii"), text.index('"al": ') + len('"al": ')


class _Checked:
    """A binary stream seen through a running CRC-32: writes go through, reads are exact."""

    def __init__(self, fileobj: BinaryIO) -> None:
        self._fo = fileobj
        self.crc = 0

    def write(self, data: bytes) -> None:
        self.crc = zlib.crc32(data, self.crc)
        self._fo.write(data)

    def read(self, size: int, what: str = "codes") -> bytes:
        data = _read_exact(self._fo, size, what)
        self.crc = zlib.crc32(data, self.crc)
        return data


def _read_exact(fileobj: BinaryIO, size: int, what: str) -> bytes:
    parts = []
    remaining = size
    while remaining:
        piece = fileobj.read(min(remaining, _READ_BLOCK))
        if not piece:
            raise EcdcError(f"truncated stream: {what} has {size - remaining} of {size} bytes")
        parts.append(piece)
        remaining -= len(piece)
    return b"".join(parts)
