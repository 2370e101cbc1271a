"""Turning user inputs (NumPy, torch, anything ``numpy.asarray`` takes) into tensors and back.

Audio layout rules, applied everywhere:

- 1-D ``[samples]``: one mono signal;
- 2-D: for a mono model ``[batch, samples]``, a batch of mono signals. For a multichannel
  model a 2-D array with more than one row is ambiguous (one ``[channels, samples]`` signal, as
  ``fastencodec.io.load_audio`` returns, or a batch of mono signals) and is refused unless
  ``layout="channels"`` or ``layout="batch"`` says which; ``[1, samples]`` reads the same
  either way;
- 3-D ``[batch, channels, samples]``;
- a list or tuple of 1-D ``[samples]`` or 2-D ``[channels, samples]`` signals of
  any lengths: a batch of unequal lengths.

Channel rule (``to_channels``): equal counts are kept; mono is copied to every channel the
model has; any other count is averaged to mono first (a mono model gets the mean of the
channels; the stereo model gets the mean of three or more channels in both of its channels).
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
    """How to hand results back: as NumPy or as torch on ``device`` with ``dtype``.

    Attributes:
        torch: whether results are torch tensors.
        device: their device (torch only).
        dtype: the floating dtype of audio results (torch only; NumPy audio is float32).
    """

    torch: bool
    device: torch.device | None = None
    dtype: torch.dtype = torch.float32

    @classmethod
    def of(cls, value: Any) -> OutputKind:
        """The kind that follows an input: torch on its device (its dtype if floating, else float32), or NumPy."""
        if isinstance(value, torch.Tensor):
            dtype = value.dtype if value.is_floating_point() else torch.float32
            return cls(True, value.device, dtype)
        return cls(False)

    def audio(self, x: torch.Tensor) -> np.ndarray | torch.Tensor:
        """Float results (audio, embeddings) of any shape: torch with ``device``/``dtype``, or float32 NumPy."""
        if self.torch:
            return x.to(self.device, self.dtype)
        return x.detach().float().cpu().numpy()

    def ints(self, x: torch.Tensor) -> np.ndarray | torch.Tensor:
        """Integer results (codes) of any shape, their dtype kept: torch on ``device``, or NumPy."""
        return x.to(self.device) if self.torch else x.cpu().numpy()


def as_tensor(value: Any, what: str) -> torch.Tensor:
    """A tensor view of a NumPy array, torch tensor or array-like (e.g. an MLX array).

    Args:
        value: the input; a torch tensor is returned as it is.
        what: how messages name it.

    Returns:
        A tensor sharing memory with ``value`` where possible (a copy for read-only or
        byte-swapped arrays).

    Raises:
        ValueError: ``value`` is not a numeric array (ragged, objects, unsupported dtype).
    """
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


def bounded_int(value: object, what: str, most: int | None = None, unit: str = "") -> int:
    """``value`` if it is an integer (``int``, not bool) from 1 to ``most``.

    Args:
        value: the number to check (a sample rate, a channel count, ...).
        what: how messages name it, e.g. ``"sample rate"``.
        most: the largest value accepted, or None for no bound.
        unit: the unit messages give the value in, e.g. ``"Hz"`` (none by default).

    Returns:
        ``value``.

    Raises:
        ValueError: ``value`` is not a positive ``int``, or is above ``most``.
    """
    if type(value) is not int or value <= 0:
        raise ValueError(f"{what} must be a positive integer{f' ({unit})' if unit else ''}, got {value!r}")
    if most is not None and value > most:
        suffix = f" {unit}" if unit else ""
        raise ValueError(f"{what} {value}{suffix} is above {most}{suffix}")
    return value


FINITE_CHECK_SAMPLES = 1 << 20
"""Samples per step of the NaN/Inf check (bounded scratch memory for long signals)."""


def check_signal(x: torch.Tensor, what: str) -> torch.Tensor:
    """Refuse non-float, empty or non-finite audio.

    Args:
        x: audio ``[..., samples]`` (checked for NaN/Inf ``FINITE_CHECK_SAMPLES`` samples at a time).
        what: how messages name it.

    Returns:
        ``x``.

    Raises:
        ValueError: integer dtype, 0 samples, 0 channels, or NaN/Inf samples.
    """
    if not x.is_floating_point():
        raise ValueError(f"{what} has dtype {x.dtype}; pass floating-point audio in [-1, 1]")
    if x.shape[-1] == 0:
        raise ValueError(f"{what} is empty (0 samples)")
    if x.dim() >= 2 and x.shape[-2] == 0:
        raise ValueError(f"{what} has 0 channels (shape {tuple(x.shape)})")
    for start in range(0, x.shape[-1], FINITE_CHECK_SAMPLES):
        if not bool(torch.isfinite(x[..., start : start + FINITE_CHECK_SAMPLES]).all()):
            raise ValueError(f"{what} contains NaN or Inf")
    return x


def to_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Audio to ``channels`` channels by the channel rule.

    Equal counts are returned as they are; mono is copied to every channel; anything else
    is averaged to mono first (stereo to mono is the mean; 5.1 to stereo is that mono mix
    in both channels).

    Args:
        x: audio ``[..., C, samples]``.
        channels: the channel count wanted.

    Returns:
        Audio ``[..., channels, samples]``: ``x`` itself, or an expanded view of ``x`` or of its mean.
    """
    have = x.shape[-2]
    if have == channels:
        return x
    mono = x if have == 1 else x.mean(dim=-2, keepdim=True)
    return mono.expand(*x.shape[:-2], channels, x.shape[-1])


