"""The portable ``"lmp1"`` symbol coder: Meta's LM in exact integer arithmetic, decodable anywhere.

Everything that feeds the CDFs is computed exactly, so every platform gets the same bits:

- Meta's LM weights are rounded once to fixed point (12 fractional bits; matrices as int16,
  biases with 24 fractional bits); activations are integers with 12 fractional bits,
  clamped to +-256. Dot products are sums of integer products below 2**53 (int64 sums, int32
  lanes over int16 limbs (:mod:`.pairdot`), or float64 lanes: exact in any reduction order, with
  or without FMA).
- Layer norms use an integer square root; GELU (tanh form), the position embedding
  (a 65,536-step cosine table indexed by the 64-bit fixed-point turn count) and the
  softmaxes (exp of the distance to the maximum) use tables built with Python integers and
  ``decimal`` (correctly rounded), never the platform's libm.
- Output probabilities become integer CDFs summing to exactly ``2 ** 24``.

Segment layout (after the container's scale): ``fingerprint: 4 bytes | payload size:
uint32 | CRC-32 of the payload: uint32 | payload`` (big-endian); the payload is the
arithmetic-coded frames. The fingerprint identifies the quantized LM weights; a file coded
with other weights is refused. A segment whose payload fails its CRC raises
``DamagedSegmentError`` with the stream positioned after it, so the reader skips it and
carries on (the segment decodes as silence, with a warning).
"""

from __future__ import annotations

import hashlib
import io
import struct
import threading
import zlib
from typing import BinaryIO

import numpy as np
import torch

from fastencodec.formats.ecdc import DamagedSegmentError, EcdcError

from .arith import ArithmeticEncoder, bytes_consumed, decode_payload, decoder_state
from .cdf import TOTAL_RANGE_BITS, _integer_cdfs
from .fixed import CLAMP, FRAC, fixed, tables
from .lm import LMConfig, lm_config, load_lm_state
from .portable_kernel import KernelState, decode_frames, frame_cdfs, kernel_weights
from .portable_kernel import step as kernel_step
from .portable_pass import CausalPass, PassWeights

TAG = "lmp1"
_SEGMENT_HEADER = struct.Struct("!4sII")


class PortableLM:
    """Meta's LM architecture in exact integer arithmetic (weights rounded from Meta's).

    Args:
        state: Meta's LM state dict.
        config: the model's shape.
    """

    def __init__(self, state: dict, config: LMConfig) -> None:
        self.config = config
        n_layers, dim = config.num_layers, config.dim
        t = {key: value.double().numpy() for key, value in state.items()}
        p = "transformer.layers.{}."
        w16 = (1 << 15) - 1
        self.emb = np.stack([fixed(t[f"emb.{k}.weight"], FRAC, CLAMP, np.int64) for k in range(config.num_codebooks)])
        self.norm_in = np.stack(
            [fixed(t["transformer.norm_in." + n], FRAC, CLAMP, np.int64) for n in ("weight", "bias")]
        )

        def layer_stack(name: str, bits: int, limit: int, dtype) -> np.ndarray:
            return np.stack([fixed(t[p.format(i) + name], bits, limit, dtype) for i in range(n_layers)])

        big = 1 << 50
        self.w_in = layer_stack("self_attn.in_proj_weight", FRAC, w16, np.int16)
        self.b_in = layer_stack("self_attn.in_proj_bias", 2 * FRAC, big, np.int64)
        self.w_out = layer_stack("self_attn.out_proj.weight", FRAC, w16, np.int16)
        self.b_out = layer_stack("self_attn.out_proj.bias", 2 * FRAC, big, np.int64)
        self.w1 = layer_stack("linear1.weight", FRAC, w16, np.int16)
        self.b1 = layer_stack("linear1.bias", 2 * FRAC, big, np.int64)
        self.w2 = layer_stack("linear2.weight", FRAC, w16, np.int16)
        self.b2 = layer_stack("linear2.bias", 2 * FRAC, big, np.int64)
        self.norms = np.stack([
            np.stack([fixed(t[p.format(i) + f"norm{j}.{n}"], FRAC, CLAMP, np.int64) for n in ("weight", "bias")])
            for i in range(n_layers) for j in (1, 2)
        ]).reshape(n_layers, 2, 2, dim)
        self.w_heads = np.stack([fixed(t[f"linears.{k}.weight"], FRAC, w16, np.int16)
                                 for k in range(config.num_codebooks)])
        self.b_heads = np.stack([fixed(t[f"linears.{k}.bias"], 2 * FRAC, big, np.int64)
                                 for k in range(config.num_codebooks)])
        self.tables = tables()
        self.kernel = kernel_weights(self)
        digest = hashlib.sha256(TAG.encode())
        for array in (self.emb, self.norm_in, self.w_in, self.b_in, self.w_out, self.b_out, self.w1, self.b1,
                      self.w2, self.b2, self.norms, self.w_heads, self.b_heads):
            digest.update(np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes())
        self.fingerprint = digest.digest()[:4]

    def weights_for(self, frames_codes: np.ndarray) -> np.ndarray:
        """CDF weights for every frame of a segment, given its codes (teacher forcing).

        Args:
            frames_codes: int64 codes ``[K, n]``.

        Returns:
            int64 weights ``[n, K, card]`` (frame t from frames before t).
        """
        stream = _Stream(self, frames_codes.shape[0])
        out = np.empty((frames_codes.shape[1], frames_codes.shape[0], self.config.card), dtype=np.int64)
        previous = None
        for t in range(frames_codes.shape[1]):
            out[t] = stream.step(previous)
            previous = frames_codes[:, t]
        return out


