"""Turning user inputs (NumPy, torch, anything ``numpy.asarray`` takes) into tensors and back.

Audio layout rules, applied everywhere:

- 1-D ``[samples]``: one mono signal;
- 2-D ``[batch, samples]``: a batch of mono signals (pass multichannel audio as
  3-D, e.g. ``stereo[None]`` for one ``[channels, samples]`` signal);
- 3-D ``[batch, channels, samples]``;
- a list or tuple of 1-D ``[samples]`` or 2-D ``[channels, samples]`` signals of
  any lengths: a batch of unequal lengths.

Channel rule: a mono model gets the mean of the input's channels; a stereo model
gets mono input copied to both channels, and refuses more than two channels.
Output follows the input: NumPy in, NumPy out; torch in, torch out on the
input's device and floating dtype; anything else comes back as NumPy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

Array = Any  # np.ndarray | torch.Tensor | anything numpy.asarray accepts


@dataclass(frozen=True)
class OutputKind:
    """How to hand results back: as NumPy or as torch on ``device`` with ``dtype``."""

    torch: bool
    device: torch.device | None = None
    dtype: torch.dtype = torch.float32

    @classmethod
    def of(cls, value: Any) -> OutputKind:
        if isinstance(value, torch.Tensor):
            dtype = value.dtype if value.is_floating_point() else torch.float32
            return cls(True, value.device, dtype)
        return cls(False)

    def audio(self, x: torch.Tensor) -> np.ndarray | torch.Tensor:
        if self.torch:
            return x.to(self.device, self.dtype)
        return x.detach().float().cpu().numpy()

    def ints(self, x: torch.Tensor) -> np.ndarray | torch.Tensor:
        return x.to(self.device) if self.torch else x.cpu().numpy()


def as_tensor(value: Any, what: str) -> torch.Tensor:
    """A tensor view of a NumPy array, torch tensor or array-like (e.g. an MLX array)."""
    if isinstance(value, torch.Tensor):
        return value
    try:
        array = np.asarray(value)
    except Exception as exc:
        raise ValueError(f"{what} could not be converted to an array: {exc}") from exc
    if array.dtype == object:
        raise ValueError(f"{what} is not a numeric array (ragged nesting or objects)")
    if array.dtype.byteorder not in "=|" or not array.flags.writeable:
        array = array.astype(array.dtype.newbyteorder("="), copy=True)
    try:
        return torch.from_numpy(array)
    except TypeError as exc:
        raise ValueError(f"{what} has unsupported dtype {array.dtype}") from exc


def _check_signal(x: torch.Tensor, what: str) -> torch.Tensor:
    if not x.is_floating_point():
        raise ValueError(f"{what} has dtype {x.dtype}; pass floating-point audio in [-1, 1]")
    if x.shape[-1] == 0:
        raise ValueError(f"{what} is empty (0 samples)")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{what} contains NaN or Inf")
    return x


def _to_channels(x: torch.Tensor, channels: int, what: str) -> torch.Tensor:
    """``[..., C, N]`` to the model's channel count by the module's channel rule."""
    have = x.shape[-2]
    if have == channels:
        return x
    if channels == 1:
        return x.mean(dim=-2, keepdim=True)
    if have == 1:
        return x.expand(*x.shape[:-2], channels, x.shape[-1])
    raise ValueError(f"{what} has {have} channels; this model takes 1 or {channels}")


def audio_batch(
    audio: Array, lengths: Sequence[int] | None, channels: int
) -> tuple[list[torch.Tensor], OutputKind, bool]:
    """Validated signals ``[channels, samples_i]`` (views, on the input's device), the output kind,
    and whether the input was a list (so results should be a list too)."""
    if isinstance(audio, (list, tuple)) and audio and not isinstance(audio[0], (int, float)):
        if lengths is not None:
            raise ValueError("lengths= is for a padded array; a list already gives each item's length")
        items = []
        for i, item in enumerate(audio):
            x = as_tensor(item, f"audio[{i}]")
            if x.dim() == 1:
                x = x[None]
            if x.dim() != 2:
                raise ValueError(
                    f"audio[{i}] has shape {tuple(x.shape)}; list items are [samples] or [channels, samples]"
                )
            items.append(_to_channels(_check_signal(x, f"audio[{i}]"), channels, f"audio[{i}]"))
        return items, OutputKind.of(audio[0]), True
    x = as_tensor(audio, "audio")
    if x.dim() == 1:
        x = x[None, None]
    elif x.dim() == 2:
        x = x[:, None]
    elif x.dim() != 3:
        raise ValueError(
            f"audio has shape {tuple(x.shape)}; expected [samples], [batch, samples] or [batch, channels, samples]"
        )
    if x.shape[0] == 0:
        raise ValueError("audio is an empty batch")
    x = _to_channels(_check_signal(x, "audio"), channels, "audio")
    if lengths is None:
        return list(x), OutputKind.of(audio), False
    lengths = [int(n) for n in lengths]
    if len(lengths) != x.shape[0]:
        raise ValueError(f"lengths has {len(lengths)} entries for a batch of {x.shape[0]}")
    for i, n in enumerate(lengths):
        if not 0 < n <= x.shape[-1]:
            raise ValueError(f"lengths[{i}] = {n} is outside 1..{x.shape[-1]} samples")
    return [item[:, :n] for item, n in zip(x, lengths)], OutputKind.of(audio), False
