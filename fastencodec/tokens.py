"""``Tokens``: the codes returned by ``EnCodec.encode``, with what decoding them needs."""

from __future__ import annotations

import json
import operator
import os
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from fastencodec.engine.segments import SegmentLayout

PAD = -1
"""Code value of the frames past an item's end in a batch of unequal lengths."""

_FORMAT = "fastencodec.tokens/1"


class Tokens:
    """Integer codes ``[batch, codebooks, frames]`` (or one item's ``[codebooks, frames]``) plus
    their decoding context. Immutable: built once, validated, never changed in place. They keep
    a private copy of the codes and scales given, so the caller's arrays stay the caller's:
    NumPy codes and scales are read-only, and a torch tensor (which cannot be made read-only)
    written into in place through ``codes`` or ``scales`` makes every later use of these Tokens
    raise ValueError instead of decoding changed codes (clone it to edit it).

    A ``Tokens`` acts as its ``codes`` array: ``shape``, ``len``, ``numpy.asarray`` and torch
    functions see the codes. Indexing items (``tokens[0]``, ``tokens[1:3]``), selecting codebooks
    (``tokens[:, :2]``), slicing frames (``tokens[..., 75:150]``) and concatenating
    (``np.concatenate``/``torch.cat`` of Tokens, along time or batch) return Tokens that keep
    lengths, scales and the model, so they still decode. Any other indexing returns plain codes.

    Args:
        codes: int64 NumPy array or torch tensor; frames past an item's end hold ``PAD`` (-1).
        lengths: each item's length in samples.
        scales: ``[batch, segments]`` float32 per-segment volumes (normalising models, 48 kHz),
            entries past an item's segments 0; else None.
        model_id: the model that made them (``name:fingerprint``); another model refuses them.
        as_list: whether the audio came as a list (``decode`` then returns a list).
        pieces: per item, the lengths in samples of the independently encoded signals it is a
            time concatenation of (default: one piece, the item's length).
        layout: the model's segment layout; when given, frame counts are checked against it.
        precision: the precision mode of the encoder that made them (``"exact"``, ``"tf32"``,
            ``"fp16"``, ``"bf16"``; ``"mixed"`` for a concatenation of several modes). Any mode decodes them.

    Attributes:
        frames: each item's own frames (before its padding), computed once.

    Raises:
        ValueError: inconsistent shapes, lengths, pieces or scales.
    """

    __slots__ = (
        "_codes", "lengths", "_scales", "model_id", "as_list", "pieces", "layout", "frames", "precision", "_versions"
    )

    def __init__(
        self,
        codes: np.ndarray | torch.Tensor,
        lengths: Sequence[int],
        scales: np.ndarray | torch.Tensor | None,
        model_id: str,
        as_list: bool = False,
        *,
        pieces: Sequence[Sequence[int]] | None = None,
        layout: SegmentLayout | None = None,
        precision: str = "exact",
    ) -> None:
        if not isinstance(codes, (np.ndarray, torch.Tensor)) or codes.ndim not in (2, 3):
            raise ValueError("Tokens codes must be a 2-D or 3-D NumPy array or torch tensor")
        codes, scales = _owned(codes), None if scales is None else _owned(scales)
        batch = 1 if codes.ndim == 2 else codes.shape[0]
        lengths = tuple(int(n) for n in lengths)
        pieces = tuple((n,) for n in lengths) if pieces is None else tuple(tuple(int(n) for n in p) for p in pieces)
        if len(lengths) != batch or len(pieces) != batch:
            raise ValueError(f"Tokens of {batch} items need {batch} lengths and pieces, got {len(lengths)}")
        for i, (n, parts) in enumerate(zip(lengths, pieces)):
            if n <= 0 or not parts or any(p <= 0 for p in parts) or sum(parts) != n:
                raise ValueError(f"Tokens item {i}: length {n} and pieces {parts} are not positive and consistent")
        if scales is not None and (scales.ndim != 2 or scales.shape[0] != batch):
            raise ValueError(f"Tokens scales must be [batch={batch}, segments], got {tuple(scales.shape)}")
        for name, value in (
            ("_codes", codes),
            ("lengths", lengths),
            ("_scales", scales),
            ("_versions", _versions(codes, scales)),
            ("model_id", str(model_id)),
            ("as_list", bool(as_list)),
            ("pieces", pieces),
            ("layout", layout),
            ("precision", str(precision)),
        ):
            object.__setattr__(self, name, value)
        valid = _cpu((codes >= 0).all(-2)).reshape(batch, -1)
        object.__setattr__(self, "frames", tuple(int(n) for n in valid.sum(axis=1)))
        if layout is not None:
            self._check_frames()

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Tokens are immutable")

    @property
    def codes(self) -> np.ndarray | torch.Tensor:
        """The codes (read-only for NumPy; for torch, do not write into them)."""
        self._check_unchanged()
        return self._codes

    @property
    def scales(self) -> np.ndarray | torch.Tensor | None:
        """The per-segment scales ``[batch, segments]`` (float32), or None."""
        self._check_unchanged()
        return self._scales

    def _check_unchanged(self) -> None:
        if _versions(self._codes, self._scales) != self._versions:
            raise ValueError("these Tokens' torch codes or scales were written into in place; Tokens are immutable")

    def _check_frames(self) -> None:
        """Each item's non-padding frames are leading and as many as its pieces need."""
        assert self.layout is not None
        frames = self.frames
        width = self.codes.shape[-1]
        for i, parts in enumerate(self.pieces):
            need = sum(self.layout.total_frames(p) for p in parts)
            if frames[i] != need or need > width:
                raise ValueError(
                    f"Tokens item {i} has {frames[i]} frames; its length of {self.lengths[i]} needs {need}"
                )

    # -- acting as the code array ---------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        """The codes' shape: ``(batch, codebooks, frames)`` or ``(codebooks, frames)``."""
        return tuple(self.codes.shape)

    @property
    def ndim(self) -> int:
        """The codes' rank (3, or 2 for one item)."""
        return self.codes.ndim

    @property
    def dtype(self) -> Any:
        """The codes' dtype (NumPy or torch)."""
        return self.codes.dtype

    @property
    def device(self) -> torch.device:
        """Where the codes are (``cpu`` for NumPy codes)."""
        return self.codes.device if isinstance(self.codes, torch.Tensor) else torch.device("cpu")

    def __len__(self) -> int:
        return len(self.codes)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        return np.asarray(self.numpy(), dtype=dtype)

    def numpy(self) -> np.ndarray:
        """The codes as a read-only NumPy array."""
        if isinstance(self.codes, np.ndarray):
            return self.codes
        view = self.codes.cpu().numpy().view()
        view.flags.writeable = False  # a CPU tensor's numpy() shares its memory
        return view

    @property
    def mask(self) -> np.ndarray | torch.Tensor:
        """Padding mask ``[batch, frames]`` (``[frames]`` for one item): True on each item's own frames."""
        return (self.codes >= 0).all(-2) if isinstance(self.codes, torch.Tensor) else (self.codes >= 0).all(axis=-2)

    def _batched(self) -> Tokens:
        """These tokens with a batch axis (one item's ``[K, F]`` as ``[1, K, F]``)."""
        if self.codes.ndim == 3:
            return self
        return self._with(self.codes[None], self.lengths, self.scales, self.pieces)

    def _with(self, codes: Any, lengths: Any, scales: Any, pieces: Any) -> Tokens:
        return Tokens(
            codes,
            lengths,
            scales,
            self.model_id,
            self.as_list,
            pieces=pieces,
            layout=self.layout,
            precision=self.precision,
        )

    # -- indexing ---------------------------------------------------------------------------
    def __getitem__(self, index: Any) -> Any:
        parts = _normalise_index(index, self.codes.ndim)
        if parts is None:
            return self.codes[index]
        if self.codes.ndim == 2:
            return self._batched()[(slice(None), *parts)][0] if parts else self
        items, books, frames = parts
        if isinstance(items, int):
            if not -len(self.lengths) <= items < len(self.lengths):
                raise IndexError(f"item {items} is out of range for Tokens of {len(self.lengths)} items")
            picked = self._batched()._pick(slice(items, items + 1 if items != -1 else None), books, frames)
            return picked._with(picked.codes[0], picked.lengths, picked.scales, picked.pieces)
        return self._pick(items, books, frames)

    def _pick(self, items: slice, books: slice, frames: slice) -> Tokens:
        rows = range(len(self.lengths))[items]
        codes = self.codes[items, books]
        lengths = [self.lengths[i] for i in rows]
        pieces = [self.pieces[i] for i in rows]
        scales = None if self.scales is None else self.scales[items]
        if codes.shape[0] == 0 or codes.shape[1] == 0:
            raise ValueError("indexing Tokens selected no items or no codebooks")
        if frames == slice(None):
            return self._with(codes, lengths, scales, pieces)
        return self._slice_frames(codes, lengths, pieces, scales, frames)

    def _slice_frames(self, codes: Any, lengths: list, pieces: list, scales: Any, frames: slice) -> Tokens:
        """Frames ``[start, stop)`` of each item. A segmenting model (48 kHz) codes overlapping segments, so
        its slices start on a segment boundary and run to the item's end (any other piece of a signal
        is coded by the reference with other segments)."""
        if self.layout is None:
            raise ValueError("slicing frames needs Tokens made by EnCodec.encode (they know the model's layout)")
        start, stop, step = frames.indices(codes.shape[-1])
        if step != 1:
            raise ValueError("Tokens frame slices must be contiguous (step 1)")
        layout, out_lengths, out_scales = self.layout, [], []
        for i, (n, parts) in enumerate(zip(lengths, pieces)):
            if len(parts) != 1:
                raise ValueError(f"Tokens item {i} is a concatenation; slice its pieces before concatenating")
            bounds, offsets = [0], []
            for offset, samples in layout.spans(n):
                offsets.append(offset)
                bounds.append(bounds[-1] + layout.frames(samples))
            end = min(stop, bounds[-1])
            if end <= start:
                raise ValueError(f"frames {start}:{stop} leave Tokens item {i} ({bounds[-1]} frames) empty")
            if not layout.segmented:
                hop = layout.hop_length or 1
                out_lengths.append(min(end * hop, n) - start * hop)
                continue
            if start not in bounds or end != bounds[-1]:
                raise ValueError(
                    f"{self.model_id} codes overlapping segments: a frame slice must start on a segment boundary "
                    f"(frames {bounds[:4]}...) and run to the item's end ({bounds[-1]}), got {start}:{stop}"
                )
            first = bounds.index(start)
            out_lengths.append(n - offsets[first])
            if scales is not None:
                out_scales.append((first, len(offsets)))
        if scales is not None:
            rows = [_pad_row(scales[i, a:b], max(b - a for a, b in out_scales)) for i, (a, b) in enumerate(out_scales)]
            scales = _stack(rows, scales)
        return self._with(codes[..., start:stop], out_lengths, scales, [(n,) for n in out_lengths])

    # -- torch and NumPy functions ----------------------------------------------------------
    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if (
            func in (torch.cat, torch.concatenate, torch.concat)
            and args
            and all(isinstance(t, Tokens) for t in args[0])
        ):
            return concatenate(list(args[0]), kwargs.get("dim", kwargs.get("axis", args[1] if len(args) > 1 else 0)))
        return func(*_unwrap(args, torch.as_tensor), **{k: _unwrap(v, torch.as_tensor) for k, v in kwargs.items()})

    def __array_function__(self, func: Any, types: Any, args: tuple, kwargs: dict) -> Any:
        if func is np.concatenate and args and all(isinstance(t, Tokens) for t in args[0]):
            return concatenate(list(args[0]), kwargs.get("axis", args[1] if len(args) > 1 else 0))
        return func(*_unwrap(args, np.asarray), **{k: _unwrap(v, np.asarray) for k, v in kwargs.items()})

    # -- devices, equality, files -----------------------------------------------------------
    def to(self, device: str | torch.device) -> Tokens:
        """These tokens with codes (and scales) as torch tensors on ``device``.

        Args:
            device: a torch device.

        Returns:
            New Tokens with the same context (lengths, model, precision).
        """
        codes, scales = _tensor(self.codes).to(device), None if self.scales is None else _tensor(self.scales).to(device)
        return self._with(codes, self.lengths, scales, self.pieces)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Tokens):
            return NotImplemented
        same_scales = (self.scales is None and other.scales is None) or (
            self.scales is not None
            and other.scales is not None
            and np.array_equal(
                np.asarray(self.scales.cpu() if isinstance(self.scales, torch.Tensor) else self.scales),
                np.asarray(other.scales.cpu() if isinstance(other.scales, torch.Tensor) else other.scales),
            )
        )
        return (
            self.model_id == other.model_id
            and self.precision == other.precision
            and self.lengths == other.lengths
            and self.pieces == other.pieces
            and self.shape == other.shape
            and np.array_equal(self.numpy(), other.numpy())
            and same_scales
        )

    __hash__ = None  # type: ignore[assignment]

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write to a ``.safetensors`` file, atomically (no partial file; an existing one survives a failure).

        Codes and scales are stored as tensors, the context (lengths, pieces, model, precision,
        layout) as JSON metadata; nothing is pickled.

        Args:
            path: the file to write (replaced if it exists).

        Raises:
            AudioFileError: the file cannot be written.
        """
        from safetensors.numpy import save

        from fastencodec.io.atomic import AtomicOutput

        tensors = {"codes": np.ascontiguousarray(self.numpy())}
        if self.scales is not None:
            tensors["scales"] = np.ascontiguousarray(np.asarray(_cpu(self.scales)), dtype=np.float32)
        meta = {
            "format": _FORMAT,
            "lengths": self.lengths,
            "pieces": self.pieces,
            "model_id": self.model_id,
            "as_list": self.as_list,
            "precision": self.precision,
            "layout": None if self.layout is None else asdict(self.layout),
        }
        data = save(tensors, metadata={"tokens": json.dumps(meta)})
        with AtomicOutput(path) as out:  # no partial file, and an existing one survives a failure
            out.file.write(data)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Tokens:
        """Read tokens written by :meth:`save`.

        Args:
            path: a file :meth:`save` wrote.

        Returns:
            The Tokens, with NumPy codes (and scales).

        Raises:
            ValueError: not a tokens file, or inconsistent contents.
        """
        from safetensors import safe_open

        try:
            with safe_open(os.fspath(path), "np") as f:
                meta = json.loads((f.metadata() or {}).get("tokens", "null"))
                tensors = {key: f.get_tensor(key) for key in f.keys()}
        except Exception as exc:  # safetensors raises its own error type for corrupt files
            raise ValueError(f"{path}: not a tokens file ({exc})") from None
        if not isinstance(meta, dict) or meta.get("format") != _FORMAT or "codes" not in tensors:
            raise ValueError(f"{path}: not a fastencodec tokens file")
        layout = meta.get("layout")
        try:
            return cls(
                tensors["codes"],
                meta["lengths"],
                tensors.get("scales"),
                meta["model_id"],
                bool(meta.get("as_list")),
                pieces=meta["pieces"],
                layout=None if layout is None else SegmentLayout(**layout),
                precision=str(meta.get("precision", "exact")),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{path}: a tokens file with missing or malformed metadata ({exc!r})") from None

    def check_model(self, model_id: str) -> None:
        """Refuse a model other than the one that made these tokens.

        Args:
            model_id: ``name:fingerprint`` of a model (``EnCodec.model_id``).

        Raises:
            ValueError: these tokens come from another model.
        """
        if self.model_id != model_id:
            raise ValueError(f"tokens come from another model ({self.model_id}); this is {model_id}")

    def __repr__(self) -> str:
        kind = "torch" if isinstance(self.codes, torch.Tensor) else "numpy"
        where = f"model={self.model_id}, precision={self.precision}"
        return f"Tokens(shape={self.shape}, {kind}, lengths={self.lengths}, {where})"


def concatenate(tokens: list[Tokens], axis: int = 0) -> Tokens:
    """Join Tokens of one model along time (``axis=-1``) or batch (``axis=0``).

    Along time, each item becomes the concatenation of its pieces (decoded piece by piece for
    segmenting models, so every piece keeps its own segments and scales); along batch, items
    are padded with ``PAD``. Tokens of several precision modes join as ``precision="mixed"``.
    ``np.concatenate`` and ``torch.cat`` of Tokens call this.

    Args:
        tokens: Tokens of one model with one codebook count (and, along time, one batch size).
        axis: ``-1`` (or the last axis) for time, ``0`` for batch.

    Returns:
        The joined Tokens: torch on the first one's device if its codes are torch, else NumPy.

    Raises:
        ValueError: another model, another codebook count, or another axis.
    """
    if not tokens:
        raise ValueError("nothing to concatenate")
    first = tokens[0]
    batched = [t._batched() for t in tokens]
    for t in batched:
        t.check_model(first.model_id)
        if t.shape[1] != batched[0].shape[1]:
            raise ValueError(f"Tokens with {t.shape[1]} and {batched[0].shape[1]} codebooks cannot be joined")
    axis = axis % first.ndim
    torch_out = isinstance(first.codes, torch.Tensor)
    if axis == first.ndim - 1:  # time
        count = len(batched[0].lengths)
        if any(len(t.lengths) != count for t in batched):
            raise ValueError("Tokens joined along time need the same batch size")
        rows, scale_rows, lengths, pieces = [], [], [], []
        for i in range(count):
            rows.append(np.concatenate([_cpu(t.codes[i])[:, : t.frames[i]] for t in batched], axis=1))
            if first.scales is not None:
                scale_rows.append(np.concatenate([_item_scales(t, i) for t in batched]))
            lengths.append(sum(t.lengths[i] for t in batched))
            pieces.append(sum((t.pieces[i] for t in batched), ()))
    elif axis == 0 and first.ndim == 3:  # batch
        rows = [_cpu(t.codes[i])[:, : t.frames[i]] for t in batched for i in range(len(t.lengths))]
        scale_rows = (
            [_item_scales(t, i) for t in batched for i in range(len(t.lengths))] if first.scales is not None else []
        )
        lengths = [n for t in batched for n in t.lengths]
        pieces = [p for t in batched for p in t.pieces]
    else:
        raise ValueError("Tokens join along time (the last axis) or along batch (axis 0)")
    width = max(r.shape[1] for r in rows)
    codes = np.full((len(rows), rows[0].shape[0], width), PAD, dtype=np.int64)
    for i, r in enumerate(rows):
        codes[i, :, : r.shape[1]] = r
    scales = None
    if first.scales is not None:
        scales = np.stack([_pad_row(r, max(len(r) for r in scale_rows)) for r in scale_rows]).astype(np.float32)
    out_codes: Any = torch.from_numpy(codes).to(first.codes.device) if torch_out else codes
    if torch_out and scales is not None:
        scales = torch.from_numpy(scales).to(first.codes.device)
    modes = {t.precision for t in tokens}
    precision = modes.pop() if len(modes) == 1 else "mixed"
    return Tokens(
        out_codes,
        lengths,
        scales,
        first.model_id,
        first.as_list,
        pieces=pieces,
        layout=first.layout,
        precision=precision,
    )


def _item_scales(tokens: Tokens, i: int) -> np.ndarray:
    """Item ``i``'s own segment scales (without the zero padding)."""
    assert tokens.scales is not None and tokens.layout is not None
    count = sum(tokens.layout.count(p) for p in tokens.pieces[i])
    return np.asarray(_cpu(tokens.scales[i]))[:count]