LAYOUTS = ("batch", "channels")
"""Readings of 2-D audio: ``[batch, samples]`` or one ``[channels, samples]`` signal."""


def audio_layout(x: torch.Tensor, what: str, channels: int = 1, layout: str | None = None) -> torch.Tensor:
    """Apply the layout rule: ``[samples]``, ``[batch, samples]`` or ``[batch, channels, samples]``
    to ``[batch, channels, samples]``.

    Args:
        x: the audio.
        what: how messages name it.
        channels: the model's channel count.
        layout: the reading of 2-D audio (``LAYOUTS``), or None for the rule's default.

    Returns:
        A ``[batch, channels, samples]`` view of ``x`` (its channels not yet conformed).

    Raises:
        ValueError: another rank, an unknown layout, or 2-D audio a multichannel model cannot read
            without ``layout``.
    """
    if layout not in (None, *LAYOUTS):
        raise ValueError(f"layout must be one of {LAYOUTS} or None, got {layout!r}")
    if x.dim() == 1:
        return x[None, None]
    if x.dim() == 2:
        if layout == "channels":
            return x[None]
        if layout is None and channels > 1 and x.shape[0] > 1:
            raise ValueError(
                f"{what} has shape {tuple(x.shape)}: for a {channels}-channel model that is either one "
                f"[channels, samples] signal or a batch of {x.shape[0]} mono [batch, samples] signals; pass "
                "layout='channels' or layout='batch' (or a 3-D [batch, channels, samples] array)"
            )
        return x[:, None]
    if x.dim() != 3:
        raise ValueError(
            f"{what} has shape {tuple(x.shape)}; expected [samples], [batch, samples] or [batch, channels, samples]"
        )
    return x


def audio_batch(
    audio: Array, lengths: Sequence[int] | None, channels: int, layout: str | None = None
) -> tuple[list[torch.Tensor], OutputKind, bool]:
    """Split the audio ``EnCodec.encode`` takes into validated signals.

    Args:
        audio: a padded array (any layout of :func:`audio_layout`) or a list of ``[samples]`` /
            ``[channels, samples]`` signals.
        lengths: samples per item of a padded array, or None (every item is whole).
        channels: the model's channel count.
        layout: the reading of 2-D audio (see :func:`audio_layout`).

    Returns:
        The signals ``[channels, samples_i]`` (views, on the input's device, in the model's
        channels), the output kind, and whether the input was a list (so results should be a
        list too).

    Raises:
        ValueError: bad layout, dtype or values, an empty batch, or lengths that do not fit.
    """
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
            items.append(to_channels(check_signal(x, f"audio[{i}]"), channels))
        return items, OutputKind.of(audio[0]), True
    x = audio_layout(as_tensor(audio, "audio"), "audio", channels, layout)
    if x.shape[0] == 0:
        raise ValueError("audio is an empty batch")
    x = to_channels(check_signal(x, "audio"), channels)
    if lengths is None:
        return list(x), OutputKind.of(audio), False
    lengths = [int(n) for n in lengths]
    if len(lengths) != x.shape[0]:
        raise ValueError(f"lengths has {len(lengths)} entries for a batch of {x.shape[0]}")
    for i, n in enumerate(lengths):
        if not 0 < n <= x.shape[-1]:
            raise ValueError(f"lengths[{i}] = {n} is outside 1..{x.shape[-1]} samples")
    return [item[:, :n] for item, n in zip(x, lengths)], OutputKind.of(audio), False