class _Stream:
    """The per-segment state of a :class:`PortableLM` stepped by the CPU kernel (:mod:`.portable_kernel`)."""

    def __init__(self, lm: PortableLM, num_codebooks: int, frames: int | None = None) -> None:
        cfg = lm.config
        if not 0 < num_codebooks <= cfg.num_codebooks:
            raise ValueError(f"the LM codes 1 to {cfg.num_codebooks} codebooks, got {num_codebooks}")
        self.lm = lm
        self.k = num_codebooks
        self.state = KernelState(cfg, num_codebooks, frames)

    def step(self, previous: np.ndarray | None) -> np.ndarray:
        index = np.zeros(self.k, dtype=np.int64) if previous is None else np.asarray(previous, np.int64) + 1
        return kernel_step(self.lm.kernel, self.state, index)

    def cdfs(self, index: np.ndarray) -> np.ndarray:
        """Integer CDFs ``[n * K, card]`` of the next frames from their LM inputs ``index`` ``[K, n]``."""
        return frame_cdfs(self.lm.kernel, self.state, index)

    def decode(self, last: np.ndarray, ac_state: np.ndarray, data: np.ndarray, out: np.ndarray) -> None:
        """Decode ``out.shape[1]`` frames from ``data`` (a whole payload) after frame ``last`` (-1: none)."""
        decode_frames(self.lm.kernel, self.state, last, ac_state, data, out)


class PortableCoder:
    """The ``"lmp1"`` symbol coder (portable; Meta's tool rejects files that use it).

    On the CPU a compiled kernel steps the LM frame by frame, encoding and decoding; on other
    devices encoding runs it over blocks of frames (:mod:`.portable_pass`) and decoding runs that
    pass with one-frame blocks. Every device gives the same bits.

    Args:
        lm: the integer LM (see :meth:`for_model`).
        device: where the encoder's (and, if not the CPU, the decoder's) LM runs.
    """

    tag = TAG

    def __init__(self, lm: PortableLM, device: torch.device | str = "cpu") -> None:
        self.lm = lm
        self.device = torch.device(device)
        self._weights: PassWeights | None = None
        self._lock = threading.Lock()

    @classmethod
    def for_model(cls, model_name: str, lm_path=None, device: torch.device | str = "cpu") -> PortableCoder:
        """Build from the LM weights of ``model_name`` (torch hub's cache, Meta's URL, or ``lm_path``),
        its LM on ``device``."""
        state = load_lm_state(model_name, lm_path)
        return cls(PortableLM(state, lm_config(model_name, state)), device)

    def pass_weights(self) -> PassWeights:
        """The LM's tensors on the coder's device (built once)."""
        with self._lock:
            if self._weights is None:
                self._weights = PassWeights(self.lm, self.device)
            return self._weights

    def encoder(self, out: BinaryIO, num_codebooks: int) -> _Encoder:
        """An encoder for one segment of ``num_codebooks`` codebooks (written at :meth:`finish`)."""
        return _Encoder(self, out, num_codebooks)

    def decoder(self, src: BinaryIO, num_codebooks: int, frames: int) -> _Decoder:
        """A decoder for one segment of ``frames`` frames."""
        return _Decoder(self, src, num_codebooks, frames)

    def _stepper(self, num_codebooks: int, frames: int) -> _Stream | _PassStep:
        if self.device.type == "cpu":
            return _Stream(self.lm, num_codebooks, frames)
        return _PassStep(CausalPass(self.pass_weights(), num_codebooks))


def _cdfs(weights: np.ndarray) -> np.ndarray:
    out = np.empty(weights.shape, dtype=np.int64)
    _integer_cdfs(weights, TOTAL_RANGE_BITS, out)
    return out


