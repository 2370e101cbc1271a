"""Tile sizes of the CUDA convolution kernels, chosen per layer shape and operand kind.

A choice depends only on a layer's shape, its operands and the GPU's compute capability, never on
the batch or the length, so an item's arithmetic is the same in any batch. :data:`TUNED` holds the
tiles measured fastest on an H200 for the 24 kHz model's layers (most of them shared by the 48 kHz
model; ``benchmarks/conv_tiles.py``) and applies on GPUs of compute capability 9.x, whose shared
memory its tiles need; other shapes and GPUs get :func:`default_tiles`.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class ConvShape:
    """A convolution layer: ``transposed`` or not, channels in and out, kernel size and stride
    (samples), and the input channels of a 1x1 conv shortcut computed in the same kernel (0: none)."""

    transposed: bool
    c_in: int
    c_out: int
    kernel: int
    stride: int
    shortcut: int = 0

    @classmethod
    def of(cls, conv: nn.Conv1d | nn.ConvTranspose1d, shortcut: nn.Conv1d | None = None) -> ConvShape:
        """The shape of a torch convolution module (with a ``shortcut`` fused into its kernel)."""
        return cls(isinstance(conv, nn.ConvTranspose1d), conv.in_channels, conv.out_channels, conv.kernel_size[0],
                   conv.stride[0], 0 if shortcut is None else shortcut.in_channels)  # fmt: skip

    @classmethod
    def lstm_projection(cls, width: int) -> ConvShape:
        """An LSTM's layer-0 input projection, run as a 1x1 conv of ``width`` channels to its ``4 * width`` gates."""
        return cls(False, width, 4 * width, 1, 1)

    @property
    def narrow_outputs(self) -> int:
        """``c_out`` when fewer than :data:`NARROW` (the kernels' ``OUTS``: per-channel sums), else 0."""
        return self.c_out if self.c_out < NARROW else 0


@dataclass(frozen=True)
class ConvTiles:
    """One kernel launch's tiles: ``rows`` output rows a program (a transposed conv's rows per
    phase), ``outputs`` output channels a program (at least 16), ``inputs`` input channels a
    reduction chunk (1, or at least 16), all powers of two, and Triton's ``warps`` and pipeline
    ``stages``."""

    rows: int
    outputs: int
    inputs: int
    warps: int = 4
    stages: int = 3


NARROW = 16
"""Layers of fewer channels than this on a side skip tensor-core products (:func:`~.triton_ops._add_channels`)."""

OPERANDS = ("16-bit", "ieee", "tf32", "tf32x3")
"""Operand kinds: float16 or bfloat16 values (tensor cores), or float32 values with Triton's
``input_precision`` ``ieee`` (FMA), ``tf32`` or ``tf32x3``."""


def pow2(n: int, low: int, high: int) -> int:
    """The power of two at or above ``n``, clamped to ``low .. high``."""
    return max(low, min(high, 1 << (n - 1).bit_length()))


def default_tiles(shape: ConvShape) -> ConvTiles:
    """64 rows, 16 to 64 output and 16 to 32 input channels; a layer of fewer than 16 input
    channels takes one a chunk (outer products) and 256 rows, one of fewer than 16 output channels
    256 rows (either skips tensor cores: :func:`~.triton_ops._add_channels`)."""
    outputs = pow2(shape.c_out, NARROW, 64)
    if shape.c_in < NARROW:
        return ConvTiles(256, outputs, 1)
    return ConvTiles(256 if shape.narrow_outputs else 64, outputs, pow2(shape.c_in, NARROW, 32))