def _pad_row(row: Any, width: int) -> Any:
    row = np.asarray(_cpu(row), dtype=np.float32)
    return np.concatenate([row, np.zeros(width - len(row), dtype=np.float32)])


def _stack(rows: list, like: Any) -> Any:
    table = np.stack(rows).astype(np.float32)
    return torch.from_numpy(table).to(like.device) if isinstance(like, torch.Tensor) else table


def _cpu(value: Any) -> np.ndarray:
    return value.cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def _integer(value: Any) -> int | None:
    """``value`` as an int if it is an integer (``int``, ``np.int64``, 0-d integer arrays; not bool), else None."""
    if isinstance(value, (bool, np.bool_)):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def _owned(value: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """A private copy of ``value``: read-only for NumPy, a normal (non-inference) tensor for torch."""
    if isinstance(value, torch.Tensor):
        with torch.inference_mode(False):
            return value.clone()
    copy = np.array(value)
    copy.flags.writeable = False
    return copy


def _versions(*values: Any) -> tuple[int, ...]:
    """The in-place write counters of the torch tensors among ``values``."""
    return tuple(v._version for v in values if isinstance(v, torch.Tensor))


def _tensor(value: np.ndarray | torch.Tensor) -> torch.Tensor:
    return value if isinstance(value, torch.Tensor) else torch.from_numpy(np.array(value))


def _unwrap(value: Any, convert: Any) -> Any:
    if isinstance(value, Tokens):
        return convert(value.codes)
    if isinstance(value, (list, tuple)):
        return type(value)(_unwrap(v, convert) for v in value)
    return value


def _normalise_index(index: Any, ndim: int) -> tuple | None:
    """``index`` as (items, codebooks, frames) of ints/slices (for 2-D codes: (codebooks, frames)),
    or None for indexing Tokens cannot follow (arrays, new axes)."""
    parts = list(index) if isinstance(index, tuple) else [index]
    if sum(p is Ellipsis for p in parts) > 1:
        return None
    if any(p is Ellipsis for p in parts):  # identity: ``in`` would compare index arrays elementwise
        at = next(i for i, p in enumerate(parts) if p is Ellipsis)
        parts[at : at + 1] = [slice(None)] * (ndim - len(parts) + 1)
    parts = [p if isinstance(p, slice) else _integer(p) for p in parts]
    if len(parts) > ndim or any(p is None for p in parts):
        return None
    parts += [slice(None)] * (ndim - len(parts))
    if any(isinstance(p, int) for p in parts[-2:]) or (ndim == 2 and isinstance(parts[0], int)):
        return None  # a single codebook or frame: plain codes
    return tuple(parts)