class _Encoder:
    """Codes a segment as its frames arrive: on the CPU the kernel steps the LM frame by frame, as the
    decoder does; elsewhere the LM runs over each pushed block in one pass (:class:`.portable_pass.CausalPass`)."""

    _BLOCK = 128  # frames at a time (bounds the CDFs to 128 x K x card int64, CausalPass's scores too)

    def __init__(self, coder: PortableCoder, out: BinaryIO, num_codebooks: int) -> None:
        if coder.device.type == "cpu":
            self._pass: _Stream | CausalPass = _Stream(coder.lm, num_codebooks)
        else:
            self._pass = CausalPass(coder.pass_weights(), num_codebooks)
        self._lm = coder.lm
        self._out = out
        self._payload = io.BytesIO()
        self._ac = ArithmeticEncoder(self._payload)
        self._previous = np.full(num_codebooks, -1, dtype=np.int64)  # LM input 0: no previous frame
        self._k = num_codebooks

    def push(self, codes: np.ndarray) -> None:
        codes = np.asarray(codes)
        card = self._lm.config.card
        if codes.ndim != 2 or codes.shape[0] != self._k:
            raise ValueError(f"codes must have shape [{self._k}, frames], got {codes.shape}")
        if codes.size and (codes.min() < 0 or codes.max() >= card):
            raise ValueError(f"codes must lie in [0, {card})")
        codes = codes.astype(np.int64)
        for start in range(0, codes.shape[1], self._BLOCK):
            block = codes[:, start : start + self._BLOCK]
            index = np.concatenate([self._previous[:, None], block[:, :-1]], axis=1) + 1
            if isinstance(self._pass, _Stream):
                cdfs = self._pass.cdfs(index)
            else:
                cdfs = _cdfs(self._pass.weights_for(torch.from_numpy(index)).cpu().numpy().reshape(-1, card))
            self._ac.push(block.T.ravel(), cdfs)
            self._previous = block[:, -1].copy()

    def finish(self) -> None:
        self._ac.finish()
        payload = self._payload.getvalue()
        self._out.write(_SEGMENT_HEADER.pack(self._lm.fingerprint, len(payload), zlib.crc32(payload)))
        self._out.write(payload)


class _PassStep:
    """The block pass stepped one frame at a time (decoding on a non-CPU device)."""

    def __init__(self, causal: CausalPass) -> None:
        self._pass = causal

    def decode(self, last: np.ndarray, ac_state: np.ndarray, data: np.ndarray, out: np.ndarray) -> None:
        """Decode ``out.shape[1]`` frames from ``data`` (a whole payload) after frame ``last`` (-1: none)."""
        for t in range(out.shape[1]):
            weights = self._pass.weights_for(torch.from_numpy(last[:, None] + 1))[0].cpu().numpy()
            last[:] = out[:, t] = decode_payload(_cdfs(weights), ac_state, data)


class _Decoder:
    def __init__(self, coder: PortableCoder, src: BinaryIO, num_codebooks: int, frames: int) -> None:
        lm = coder.lm
        head = src.read(_SEGMENT_HEADER.size)
        if len(head) != _SEGMENT_HEADER.size:
            raise EcdcError("truncated stream: portable LM segment header")
        fingerprint, size, crc = _SEGMENT_HEADER.unpack(head)
        if size > frames * num_codebooks * 4 + 64:
            raise EcdcError(f"portable LM segment claims {size} bytes for {frames} frames: corrupt")
        payload = src.read(size)
        if len(payload) != size:
            raise EcdcError(f"truncated stream: portable LM segment has {len(payload)} of {size} bytes")
        if fingerprint != lm.fingerprint:
            raise EcdcError(
                f"segment coded with other LM weights (fingerprint {fingerprint.hex()}, loaded {lm.fingerprint.hex()})"
            )
        if zlib.crc32(payload) != crc:
            raise DamagedSegmentError("portable LM segment fails its CRC (the stream continues at the next segment)")
        self._stream = coder._stepper(num_codebooks, frames)
        self._data = np.frombuffer(payload, dtype=np.uint8)
        self._ac_state = decoder_state()
        self._last = np.full(num_codebooks, -1, dtype=np.int64)  # no frame decoded yet: LM input 0
        self._left = frames
        self._k = num_codebooks

    def read(self, frames: int) -> np.ndarray:
        if not 0 <= frames <= self._left:
            raise ValueError(f"asked for {frames} frames, {self._left} remain in the segment")
        out = np.empty((self._k, frames), dtype=np.int64)
        self._stream.decode(self._last, self._ac_state, self._data, out)
        self._left -= frames
        if self._left == 0 and bytes_consumed(self._ac_state) != self._data.size:
            raise EcdcError("portable LM segment has trailing bytes: corrupt")
        return out
