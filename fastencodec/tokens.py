"""``Tokens``: the codes returned by ``EnCodec.encode``, with what decoding them needs."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

PAD = -1
"""Code value of the frames past an item's end in a batch of unequal lengths."""


class Tokens:
    """Integer codes ``[batch, codebooks, frames]`` plus their decoding context.

    - ``codes``: int64 NumPy array or torch tensor (the type of the encoded audio);
      frames past an item's own end hold ``PAD`` (-1).
    - ``lengths``: each item's length in samples, so ``decode`` trims to it.
    - ``scales``: ``[batch, segments]`` float32 per-segment volumes for models that
      normalise (48 kHz), else None; entries past an item's segments are 0.
    - ``model_id``: identifies the model that made them; decoding them with
      another model is refused.
    - ``precision``: the precision mode of the encoder that made them (``"exact"``,
      ``"tf32"``, ``"bf16"``); any mode decodes them.

    A ``Tokens`` acts as its ``codes`` array: ``shape``, indexing, ``numpy.asarray``,
    and torch functions (``torch.cat``) see the codes. Concatenating plain codes
    drops the context; for 24/32 kHz models the result still decodes, for the
    48 kHz model pass ``scales=`` and ``lengths=`` to ``decode``.
    """

    def __init__(
        self,
        codes: np.ndarray | torch.Tensor,
        lengths: tuple[int, ...],
        scales: np.ndarray | torch.Tensor | None,
        model_id: str,
        as_list: bool = False,
        precision: str = "exact",
    ):
        self.codes = codes
        self.lengths = tuple(lengths)
        self.scales = scales
        self.model_id = model_id
        self.as_list = as_list
        self.precision = precision

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.codes.shape)

    @property
    def ndim(self) -> int:
        return self.codes.ndim

    @property
    def dtype(self) -> Any:
        return self.codes.dtype

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, index: Any) -> Any:
        return self.codes[index]

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        codes = self.codes.cpu().numpy() if isinstance(self.codes, torch.Tensor) else self.codes
        return np.asarray(codes, dtype=dtype)

    def numpy(self) -> np.ndarray:
        """The codes as a NumPy array."""
        return self.__array__()

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        def unwrap(value: Any) -> Any:
            if isinstance(value, Tokens):
                return torch.as_tensor(value.codes)
            if isinstance(value, (list, tuple)):
                return type(value)(unwrap(v) for v in value)
            return value

        return func(*unwrap(args), **{k: unwrap(v) for k, v in (kwargs or {}).items()})

    def __repr__(self) -> str:
        kind = "torch" if isinstance(self.codes, torch.Tensor) else "numpy"
        where = f"model={self.model_id}, precision={self.precision}"
        return f"Tokens(shape={self.shape}, {kind}, lengths={self.lengths}, {where})"
