"""The ``"lm"`` symbol coder: Meta's ``encodec`` entropy coding (``.ecdc`` files with ``"lm": true``).

Per segment the LM starts afresh; the probabilities of frame t come from the LM stepped on
frame t-1 (an all-"missing" input for frame 0), are quantized to 24-bit CDFs with Meta's
``build_stable_quantized_cdf`` and drive Meta's arithmetic coder, codebook by codebook. The
segment ends with the coder's flush (zero-padded to a byte); there is no length field.
Files decode only where the LM's float32 results are the same bits as where they were
coded (Meta's format has that limitation; the portable ``"lmp1"`` mode does not): a file coded
with the LM on a CUDA GPU (:class:`~fastencodec.entropy.graphed_lm.GraphedMetaLM`, Meta's
bits on that GPU) decodes on that kind of GPU, not on a CPU, and the reverse.
"""

from __future__ import annotations

import os
from typing import BinaryIO

import numpy as np
import torch

from .arith import ArithmeticDecoder, ArithmeticEncoder
from .graphed_lm import GraphedMetaLM
from .lm import MetaLM, lm_config, load_lm_state


class MetaLMCoder:
    """Meta-compatible LM entropy coder for one model (24 or 48 kHz).

    Holds one LM whose state belongs to the segment being coded: code segments one after
    another (starting a segment ends the previous one), one coder per thread.

    Args:
        lm: the model's LM (see :meth:`for_model`): a :class:`~fastencodec.entropy.lm.MetaLM`
            (CPU) or a :class:`~fastencodec.entropy.graphed_lm.GraphedMetaLM` (CUDA).
    """

    tag = "lm"

    def __init__(self, lm: MetaLM | GraphedMetaLM) -> None:
        self.lm = lm
        self._active: object | None = None

    @property
    def device_type(self) -> str:
        """The kind of device the LM runs on (``"cpu"``, ``"cuda"``): files decode only on the kind they were
        coded on."""
        return getattr(self.lm, "device", torch.device("cpu")).type

    @classmethod
    def for_model(
        cls, model_name: str, lm_path: str | os.PathLike | None = None, device: torch.device | str | None = None
    ) -> MetaLMCoder:
        """Load the LM of ``model_name`` (torch hub's cache, Meta's URL, or ``lm_path``) to run on
        ``device`` (default: the CPU, :class:`~fastencodec.entropy.lm.MetaLM`; elsewhere Meta's own
        frame operations, :class:`~fastencodec.entropy.graphed_lm.GraphedMetaLM`, captured as CUDA
        graphs on a CUDA GPU: Meta's bits there, as Meta's package computes them with its model there)."""
        state = load_lm_state(model_name, lm_path)
        config = lm_config(model_name, state)
        if device is None or torch.device(device).type == "cpu":
            return cls(MetaLM(state, config))
        return cls(GraphedMetaLM(state, config, device))

    def encoder(self, out: BinaryIO, num_codebooks: int) -> _Encoder:
        """An encoder for one segment of ``num_codebooks`` codebooks, writing to ``out``."""
        return _Encoder(self, out, num_codebooks)

    def decoder(self, src: BinaryIO, num_codebooks: int, frames: int) -> _Decoder:
        """A decoder for one segment of ``frames`` frames read from ``src``."""
        return _Decoder(self, src, num_codebooks, frames)

    def _begin(self, owner: object, num_codebooks: int) -> None:
        self.lm.reset(num_codebooks)
        self._active = owner

    def _check(self, owner: object) -> None:
        if self._active is not owner:
            raise RuntimeError("another segment was started on this coder; segments are coded one at a time")


class _Encoder:
    """Codes a segment as its frames arrive: with the LM's pass over each pushed block where this
    machine allows it (:meth:`MetaLM.segment_pass`; always on a GPU), else frame by frame."""

    _BLOCK = 256  # frames per pass (bounds the CDFs held at once)

    def __init__(self, coder: MetaLMCoder, out: BinaryIO, num_codebooks: int) -> None:
        coder._begin(self, num_codebooks)
        self._coder = coder
        self._k = num_codebooks
        self._ac = ArithmeticEncoder(out)
        self._previous: np.ndarray | None = None
        self._card = coder.lm.config.card
        self._pass = coder.lm.segment_pass(num_codebooks)

    def push(self, codes: np.ndarray) -> None:
        self._coder._check(self)
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.shape[0] != self._k:
            raise ValueError(f"codes must have shape [{self._k}, frames], got {codes.shape}")
        if codes.size and (codes.min() < 0 or codes.max() >= self._card):
            raise ValueError(f"codes must lie in [0, {self._card})")
        codes = codes.astype(np.int64)
        if self._pass is not None:
            for start in range(0, codes.shape[1], self._BLOCK):
                block = codes[:, start : start + self._BLOCK]
                self._ac.push(block.T.ravel(), self._pass.cdfs(block))
            return
        for t in range(codes.shape[1]):
            cdfs = self._coder.lm.step_cdfs(self._previous)
            self._ac.push(codes[:, t], cdfs)
            self._previous = codes[:, t]

    def finish(self) -> None:
        self._coder._check(self)
        self._ac.finish()
        self._coder._active = None


class _Decoder:
    def __init__(self, coder: MetaLMCoder, src: BinaryIO, num_codebooks: int, frames: int) -> None:
        coder._begin(self, num_codebooks)
        self._coder = coder
        self._k = num_codebooks
        self._left = frames
        self._ac = ArithmeticDecoder(src)
        self._previous: np.ndarray | None = None

    def read(self, frames: int) -> np.ndarray:
        self._coder._check(self)
        if not 0 <= frames <= self._left:
            raise ValueError(f"asked for {frames} frames, {self._left} remain in the segment")
        out = np.empty((self._k, frames), dtype=np.int64)
        for t in range(frames):
            symbols = self._ac.pull(self._coder.lm.step_cdfs(self._previous))
            out[:, t] = symbols
            self._previous = symbols
        self._left -= frames
        if self._left == 0:
            self._ac.close()
            self._coder._active = None
        return out