TUNED: dict[tuple[str, ConvShape], ConvTiles] = {
    ("16-bit", ConvShape(False, 1, 32, 7, 1)): ConvTiles(128, 32, 1, 4, 3),
    ("16-bit", ConvShape(False, 32, 1, 7, 1)): ConvTiles(128, 16, 32, 4, 3),
    ("16-bit", ConvShape(False, 16, 32, 1, 1, 32)): ConvTiles(128, 32, 16, 4, 3),
    ("16-bit", ConvShape(False, 32, 64, 4, 2)): ConvTiles(256, 64, 32, 8, 3),
    ("16-bit", ConvShape(False, 64, 128, 1, 1, 128)): ConvTiles(64, 128, 64, 4, 3),
    ("16-bit", ConvShape(False, 128, 256, 1, 1, 256)): ConvTiles(128, 64, 64, 4, 3),
    ("16-bit", ConvShape(True, 64, 32, 4, 2)): ConvTiles(128, 32, 32, 4, 3),
    ("16-bit", ConvShape(False, 32, 32, 1, 1)): ConvTiles(128, 32, 32, 4, 3),
    ("16-bit", ConvShape(False, 64, 64, 1, 1)): ConvTiles(128, 64, 32, 4, 3),
    ("16-bit", ConvShape(False, 32, 64, 1, 1)): ConvTiles(128, 64, 32, 4, 3),
    ("16-bit", ConvShape(False, 64, 128, 8, 4)): ConvTiles(64, 128, 32, 4, 3),
    ("16-bit", ConvShape(False, 128, 128, 1, 1)): ConvTiles(64, 128, 32, 4, 3),
    ("16-bit", ConvShape(False, 64, 128, 1, 1)): ConvTiles(64, 128, 32, 4, 3),
    ("16-bit", ConvShape(False, 128, 256, 10, 5)): ConvTiles(64, 128, 32, 4, 3),
    ("16-bit", ConvShape(False, 256, 256, 1, 1)): ConvTiles(128, 128, 64, 8, 3),
    ("16-bit", ConvShape(False, 256, 128, 3, 1)): ConvTiles(128, 128, 32, 8, 3),
    ("16-bit", ConvShape(False, 128, 256, 1, 1)): ConvTiles(64, 128, 32, 4, 3),
    ("16-bit", ConvShape(False, 256, 512, 16, 8)): ConvTiles(64, 128, 32, 4, 3),
    ("16-bit", ConvShape(False, 512, 2048, 1, 1)): ConvTiles(128, 128, 64, 8, 3),
    ("16-bit", ConvShape(False, 512, 128, 7, 1)): ConvTiles(64, 128, 32, 4, 3),
    ("16-bit", ConvShape(False, 128, 512, 7, 1)): ConvTiles(256, 128, 32, 8, 3),
    ("16-bit", ConvShape(True, 512, 256, 16, 8)): ConvTiles(128, 128, 32, 8, 3),
    ("16-bit", ConvShape(True, 256, 128, 10, 5)): ConvTiles(128, 128, 32, 8, 3),
    ("ieee", ConvShape(False, 32, 1, 7, 1)): ConvTiles(128, 16, 32, 4, 3),
    ("ieee", ConvShape(False, 16, 32, 1, 1, 32)): ConvTiles(128, 32, 16, 4, 3),
    ("ieee", ConvShape(False, 32, 64, 4, 2)): ConvTiles(128, 64, 32, 8, 3),
    ("ieee", ConvShape(False, 32, 64, 1, 1, 64)): ConvTiles(128, 64, 32, 4, 3),
    ("ieee", ConvShape(False, 64, 128, 1, 1, 128)): ConvTiles(64, 128, 32, 4, 3),
    ("ieee", ConvShape(False, 128, 256, 1, 1, 256)): ConvTiles(64, 128, 32, 4, 3),
    ("ieee", ConvShape(False, 64, 32, 3, 1)): ConvTiles(256, 32, 32, 8, 3),
    ("ieee", ConvShape(False, 64, 128, 8, 4)): ConvTiles(32, 64, 32, 4, 3),
    ("ieee", ConvShape(False, 128, 64, 3, 1)): ConvTiles(128, 64, 32, 8, 3),
    ("ieee", ConvShape(False, 128, 256, 10, 5)): ConvTiles(32, 64, 32, 4, 3),
    ("ieee", ConvShape(False, 256, 128, 3, 1)): ConvTiles(128, 128, 32, 8, 3),
    ("ieee", ConvShape(False, 256, 512, 16, 8)): ConvTiles(64, 128, 32, 4, 3),
    ("ieee", ConvShape(False, 512, 128, 7, 1)): ConvTiles(64, 128, 32, 4, 3),
    ("ieee", ConvShape(False, 128, 512, 7, 1)): ConvTiles(32, 64, 32, 4, 3),
    ("ieee", ConvShape(True, 512, 256, 16, 8)): ConvTiles(128, 128, 32, 8, 3),
    ("ieee", ConvShape(True, 256, 128, 10, 5)): ConvTiles(128, 128, 32, 8, 3),
    ("ieee", ConvShape(True, 64, 32, 4, 2)): ConvTiles(256, 32, 32, 8, 3),
}  # fmt: skip
"""Tiles per (operand kind, layer shape) measured fastest on an H200 at 64 x 10 s, where at least 3%
faster than :func:`default_tiles` (``benchmarks/conv_tiles.py``, 2026-12-02; times in BENCHMARKS.md; the
shapes with a fused shortcut and the layers reading stored-activated inputs swept again at 08:03 UTC). Some
need more shared memory than GPUs before compute capability 9.0 have (up to 104 KiB a program).
``16-bit`` serves ``fp16`` and ``bf16``; ``tf32`` and ``tf32x3`` layers get the defaults."""


TUNED_ON = (9, 0)
"""Compute capability of the GPU :data:`TUNED` was measured on (an H200); it applies to its major version."""


def conv_tiles(shape: ConvShape, operands: str, capability: tuple[int, int]) -> ConvTiles:
    """The tiles of ``shape`` with ``operands`` (a name in :data:`OPERANDS`) on a GPU of compute
    ``capability`` (major, minor)."""
    if operands not in OPERANDS:
        raise ValueError(f"unknown operand kind {operands!r}; one of {', '.join(OPERANDS)}")
    tuned = TUNED.get((operands, shape)) if capability[0] == TUNED_ON[0] else None
    return tuned or default_tiles(shape)
